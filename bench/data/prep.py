"""How images become a likelihood model's input, declared in a spec as `prep = "..."`.

Each preparation says what kind of input it makes (a model declares the kind it takes, so a
256-way softmax on binarized data is refused before training) and how many nats the change of
variables adds to the model's NLL to give the NLL of the stored images. torch is imported when a
preparation runs, so that `bench validate` can check a spec's `prep` without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..units import dequantization_nats

if TYPE_CHECKING:
    import torch
    from torch import Tensor


@dataclass(frozen=True)
class Prep:
    kind: str  # "binary", "discrete256" or "continuous": what the model receives
    train: Callable[[Tensor], Tensor]  # a uint8 training batch -> model input (global RNG)
    test: Callable[[Tensor, torch.Generator], Tensor]  # the test set, once, seeded
    offset: Callable[[int], float]  # dims -> nats added to the model's NLL
    doc: str


def _binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dynamic binarization: each pixel ~ Bernoulli(intensity), as the IWAE paper does."""
    import torch

    return torch.bernoulli(x.flatten(1).float() / 255, generator=generator).view(x.shape)


def _binary(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Images that are already binary (stored 0/255) -> exactly 0/1."""
    if not bool(((x == 0) | (x == 255)).all()):
        raise ValueError("prep 'binary' needs images stored as 0/255; use 'dynamic_binarize'")
    return (x == 255).float()


def _levels(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """8-bit images as integer-valued floats 0..255: the likelihood of the integer values."""
    return x.float()


def _dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """y = (x + u) / 256, u ~ U[0, 1): a continuous density on y bounds the 8-bit NLL."""
    import torch

    u = torch.rand(x.shape, generator=generator, device=x.device)
    return (x.float() + u) / 256


PREPS: dict[str, Prep] = {
    "dynamic_binarize": Prep(
        "binary",
        _binarize,
        _binarize,
        lambda d: 0.0,
        "training images binarized anew each step, the test set once with the run's seed",
    ),
    "binary": Prep(
        "binary",
        _binary,
        _binary,
        lambda d: 0.0,
        "images that are already binary (e.g. the fixed Larochelle & Murray binarization)",
    ),
    "discrete256": Prep(
        "discrete256", _levels, _levels, lambda d: 0.0, "8-bit values, modelled as integers"
    ),
    "dequantize": Prep(
        "continuous",
        _dequantize,
        _dequantize,
        dequantization_nats,
        "uniform dequantization y = (x + u) / 256; NLL counts the D ln 256 of the rescaling",
    ),
}
