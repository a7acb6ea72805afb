"""What the runner hands a task for one cell, what the task hands back, and the settings every
task shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

import models

from ..contracts import Contract, problems
from ..train import Checkpoint


@dataclass
class Context:
    data_dir: Path | None
    device: torch.device
    seed: int
    tier: str
    checkpoint: Checkpoint
    desc: str = ""
    download: bool = False
    weights: Path | None = None  # where to save the trained state_dict, if anywhere
    samples: Path | None = None  # where a generative model saves its PNG grid of samples
    sample_budget_s: float | None = None  # a rehearsal's bound on drawing its sample (None: none)


@dataclass
class CellResult:
    metrics: dict[str, Any]
    memory: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trained:
    """What a task's `score` measures: a model trained by its `train` (with the history), or
    one `bench eval` gave the weights of a checkpoint (no history)."""

    model: torch.nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    has_weights: bool = False  # trained here or loaded: not the seeded initial weights


class _SkipInit(TorchFunctionMode):
    """Initialisers are no-ops: on the meta device there are no values to fill, and PyTorch's
    meta kernels for normal_ and friends cost milliseconds per call (most of `bench validate`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # nn.init passes it by keyword
        if getattr(func, "__name__", "") in _INITIALISERS and _on_meta(target):
            return target
        return func(*args, **kwargs)


_INITIALISERS = {
    "normal_",
    "uniform_",
    "zero_",
    "fill_",
    "ones_",
    "zeros_",
    "constant_",
    "trunc_normal_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "orthogonal_",
}


def _on_meta(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "meta"


_META_MODELS: dict[str, torch.nn.Module] = {}


def meta_model(name: str, contract: Contract, **kwargs):
    """`models.build(name, **kwargs)` on the meta device, uninitialised, once per distinct
    arguments, checked against the task's contract: what a preflight checks (arguments, members,
    input kind) is the same for every tier."""
    key = f"{name}{sorted(kwargs.items())!r}"
    if key not in _META_MODELS:
        with torch.device("meta"), _SkipInit():
            _META_MODELS[key] = models.build(name, **kwargs)
    model = _META_MODELS[key]
    found = problems(model, contract)
    if found:
        raise ValueError(
            f"model '{name}' does not meet the {contract.name} contract"
            f" (bench/contracts.py): {'; '.join(found)}"
        )
    return model
