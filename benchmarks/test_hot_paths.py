"""The hot paths of the tables, timed (README, 'Benchmarks'). The workloads are bench perf's
builders (bench/perf/), so these time what `bench perf` compares against its peers."""

from __future__ import annotations

import math

import pytest
import torch

from bench.perf import iwae, pixelcnn, reversible
from bench.perf.timing import Settings
from bench.spec import get_spec, settings_for
from bench.tasks.likelihood import Settings as LikelihoodSettings

# models whose cached sampler is timed: one line per model
CACHED_SAMPLERS = ("gated_pixelcnn",)
PIXELCNN_TRAIN = ("pixelcnn",)


def perf_settings(tiny: bool) -> Settings:
    return Settings(tiny=tiny)


@pytest.mark.parametrize("layers", [1, 2])
def test_iwae_train_step(hot, tiny, layers):
    """One Adam step of the IWAE bound, k = 50, batch 100 (the table's training step)."""
    k, batch = (3, 4) if tiny else (50, 100)
    step = iwae.train_steps(layers, k, batch)[0]["ours"]
    hot(step, k=k, batch=batch)


def test_iwae_nll(hot, tiny):
    """The k = 5000 NLL bound at the chunk the IWAE table's medium tier uses (the fastest in
    `bench perf`), on 20 images rather than its 100 per call, to keep a round to a few seconds."""
    s = settings_for(LikelihoodSettings, get_spec("iwae-table"), "medium")
    k, chunk, images = (20, 5, 2) if tiny else (s.nll_k, s.nll_chunk, 20)
    m = iwae.model(1, 1).eval()
    x = iwae.binary_images(images, seed=4)
    nll = hot(lambda: m.nll(x, k=k, chunk=chunk), k=k, chunk=chunk, images=images)
    assert nll.shape == (images,) and bool(torch.isfinite(nll).all())


def test_coupling_stack_step(hot, tiny):
    """One SGD step through bench perf's stack of coupling blocks, activations rebuilt in
    backward (models.revnet's memory-saving path)."""
    z = reversible.sizes(perf_settings(tiny))
    net = reversible.stacks(z)[0]["ours"]
    x = torch.randn(z["batch"], z["channels"], z["hw"], z["hw"])
    hot(reversible.train_step(net, x), **z)


@pytest.mark.parametrize("name", PIXELCNN_TRAIN)
def test_pixelcnn_train_step(hot, tiny, name):
    z = pixelcnn.sizes(perf_settings(tiny))
    hot(pixelcnn.train_step(name, z), shape=list(z["shape"]), batch=z["batch"])


@pytest.mark.parametrize("name", CACHED_SAMPLERS)
def test_cached_sample(hot, tiny, name):
    """One 32x32x3 image from the cached sampler of the pixelcnn-cifar10 small tier's model."""
    z = pixelcnn.sizes(perf_settings(tiny))
    x = hot(pixelcnn.sampler(name, z, 1), tier=z["tier"], shape=list(z["sample_shape"]))
    assert x.shape == (1, *z["sample_shape"]) and math.isfinite(float(x.sum()))
