"""bench.executors.local and the shared results folder: --jobs N equals serial bit for bit, a
lone cell gets every core, a folder is reused wherever it is, a killed worker's cell is resumed by
another, each worker gets a GPU of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from bench import lease
from bench.lease import CAMPAIGN_FILE, lease_path, read_lease
from bench.records import record_path
from bench.runner import UsageError, plan, run_table

from ..conftest import VAE, model_metrics, options, write_spec


def quiet(line):
    pass


def _numbers(records):
    return {r.cell: (model_metrics(r.metrics), [h["loss"] for h in r.history]) for r in records}


def test_jobs_2_gives_the_numbers_of_a_serial_run(tmp_path, tiny):
    lines = []
    parallel = run_table(tiny, options(tmp_path / "a", jobs=2, threads_per_cell=1), lines.append)
    serial = run_table(tiny, options(tmp_path / "b", threads_per_cell=1), log=quiet)
    assert _numbers(parallel) == _numbers(serial)
    assert {r.status for r in parallel} == {"ok"} and len(parallel) == 2
    assert lines[0] == "2 cells, 2 at once (1 threads each)"
    assert "1 threads" in parallel[0].device


def test_a_lone_cell_gets_every_core_and_a_huge_jobs_count_one_worker_per_cell(
    tmp_path, tiny, monkeypatch
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    (job,) = plan(tiny, options(tmp_path, cells=VAE, jobs=2))
    assert job.threads == 2  # one cell runs at once: not cores / --jobs
    lines = []
    huge = options(tmp_path / "b", cells=VAE, jobs=99999999999999999999999)
    (record,) = run_table(tiny, huge, lines.append)
    assert record.status == "ok" and lines[0] == "1 cells, 1 at once (2 threads each)"


def test_a_results_folder_copied_elsewhere_is_reused_and_a_new_one_retrains(
    tmp_path, tiny, monkeypatch
):
    opts = options(tmp_path, cells=VAE)
    run_table(tiny, opts, log=quiet)
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(opts.results, moved)
    monkeypatch.setattr(socket, "gethostname", lambda: "another-host")
    lines = []
    assert run_table(tiny, replace(opts, results=moved), log=lines.append) == []
    assert "done already" in lines[0]
    # A fresh clone: the records are there, but the folder's campaign is not theirs.
    (moved / CAMPAIGN_FILE).unlink()
    (again,) = run_table(tiny, replace(opts, results=moved), log=quiet)
    assert again.status == "ok"
    assert again.settings["_campaign"] == (moved / CAMPAIGN_FILE).read_text().split()[0]


KILLED_AFTER_ONE_EPOCH = """
import os, sys
from bench import train
from bench.cli import main
save = train.Checkpoint.save
def save_then_die(self, epoch, *args):
    save(self, epoch, *args)
    if epoch == 1:
        os._exit(9)  # as SIGKILL would: no cleanup, the lease stays behind
train.Checkpoint.save = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_workers_cell_is_resumed_by_another_process(tmp_path, spec_dir, monkeypatch):
    spec = write_spec(spec_dir, epochs_per_stage=[3])
    opts = options(tmp_path, cells=VAE)
    args = [
        "run",
        "tiny",
        "--specs",
        str(spec_dir),
        "--results",
        str(opts.results),
        "--tables",
        str(opts.tables),
        "--checkpoints",
        str(opts.checkpoints),
        "--cells",
        VAE,
        "--threads-per-cell",
        "1",
    ]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_ONE_EPOCH, *args], capture_output=True, text=True
    )
    assert killed.returncode == 9, killed.stderr
    path = record_path(opts.results, "tiny", "smoke", VAE)
    assert read_lease(lease_path(path)) is not None and not path.exists()

    from bench.spec import load_spec

    monkeypatch.setattr(lease, "EXPIRY", 0.5)
    time.sleep(0.6)
    lines = []
    (record,) = run_table(load_spec(spec), replace(opts, threads_per_cell=1), log=lines.append)
    assert record.status == "ok" and record.resumed and record.segments == 2
    assert [h["epoch"] for h in record.history] == [1, 2, 3]
    assert not lease_path(path).exists()
    uninterrupted = run_table(
        load_spec(spec), options(tmp_path / "b", cells=VAE, threads_per_cell=1), log=quiet
    )
    assert _numbers([record]) == _numbers(uninterrupted)


def test_each_local_worker_gets_a_gpu_of_its_own(monkeypatch):
    from bench.executors.local import _visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert _visible_gpus("cuda", 2) == ["0", "1"]
    with pytest.raises(UsageError, match="one GPU per worker, but 2 are visible; pass --jobs 2"):
        _visible_gpus("cuda", 4)
    assert _visible_gpus("cpu", 4) is None
    with pytest.raises(UsageError, match="--device cuda:1 --jobs 2: each worker gets a GPU"):
        _visible_gpus("cuda:1", 2)


@pytest.mark.cuda
def test_a_cell_on_the_gpu_records_the_allocator_and_nvml_peaks(tmp_path, tiny):
    (record,) = run_table(tiny, options(tmp_path, cells=VAE, device="cuda"), log=quiet)
    assert record.status == "ok" and record.device.startswith("cuda: ")
    assert record.memory["cuda_peak_bytes"] > 0
    assert record.memory["nvml_process_bytes"] is None or record.memory["nvml_process_bytes"] > 0
