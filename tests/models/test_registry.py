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


@pytest.mark.parametrize(
    "name, kwargs, problem",
    [
        ("iwae", {"k": 1.5}, "k takes int, got 1.5"),
        ("vae", {"k": 5.0}, "k takes int, got 5.0"),
        ("vae", {"layers": True}, "layers takes int, got True"),
        ("irevnet_cifar", {"dropout": "high"}, "dropout takes float, got 'high'"),
    ],
)
def test_an_argument_of_the_wrong_kind_is_refused_by_name(name, kwargs, problem):
    with pytest.raises(TypeError, match=f"^model '{name}': {problem}$"), torch.device("meta"):
        models.build(name, shape=(1, 28, 28), **kwargs) if "vae" in name else models.build(
            name, **kwargs
        )


def test_arguments_of_the_right_kind_pass():
    with torch.device("meta"):
        assert models.build("irevnet_cifar", dropout=0).training  # an int is a float here
        assert models.build("iwae", shape=(1, 28, 28), k=5).k == 5
