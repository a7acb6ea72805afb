"""bench.tasks.common: preflight models are built on the meta device without running their
initialisers, once per distinct arguments, with the same structure as a real build."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

import models
from bench.contracts import CLASSIFIER, DENSITY
from bench.tasks import common
from bench.tasks.common import meta_model


def test_a_meta_model_has_the_structure_of_a_real_one():
    real = models.build("revnet_cifar", units=1, block="basic", num_classes=10)
    meta = meta_model("revnet_cifar", CLASSIFIER, units=1, block="basic", num_classes=10)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in real.named_parameters()
    ]
    assert all(p.device.type == "meta" for p in meta.parameters())


class Seen(TorchFunctionMode):
    """Below the preflight's modes: records the torch functions that got past them."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


def test_meta_models_skip_initialisers_and_are_built_once(monkeypatch):
    common._META_MODELS.clear()
    built = []
    build = models.build
    monkeypatch.setattr(models, "build", lambda *a, **k: built.append(a) or build(*a, **k))
    with Seen() as seen:
        first = meta_model("resnet_cifar", CLASSIFIER, units=1, num_classes=10)
        assert meta_model("resnet_cifar", CLASSIFIER, units=1, num_classes=10) is first
        assert meta_model("iwae", DENSITY, shape=(1, 28, 28), k=5).k == 5
    assert built == [("resnet_cifar",), ("iwae",)]
    assert "empty" in seen.names  # parameters were made, but never filled
    assert not set(seen.names) & {
        "kaiming_normal_",
        "kaiming_uniform_",
        "normal_",
        "uniform_",
        "xavier_uniform_",
        "zero_",
        "fill_",
    }


def test_a_real_build_still_initialises():
    with pytest.raises(AssertionError):
        torch.testing.assert_close(
            models.build("resnet_cifar", units=1, num_classes=10).fc.weight,
            torch.zeros(10, 64),
        )
