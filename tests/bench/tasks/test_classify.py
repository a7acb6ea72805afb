"""bench.tasks.classify: a data set's class count and normalisation come from its catalog entry."""

from __future__ import annotations

import pytest
import torch

from bench.data import DATASETS
from bench.tasks.classify import Settings, normalise, preflight


def test_preflight_builds_the_head_the_data_set_needs_and_refuses_the_rest(monkeypatch):
    heads = []
    monkeypatch.setattr(
        "bench.tasks.classify.meta_model",
        lambda name, contract, num_classes: heads.append(num_classes),
    )
    for name in ("cifar10", "cifar100", "imagenet"):
        preflight({"dataset": name, "model": "resnet32"}, Settings())
    assert heads == [10, 100, 1000]
    with pytest.raises(ValueError, match="one of cifar10, cifar100, imagenet, got 'mnist'"):
        preflight({"dataset": "mnist", "model": "resnet32"}, Settings())


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_normalise_maps_the_catalog_mean_to_zero_and_one_std_to_one(name):
    mean, std = (torch.tensor(v, dtype=torch.float64) for v in DATASETS[name].normalise)
    # uint8 images whose channel c is 255 * (mean_c + k * std_c) for k = 0 and 1, rounded
    pixels = torch.stack([255 * mean, 255 * (mean + std)]).round()
    x = pixels.view(2, 3, 1, 1).expand(2, 3, 2, 2).to(torch.uint8)
    expected = (pixels / 255 - mean) / std
    got = normalise(x, name)[:, :, 0, 0].double()
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got[0].abs() < 0.01).all() and ((got[1] - 1).abs() < 0.02).all()
