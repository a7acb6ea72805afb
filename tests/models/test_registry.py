"""models.MODELS: every entry builds, and nothing outside it is a model."""

import pytest
import torch

import models


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_registered_name_resolves_to_a_constructor(name):
    module, attr = models.MODELS[name].split(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))


@pytest.mark.parametrize("helper", ["depth", "conv3x3", "halves", "IWAE"])
def test_helpers_of_model_modules_are_not_models(helper):
    with pytest.raises(models.UnknownModel, match=f"unknown model '{helper}'"):
        models.build(helper)


def test_build_passes_arguments():
    with torch.device("meta"):
        model = models.build("resnet_cifar", units=1, num_classes=7)
    assert model.fc.out_features == 7
