"""Fixtures shared by every test."""

import pytest
import torch

import models


@pytest.fixture(autouse=True)
def one_thread():
    """Intra-op threads spin against the other jobs sharing a 2-core machine: one thread runs
    these small-batch passes many times faster than two under load, and makes bit-for-bit
    comparisons independent of the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_plugins_left():
    """A plugin model one test registers is gone for the next (models.register is per process)."""
    before = models.registered()
    yield
    models._PLUGINS.clear()
    models._PLUGINS.update(before)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where PyTorch sees a GPU (tools/gpu-check runs them there)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
