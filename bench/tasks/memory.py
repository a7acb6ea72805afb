"""Activation memory and step time against depth, no training (RevNet paper, Section 5).

Cell fields: model (a constructor name) and its keyword arguments (e.g. units, block). Every
cell is measured at the same batch and image size, so the rows differ by architecture alone.
A model family whose module defines `without_reversible_blocks(model)` also gets its floor: the
bytes its non-reversible parts store, which no reversible trick can remove.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.resnet import depth

from ..memory import count_saved_bytes
from . import CellResult, Context, build_model, count_parameters
from .classify import MIB, logits_of, probe


@dataclass(frozen=True)
class Settings:
    batch_size: int = 32
    image_size: int = 32
    num_classes: int = 10
    timing_steps: int = 3


def saved_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return count_saved_bytes(
        lambda: F.cross_entropy(logits_of(model(x)), y), exclude=model.parameters()
    )[0]


def run(cell: dict, s: Settings, ctx: Context) -> CellResult:
    name = cell["model"]
    kwargs = {k: v for k, v in cell.items() if k != "model"}
    shape = (3, s.image_size, s.image_size)
    torch.manual_seed(ctx.seed)
    model = build_model(name, num_classes=s.num_classes, **kwargs).to(ctx.device).train()
    x = torch.randn(s.batch_size, *shape, device=ctx.device)
    y = torch.randint(0, s.num_classes, (s.batch_size,), device=ctx.device)
    metrics = {
        "depth": depth(model),
        "params": count_parameters(model) / 1e6,
        "saved_mib": saved_bytes(model, x, y) / MIB,
    }
    strip = getattr(
        importlib.import_module(type(model).__module__), "without_reversible_blocks", None
    )
    if strip is not None:
        metrics["floor_mib"] = saved_bytes(strip(model), x, y) / MIB
        metrics["above_floor"] = metrics["saved_mib"] / metrics["floor_mib"]
    memory = probe(name, s.num_classes, s.batch_size, shape, ctx.device, s.timing_steps, kwargs)
    metrics["peak_mib"] = (memory["cuda_peak_bytes"] or memory["rss_peak_bytes"]) / MIB
    metrics["step_s"] = memory["step_s"]
    return CellResult(metrics=metrics, memory=memory, data={"source": "random inputs"})
