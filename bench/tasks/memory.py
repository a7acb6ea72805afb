"""Activation memory and step time against depth, no training (RevNet paper, Section 5).

Cell fields: model (a constructor name) and its keyword arguments (e.g. units, block). Every
cell is measured at the same batch and image size, so the rows differ by architecture alone.
A model that declares `reversible_floor` (bench/contracts.py) also gets its floor: the bytes its
non-reversible parts store, which no reversible trick can remove.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import models
from models.resnet import depth

from ..activations import count_saved_bytes
from ..contracts import CLASSIFIER, has
from ..probe import MIB, Workload, fresh_model, logits_of, peak_mib, probe
from .common import CellResult, Context, meta_model
from .settings import MemorySettings as Settings
from .settings import check_cell, model_arguments


def preflight(cell: dict, s: Settings) -> None:
    """Refuse a cell before anything runs: an unknown model or arguments it rejects, the cell's
    or its timing reference's."""
    check_cell("memory", cell, s)
    kwargs = model_arguments(cell)
    meta_model(cell["model"], CLASSIFIER, num_classes=s.num_classes, **kwargs)
    if s.timing_reference is not None:  # its arguments too, before the first cell is timed
        reference = model_arguments(s.timing_reference)
        meta_model(s.timing_reference["model"], CLASSIFIER, num_classes=s.num_classes, **reference)


def saved_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return count_saved_bytes(
        lambda: F.cross_entropy(logits_of(model(x)), y), exclude=model.parameters()
    )[0]


def run(cell: dict, s: Settings, ctx: Context) -> CellResult:
    kwargs = model_arguments(cell)
    shape = (3, s.image_size, s.image_size)
    w = Workload(cell["model"], s.num_classes, s.batch_size, shape, ctx.device, kwargs, ctx.seed)
    model, x, y = fresh_model(w)
    # The probe (a fresh process) counts the saved bytes; only the floor is counted here.
    memory = probe(w, s.timing_steps, s.timing_reference)
    metrics = {
        "depth": depth(model),
        "params": models.count_parameters(model) / 1e6,
        "saved_mib": memory["saved_bytes"] / MIB,
    }
    if has(model, "reversible_floor"):
        metrics["floor_mib"] = saved_bytes(model.without_reversible_blocks(), x, y) / MIB
        metrics["above_floor"] = metrics["saved_mib"] / metrics["floor_mib"]
    if has(model, "memory_saving"):
        metrics.update(gradient_errors(model, x[: s.grad_check_batch], y[: s.grad_check_batch]))
        metrics["drift"] = reconstruction_drift(model, x[: s.grad_check_batch])
    metrics["peak_mib"] = peak_mib(memory)
    metrics.update({k: memory[k] for k in ("step_s", "forward_share", "step_rel") if k in memory})
    return CellResult(metrics=metrics, memory=memory, data={"source": "random inputs"})


def gradient_errors(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How far the memory-saving backward's float32 gradients are from plain autograd's.

    Worst relative error over parameter tensors, ||g - g_ref|| / ||g_ref||, against plain
    autograd in float32 on the same weights, and, for scale, both against a float64 run:
    reconstructing inputs through many blocks adds float32 drift, which this makes visible.
    """

    def grads(memory_saving: bool, dtype: torch.dtype) -> list[torch.Tensor]:
        m = copy.deepcopy(model).to(dtype)
        m.memory_saving = memory_saving
        F.cross_entropy(logits_of(m(x.to(dtype))), y).backward()
        return [p.grad.double() for p in m.parameters()]

    def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(((g - r).norm() / r.norm()).item() for g, r in zip(a, b) if r.norm() > 0)

    saving, plain = grads(True, torch.float32), grads(False, torch.float32)
    exact = grads(False, torch.float64)
    return {
        "grad_error": worst(saving, plain),
        "grad_error_f64": worst(saving, exact),
        "plain_grad_error_f64": worst(plain, exact),
    }


def reconstruction_drift(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Worst float32 error of the inputs the memory-saving backward reconstructs.

    Every run of reversible blocks (a module with `memory_saving` and `inverse`) rebuilds its
    input from its output; this is max |inverse(run(x)) - x| / max |x| over the runs, in the
    model's mode (train mode here, as in a training step). It isolates the reconstruction from
    what the gradients do with it.
    """
    m = copy.deepcopy(model).float()
    seen: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []
    for mod in m.modules():
        if hasattr(mod, "memory_saving") and hasattr(mod, "inverse"):
            mod.register_forward_hook(lambda mod, args, out: seen.append((mod, args[0], out)))
    with torch.no_grad():
        m(x.float())
        return max(
            ((mod.inverse(out) - inp).abs().max() / inp.abs().max()).item()
            for mod, inp, out in seen
        )
