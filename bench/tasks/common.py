"""What the runner hands a task for one cell, what the task hands back, and the settings every
task shares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

import models

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


DATA_KINDS = ("real", "sample")


def positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    """A setting that must be > 0: one message that names it."""
    if value is None and allow_none:
        return
    if not _finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def non_negative(name: str, value: int | float) -> None:
    """A setting that must be >= 0 (a momentum, a weight decay): one message that names it."""
    if not _finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _finite_number(value) -> bool:
    """An int or a float other than nan and inf (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_data(data: str) -> None:
    if data not in DATA_KINDS:
        raise ValueError(
            f"data must be 'real' (--data-dir) or 'sample' (the committed sample), got {data!r}"
        )


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
    "normal_", "uniform_", "zero_", "fill_", "ones_", "zeros_", "constant_", "trunc_normal_",
    "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "orthogonal_",
}  # fmt: skip


def _on_meta(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "meta"


_META_MODELS: dict[str, torch.nn.Module] = {}


def meta_model(name: str, **kwargs):
    """`models.build(name, **kwargs)` on the meta device, uninitialised, once per distinct
    arguments: what a preflight checks (arguments, input kind) is the same for every tier."""
    key = f"{name}{sorted(kwargs.items())!r}"
    if key not in _META_MODELS:
        with torch.device("meta"), _SkipInit():
            _META_MODELS[key] = models.build(name, **kwargs)
    return _META_MODELS[key]
