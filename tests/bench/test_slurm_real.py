"""--executor slurm against a real Slurm (scripts/slurm-local start): an array job trains cells
with the numbers of a local run, the options reach Slurm, a preemption requeues and resumes, a
cancelled task is reported as cancelled. Skipped where no Slurm answers (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.cell import SlurmOptions
from bench.executors import slurm as slurm_executor
from bench.executors.slurm import submit
from bench.lease import lease_path
from bench.records import read_record, record_path
from bench.runner import plan, run_table
from bench.spec import load_spec

from .conftest import IWAE, VAE, model_metrics, options, write_spec

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
pytest.importorskip("submitit")

# A cell that trains long enough (about 10 s) to be preempted or cancelled after its first
# checkpoint, and short enough to finish well within a test.
SLOW = {"epochs_per_stage": [200]}


def quiet(line):
    pass


def slurm(*args: str, timeout: float = 30) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def numbers(record) -> tuple:
    return model_metrics(record.metrics), [h["loss"] for h in record.history]


def run_args(name: str, spec_dir: Path, root: Path, *more: str) -> list[str]:
    """`bench run NAME` on the Slurm cluster, everything under `root`, one CPU and thread a cell."""
    return [
        sys.executable,
        "-m",
        "bench",
        "run",
        name,
        "--specs",
        str(spec_dir),
        "--results",
        str(root / "results"),
        "--tables",
        str(root / "tables"),
        "--checkpoints",
        str(root / "checkpoints"),
        "--executor",
        "slurm",
        "--slurm-folder",
        str(root / "logs"),
        "--time-min",
        "10",
        "--mem-gb",
        "1",
        "--cpus-per-cell",
        "1",
        "--threads-per-cell",
        "1",
        *more,
    ]


def bench_run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(what: str, check, seconds: float = 120):
    """check()'s first true value, polled; fails the test after `seconds`."""
    start = time.monotonic()
    while not (value := check()):
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.3)
    return value


def task_of(job_name: str) -> str | None:
    """The running array task of the job named `job_name` (e.g. "12_0"), if any."""
    lines = slurm("squeue", "-h", "-n", job_name, "-t", "RUNNING", "-o", "%i").split()
    return lines[0] if lines else None


def first_checkpoint(root: Path, name: str):
    return next((root / "checkpoints" / name / "smoke").glob(f"{VAE}.*.pt"), None)


def test_an_array_job_trains_two_cells_with_the_numbers_of_a_local_run(tmp_path, spec_dir):
    spec = write_spec(spec_dir, name="slurm-array")
    root = tmp_path / "slurm"
    ran = bench_run(run_args("slurm-array", spec_dir, root, "--array-parallelism", "2"), tmp_path)
    out, err = ran.communicate(timeout=300)
    assert ran.returncode == 0, err[-3000:]
    job = out.splitlines()[0].split()[5]
    assert {f"[1/2] {VAE}: job {job}_0: ran", f"[2/2] {IWAE}: job {job}_1: ran"} <= set(
        out.splitlines()
    ), out
    states = slurm("sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State").split()
    assert sorted(states) == [f"{job}_0|COMPLETED", f"{job}_1|COMPLETED"]
    local = run_table(load_spec(spec), options(tmp_path / "local", threads_per_cell=1), quiet)
    for record in local:
        on_slurm = read_record(record_path(root / "results", "slurm-array", "smoke", record.cell))
        assert on_slurm.status == "ok" and numbers(on_slurm) == numbers(record)


def test_the_sbatch_options_reach_slurm(tmp_path, spec_dir):
    spec = load_spec(write_spec(spec_dir, name="slurm-options"))
    held = SlurmOptions(
        partition="batch",
        time_min=7,
        mem_gb=2,
        cpus_per_cell=1,
        array_parallelism=1,
        folder=tmp_path / "logs",
        extra={"hold": True},
    )
    opts = options(tmp_path, executor="slurm", slurm=held)
    job = submit(plan(spec, opts), opts)[0].job_id.split("_")[0]
    try:
        shown = slurm("scontrol", "show", "job", job)
        for field in [
            "JobName=bench-slurm-options-smoke",
            "Partition=batch",
            "TimeLimit=00:07:00",
            "ArrayTaskThrottle=1",
            "MinMemoryNode=2G",
            "ArrayTaskId=0-1%1",
        ]:
            assert field in shown.split(), (field, shown)
        fields = ["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobName,Partition,Timelimit"]
        accounted = wait_until("the job in sacct", lambda: slurm(*fields).split(), 30)
        assert set(accounted) == {"bench-slurm-options-smoke|batch|00:07:00"}
    finally:
        slurm("scancel", job)


def test_a_preempted_task_gives_up_its_lease_is_requeued_and_resumes(tmp_path, spec_dir):
    spec = write_spec(spec_dir, name="slurm-preempt", **SLOW)
    root = tmp_path / "slurm"
    ran = bench_run(run_args("slurm-preempt", spec_dir, root, "--cells", VAE), tmp_path)
    try:
        wait_until("the first checkpoint", lambda: first_checkpoint(root, "slurm-preempt"))
        task = wait_until("a running task", lambda: task_of("bench-slurm-preempt-smoke"))
        slurm("scancel", "--signal=USR2", task)  # what a preemption with user signals sends
        wait_until(
            "the requeue",
            lambda: (
                slurm("squeue", "-h", "-j", task, "-o", "%T %r").split() == ["PENDING", "BeginTime"]
            ),
        )
        path = record_path(root / "results", "slurm-preempt", "smoke", VAE)
        assert not lease_path(path).exists() and not path.exists()
        slurm("scontrol", "update", f"jobid={task}", "StartTime=now")  # not 121 s from now
        out, err = ran.communicate(timeout=240)
    finally:
        ran.kill()
        subprocess.run(["scancel", "-n", "bench-slurm-preempt-smoke"], timeout=30)
    assert ran.returncode == 0, err[-3000:]
    assert f"[1/1] {VAE}: job {task}: ran" in out.splitlines(), out
    record = read_record(path)
    assert record.status == "ok" and record.resumed and record.segments == 2
    (whole,) = run_table(
        load_spec(spec), options(tmp_path / "local", cells=VAE, threads_per_cell=1), quiet
    )
    assert numbers(record) == numbers(whole)


def test_a_cancelled_task_is_reported_as_cancelled_with_its_log(tmp_path, spec_dir):
    write_spec(spec_dir, name="slurm-cancel", epochs_per_stage=[5000])  # never done in time
    root = tmp_path / "slurm"
    ran = bench_run(run_args("slurm-cancel", spec_dir, root, "--cells", VAE), tmp_path)
    try:
        wait_until("the first checkpoint", lambda: first_checkpoint(root, "slurm-cancel"))
        task = wait_until("a running task", lambda: task_of("bench-slurm-cancel-smoke"))
        slurm("scancel", task)
        out, err = ran.communicate(timeout=120)
    finally:
        ran.kill()
        subprocess.run(["scancel", "-n", "bench-slurm-cancel-smoke"], timeout=30)
    assert ran.returncode == 1, out + err[-3000:]
    head = f"[1/1] {VAE}: job {task}: cancelled (CANCELLED by 0); log: "
    (line,) = [line for line in out.splitlines() if line.startswith(head)] or [out]
    log = Path(line.removeprefix(head))
    assert log.is_relative_to(root / "logs") and "Bypassing signal SIGTERM" in log.read_text()


def test_the_last_time_out_is_reported_as_one_and_keeps_the_checkpoint(
    tmp_path, spec_dir, monkeypatch
):
    monkeypatch.setattr(slurm_executor, "MAX_TIMEOUTS", 0)  # the first time-out is the last
    spec = load_spec(write_spec(spec_dir, name="slurm-timeout", epochs_per_stage=[5000]))
    limits = SlurmOptions(time_min=3, mem_gb=1, cpus_per_cell=1, folder=tmp_path / "logs")
    opts = options(tmp_path, executor="slurm", slurm=limits, cells=VAE, threads_per_cell=1)
    name, failed = "bench-slurm-timeout-smoke", []

    def time_out():  # under a limit of 10 min or less, submitit counts any USR2 as a time-out
        try:
            wait_until("the first checkpoint", lambda: first_checkpoint(tmp_path, "slurm-timeout"))
            slurm("scancel", "--signal=USR2", wait_until("a running task", lambda: task_of(name)))
        except BaseException as e:
            failed.append(e)
            subprocess.run(["scancel", "-n", name], timeout=30)

    signaller = threading.Thread(target=time_out, daemon=True)
    signaller.start()
    lines = []
    try:
        slurm_executor.run_submitit(plan(spec, opts), opts, lines.append)
    finally:
        subprocess.run(["scancel", "-n", name], timeout=30)
    signaller.join(30)
    assert not failed, failed
    (line,) = [line for line in lines if line.startswith(f"[1/1] {VAE}: job ")] or [lines]
    assert line.endswith(
        ": timed out 1 time (limit 3 min); its checkpoint is kept: rerun with a longer --time-min"
    ), lines
    path = record_path(opts.results, "slurm-timeout", "smoke", VAE)
    assert not path.exists() and not lease_path(path).exists()
    assert first_checkpoint(tmp_path, "slurm-timeout") is not None
    task = line.split()[3].rstrip(":")
    said = "".join(p.read_text() for p in (tmp_path / "logs" / task).glob("*_log.*"))
    assert "timed-out too many times" in said and "took the cell over" not in said
