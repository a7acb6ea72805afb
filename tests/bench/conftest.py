"""Shared fixtures of the harness tests: a shrunk IWAE spec in tmp_path and run options that keep
every record, table and checkpoint there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.runner import RunOptions
from bench.spec import load_spec

# bench/specs/iwae-table.toml cut down to two cells (VAE and IWAE, MNIST, one layer, k = 1) whose
# smoke tier trains a few steps on a slice of the committed sample and scores with nll_k = 4.
SPEC = """\
# A shrunk copy of bench/specs/iwae-table.toml for the harness tests.
id = "{id}"
title = "tiny IWAE table"
task = "likelihood"
model_arguments = ["layers", "k"]
paper = {{ arxiv = "1509.00519", table = "Table 1", authors = "Burda, Grosse, Salakhutdinov" }}
notes = ["a test spec"]

published = [
  {{ dataset = "mnist", model = "vae",  layers = 1, k = 1, nll = 86.76, active_units = "19" }},
  {{ dataset = "mnist", model = "iwae", layers = 1, k = 1, nll = 86.76, active_units = "19" }},
]

[metrics.nll]
label = "NLL"
unit = "nats"
format = ".2f"
better = "lower"

[metrics.active_units]
label = "active units"
kind = "units"

[grid]
dataset = ["mnist"]
layers = [1]
k = [1]
model = ["vae", "iwae"]

[layout]
rows = ["dataset", "layers", "k"]
columns = ["model"]

[defaults]
prep = "dynamic_binarize"
lr = 1e-3
adam_eps = 1e-4

[tiers.smoke]
{smoke}

[tiers.small]
stages = 1
epochs_per_stage = [1]
batch_size = 16
n_train = 32
n_test = 16
nll_k = 4
nll_chunk = 4
au_samples = 4
max_steps_per_epoch = 1
"""

SMOKE = {
    "data": "sample",
    "stages": 1,
    "epochs_per_stage": [2],
    "batch_size": 16,
    "n_train": 64,
    "n_test": 16,
    "nll_k": 4,
    "nll_chunk": 4,
    "nll_batch": 16,
    "au_samples": 4,
    "max_steps_per_epoch": 2,
}
VAE, IWAE = "mnist-layers1-k1-vae", "mnist-layers1-k1-iwae"
# Metrics of the machine rather than the model (speed, resident memory): two runs differ in them.
MACHINE_METRICS = {"images_per_s", "sample_s", "sample_s_naive", "peak_mib"}


def model_metrics(metrics: dict) -> dict:
    """A record's metrics without the machine's: what a rerun with the same seed must repeat."""
    return {k: v for k, v in metrics.items() if k not in MACHINE_METRICS}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def write_spec(folder: Path, name: str = "tiny", **smoke) -> Path:
    """Write the shrunk spec as folder/<name>.toml; keyword arguments override smoke settings."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = "\n".join(f"{k} = {toml_value(v)}" for k, v in {**SMOKE, **smoke}.items())
    path = folder / f"{name}.toml"
    path.write_text(SPEC.format(id=name, smoke=settings))
    return path


@pytest.fixture
def spec_dir(tmp_path) -> Path:
    return tmp_path / "specs"


@pytest.fixture
def tiny(spec_dir):
    return load_spec(write_spec(spec_dir))


def options(root: Path, **changes) -> RunOptions:
    """RunOptions with results, tables and checkpoints under `root`."""
    return RunOptions(
        results=root / "results",
        tables=root / "tables",
        checkpoints=root / "checkpoints",
        **changes,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tests share two busy cores, and bit-for-bit comparisons need the
    same thread count in every run. Also undo run_table's global deterministic-algorithms switch."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def bench_process(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    """Start `python -m bench ARGS` with one thread, output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
