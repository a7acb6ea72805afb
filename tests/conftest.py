"""Fixtures shared by every test."""

import shutil
import subprocess

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slurm: needs a Slurm that answers (scripts/slurm-local start); skipped elsewhere",
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where PyTorch sees a GPU (tools/gpu-check runs them there),
    those marked `slurm` only where `sinfo` answers (scripts/slurm-local starts a cluster)."""
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
    slurm = [item for item in items if item.get_closest_marker("slurm")]
    missing = slurm and slurm_missing()
    if missing:
        for item in slurm:
            item.add_marker(pytest.mark.skip(reason=missing))


def slurm_missing() -> str | None:
    """Why no Slurm answers here, or None: asked once per session, by `sinfo`, within 15 s."""
    hint = "; scripts/slurm-local start runs one here"
    if shutil.which("sinfo") is None:
        return f"no Slurm here (no sinfo on PATH){hint}"
    try:
        answer = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return f"no Slurm answers here (sinfo: no answer in 15 s){hint}"
    if answer.returncode != 0:
        why = (answer.stderr.strip().splitlines() or [f"exit status {answer.returncode}"])[-1]
        return f"no Slurm answers here (sinfo: {why}){hint}"
    return None
