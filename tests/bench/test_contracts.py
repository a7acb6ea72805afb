"""Every registered model meets its task's contract, in declaration and in behaviour; a model
that breaks it is named with what it lacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from bench.contracts import CLASSIFIER, DENSITY, has, problems

# The smallest build of each registered model; a model added to the registry must add itself here.
DENSITY_MODELS = {
    "vae": {"shape": (1, 4, 4), "k": 2},
    "iwae": {"shape": (1, 4, 4), "layers": 2, "k": 3},
    "factorised": {"shape": (1, 4, 4)},
    "hvae": {"shape": (1, 4, 4), "hidden": 8, "hidden_z": 6, "z_dims": (4, 3)},
    "pixelvae": {"shape": (1, 4, 4), "hidden": 8, "hidden_z": 6, "z_dims": (4,)},
    "pixelvae2": {"shape": (1, 4, 4), "hidden": 8, "hidden_z": 6, "z_dims": (4, 3)},
    "nice": {"shape": (1, 4, 4), "couplings": 2, "hidden": 8, "depth": 1},
    "pixelcnn": {"shape": (1, 4, 4), "hidden": 8, "n_blocks": 1},
    "gated_pixelcnn": {"shape": (1, 4, 4), "hidden": 8, "n_layers": 2},
    "pixelcnnpp": {"shape": (3, 4, 4), "nr_filters": 8, "nr_logistic_mix": 2},
    "pixelsnail": {"shape": (3, 4, 4), "nr_filters": 8, "key_size": 4, "n_blocks": 1},
}
CLASSIFIERS = {  # (arguments, input shape); None: checked on the meta device only (ImageNet size)
    "resnet32": ({"num_classes": 10}, (3, 32, 32)),
    "resnet110": ({"num_classes": 10}, None),
    "resnet164": ({"num_classes": 10}, None),
    "resnet_cifar": ({"units": 1, "num_classes": 10}, (3, 8, 8)),
    "revnet38": ({"num_classes": 10}, None),
    "revnet110": ({"num_classes": 10}, None),
    "revnet164": ({"num_classes": 10}, None),
    "revnet_cifar": ({"units": 1, "num_classes": 10}, (3, 8, 8)),
    "revnet56_imagenet": ({"num_classes": 1000}, None),
    "revnet104_imagenet": ({"num_classes": 1000}, None),
    "irevnet_a": ({"num_classes": 1000}, None),
    "irevnet_b": ({"num_classes": 1000}, None),
    "irevnet_cifar": ({"num_classes": 10}, (3, 32, 32)),
    "irevnet_released_imagenet": ({"num_classes": 1000}, None),
    "resnet50": ({"num_classes": 1000}, None),
}


def test_every_registered_model_is_listed_here():
    assert set(models.MODELS) == set(DENSITY_MODELS) | set(CLASSIFIERS)


@pytest.mark.parametrize("name", [*DENSITY_MODELS, *CLASSIFIERS])
def test_declaration_meets_the_contract(name):
    contract, kwargs = (
        (DENSITY, DENSITY_MODELS[name])
        if name in DENSITY_MODELS
        else (CLASSIFIER, CLASSIFIERS[name][0])
    )
    with torch.device("meta"):
        model = models.build(name, **kwargs)
    assert problems(model, contract) == []


def _inputs(model, n: int) -> torch.Tensor:
    shape = (n, *model.shape) if hasattr(model, "shape") else None
    g = torch.Generator().manual_seed(0)
    if model.input_kind == "binary":
        return torch.randint(0, 2, shape, generator=g).float()
    if model.input_kind == "discrete256":
        return torch.randint(0, 256, shape, generator=g).float()
    return torch.rand(shape, generator=g, dtype=torch.float64).float()


@pytest.mark.parametrize("name", DENSITY_MODELS)
def test_density_model_behaves_as_declared(name):
    torch.manual_seed(0)
    kwargs = DENSITY_MODELS[name]
    model = models.build(name, **kwargs)
    model.shape = tuple(kwargs["shape"])  # what _inputs reads, for models that do not store it
    x = _inputs(model, 3)
    if has(model, "init_from_data"):
        model.init_from_data((x * (255 if model.input_kind == "binary" else 1)).to(torch.uint8))
    if has(model, "init_from_batch"):
        model.init_from_batch(x)
    loss = model(x)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        nll = model.nll(x, k=4, chunk=2) if has(model, "bound") else model.nll(x)
        assert nll.shape == (3,) and torch.isfinite(nll).all()
        if has(model, "param_groups"):
            grouped = [p for g in model.param_groups() for p in g["params"]]
            assert sorted(map(id, grouped)) == sorted(id(p) for p in model.parameters())
        if has(model, "active_units"):
            units = model.active_units(x, n_samples=4)
            assert all(isinstance(u, int) for u in units)
        if has(model, "elbo_terms"):
            assert all(v.shape == (3,) for v in model.elbo_terms(x).values())
        if has(model, "sample"):
            draw = model.sample(2, generator=torch.Generator().manual_seed(1))
            again = model.sample(2, generator=torch.Generator().manual_seed(1))
            assert draw.reshape(2, *kwargs["shape"]).shape == (2, *kwargs["shape"])
            assert torch.equal(draw, again)
            if model.input_kind != "continuous":
                top = 1 if model.input_kind == "binary" else 255
                assert torch.equal(draw, draw.round()) and 0 <= draw.min() <= draw.max() <= top
        if has(model, "naive_sampler"):
            naive = model.sample(2, generator=torch.Generator().manual_seed(1), naive=True)
            assert torch.equal(naive, draw)


@pytest.mark.parametrize("name", [n for n, (_, shape) in CLASSIFIERS.items() if shape])
def test_classifier_behaves_as_declared(name):
    torch.manual_seed(0)
    kwargs, shape = CLASSIFIERS[name]
    model = models.build(name, **kwargs).double().eval()
    x = torch.randn(2, *shape, dtype=torch.float64)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, kwargs["num_classes"])
    if has(model, "inverse"):
        assert torch.allclose(model.inverse(out[1]), x, atol=1e-10)
    if has(model, "reversible_floor"):
        assert isinstance(model.without_reversible_blocks(), nn.Module)
    if has(model, "memory_saving"):
        model.memory_saving = False
        assert not model.memory_saving


class _Density(nn.Module):
    input_kind = "discrete256"
    capabilities = frozenset({"sample"})

    def forward(self, x):
        return x.sum((1, 2, 3))

    def nll(self, x):
        return self(x)

    def sample(self, n, generator=None):
        return torch.zeros(n, 1, 2, 2)


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"capabilities": None}, "no `capabilities` class attribute"),  # None: absent
        ({"nll": None}, "no `nll`"),
        ({"capabilities": frozenset({"sample", "fly"})}, "capability 'fly' is not one"),
        ({"capabilities": frozenset({"sample", "elbo_terms"})}, "declares 'elbo_terms' but has"),
        ({"capabilities": frozenset()}, "has `sample` but does not declare 'sample'"),
        ({"input_kind": "gray"}, "input_kind 'gray' is not one of"),
    ],
)
def test_a_broken_model_is_told_what_it_lacks(change, problem):
    ((key, value),) = change.items()
    model = type("Broken", (_Density,), {key: property(_missing) if value is None else value})()
    assert any(problem in p for p in problems(model, DENSITY)), problems(model, DENSITY)
    assert problems(_Density(), DENSITY) == []


def _missing(self):
    raise AttributeError("absent")
