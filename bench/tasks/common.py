"""What the runner hands a task for one cell, what the task hands back, and the settings every
task shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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


DATA_KINDS = ("real", "sample")


def positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    """A setting that must be > 0: one message that names it."""
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_data(data: str) -> None:
    if data not in DATA_KINDS:
        raise ValueError(
            f"data must be 'real' (--data-dir) or 'sample' (the committed sample), got {data!r}"
        )
