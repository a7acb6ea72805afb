"""Tasks: how a kind of table trains and evaluates one cell.

A task is a module with a `Settings` dataclass (the keys a spec's tier may set) and
`run(cell, settings, ctx) -> CellResult`. Specs name their task; models are looked up by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import models

from ..errors import UsageError
from ..train import Checkpoint

TASKS = ("iwae", "classify", "memory")


@dataclass
class Context:
    """What the runner hands a task for one cell."""

    data_dir: Path | None
    device: torch.device
    seed: int
    tier: str
    checkpoint: Checkpoint
    desc: str = ""
    download: bool = False
    weights: Path | None = None  # where to save the trained state_dict, if anywhere


@dataclass
class CellResult:
    metrics: dict[str, Any]
    memory: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return importlib.import_module(f"{__name__}.{name}")


def build_model(name: str, **kwargs) -> torch.nn.Module:
    """Construct a model by its constructor's name, from any module in `models/` or torchvision."""
    for info in pkgutil.iter_modules(models.__path__):
        module = importlib.import_module(f"models.{info.name}")
        if callable(getattr(module, name, None)) and not name.startswith("_"):
            return getattr(module, name)(**kwargs)
    import torchvision.models

    if name in torchvision.models.list_models():
        return torchvision.models.get_model(name, weights=None, **kwargs)
    raise UsageError(f"no model constructor named '{name}' in models/ or torchvision")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
