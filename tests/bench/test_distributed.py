"""`torchrun -m bench run ...` trains a cell with DistributedDataParallel: here two CPU processes
on the gloo backend, against one process on the same cell and seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import IWAE, write_spec


def run(prefix: list[str], root, spec_dir) -> dict:
    args = [
        *prefix,
        "-m",
        "bench",
        "--specs",
        str(spec_dir),
        "--results",
        str(root / "results"),
        "--tables",
        str(root / "tables"),
        "run",
        "tiny",
        "--tier",
        "smoke",
        "--cells",
        IWAE,
        "--checkpoints",
        str(root / "ckpt"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads((root / "results" / "tiny" / "smoke" / f"{IWAE}.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, spec_dir):
    write_spec(
        spec_dir,
        epochs_per_stage=[3],
        batch_size=32,
        n_train=128,
        max_steps_per_epoch=4,
        n_test=32,
        nll_k=64,
        nll_chunk=64,
    )
    one = run([sys.executable], tmp_path / "one", spec_dir)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = run(torchrun, tmp_path / "two", spec_dir)

    assert "x2 processes (DDP, gloo)" in two["device"] and "DDP" not in one["device"]
    # Same initial weights, data order and global batch; only the reparameterisation noise is
    # drawn differently (per process), so losses and the NLL agree up to that noise.
    for a, b in zip(one["history"], two["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.02 * abs(a["loss"])
    assert abs(one["metrics"]["nll"] - two["metrics"]["nll"]) < 1.0
    assert one["metrics"]["nll"] != two["metrics"]["nll"]  # two processes really trained it
