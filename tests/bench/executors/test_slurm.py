"""bench.executors.slurm with a stand-in sbatch/srun/sacct/squeue (the real cluster's tests are
tests/bench/test_slurm_real.py): the sbatch script, what is submitted and what is not, time
limits, cancelled, lost and preempted tasks, the defaults file."""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from dataclasses import replace

import pytest

from bench import lease
from bench.cell import Outcome, SlurmOptions
from bench.executors import slurm as slurm_executor
from bench.executors.slurm import CellTask, slurm_options, submit
from bench.lease import Lease, lease_path
from bench.records import read_record, record_path
from bench.runner import UsageError, plan, run_table

from ..conftest import IWAE, VAE, options


def quiet(line):
    pass


def test_the_submitit_path_runs_every_cell_as_its_own_job(tmp_path, tiny):
    pytest.importorskip("submitit")
    slurm = SlurmOptions(folder=tmp_path / "logs", cpus_per_cell=1)
    lines = []
    opts = options(tmp_path, executor="submitit-local", slurm=slurm, cells=IWAE)
    run_table(tiny, opts, lines.append)
    assert read_record(record_path(opts.results, "tiny", "smoke", IWAE)).status == "ok"
    assert lines[0].startswith("submitted 1 cells as job ")
    assert f"[1/1] {IWAE}: job {lines[0].split()[5]}: ran" in lines


FAKE_SBATCH = """\
#!/bin/bash
# Stands in for Slurm: accepts the script, then runs each array task like Slurm would.
script="${@: -1}"
echo "$@" >> "$FAKE_SLURM/calls"
range=$(sed -n 's/^#SBATCH --array=\\([0-9]*\\)-\\([0-9]*\\).*/\\1 \\2/p' "$script")
export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 \\
  SLURM_JOB_NODELIST=localhost
(
  sleep 1
  if [[ -z "$FAKE_SLURM_RUN" ]]; then :
  elif [[ -z "$range" ]]; then  # a single job: no array
    SLURM_JOB_ID=4242 bash "$script" >> "$FAKE_SLURM/out" 2>&1
  else
    for i in $(seq $range); do
      SLURM_JOB_ID=$((4243 + i)) SLURM_ARRAY_JOB_ID=4242 SLURM_ARRAY_TASK_ID=$i \\
        bash "$script" >> "$FAKE_SLURM/out" 2>&1
    done
  fi
  touch "$FAKE_SLURM/done"
) < /dev/null > /dev/null 2>&1 &
echo "Submitted batch job 4242"
"""
FAKE_SRUN = """\
#!/bin/bash
while [[ "$1" == --* ]]; do [[ "$1" == --unbuffered ]] && shift || shift 2; done
exec "$@"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    folder = tmp_path / "fake-slurm"
    folder.mkdir()
    for name, text in [("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)]:
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    return folder


def test_the_sbatch_script_asks_for_what_the_options_say(tmp_path, tiny, fake_slurm):
    slurm = SlurmOptions(
        partition="gpu",
        time_min=90,
        gpus_per_cell=2,
        cpus_per_cell=8,
        mem_gb=16,
        array_parallelism=1,
        folder=tmp_path / "logs",
        extra={"account": "lab"},
    )
    opts = options(tmp_path, executor="slurm", slurm=slurm, device="cpu")
    jobs = submit(plan(tiny, opts), opts)
    script = (tmp_path / "logs" / "4242" / "4242_submission.sh").read_text()
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --array=0-1%1",
        "#SBATCH --account=lab",
        "#SBATCH --nodes=1",
        "#SBATCH --job-name=bench-tiny-smoke",
    ]:
        assert line in script.splitlines()
    command = script.splitlines()[-1]
    assert command.startswith("srun --unbuffered") and command.endswith(
        f"{sys.executable} -u -m submitit.core._submit {tmp_path / 'logs' / '%j'}"
    )
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
    assert (fake_slurm / "calls").read_text().startswith(str(tmp_path / "logs"))


def test_the_slurm_array_job_trains_its_cell(tmp_path, tiny, fake_slurm, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_RUN", "1")
    slurm = SlurmOptions(folder=tmp_path / "logs", cpus_per_cell=1)
    opts = options(tmp_path, executor="slurm", slurm=slurm, cells=VAE)
    submit(plan(tiny, opts), opts)
    _wait_for(fake_slurm / "done")
    record = read_record(record_path(opts.results, "tiny", "smoke", VAE))
    assert record.status == "ok", (fake_slurm / "out").read_text()[-2000:]
    assert record.device.endswith("1 threads")


def test_finished_and_held_cells_are_not_submitted_and_are_said_so(tmp_path, tiny, fake_slurm):
    run_table(tiny, options(tmp_path, cells=VAE, threads_per_cell=1), log=quiet)
    held = Lease(lease_path(record_path(tmp_path / "results", "tiny", "smoke", IWAE)), "w1")
    assert held.acquire()
    try:
        slurm = SlurmOptions(folder=tmp_path / "logs", cpus_per_cell=1)
        lines = []
        opts = options(tmp_path, executor="slurm", slurm=slurm, threads_per_cell=1)
        assert run_table(tiny, opts, lines.append) == []
    finally:
        held.release()
    path = record_path(opts.results, "tiny", "smoke", VAE)
    assert f"[1/2] {VAE}: done already ({path}); not submitted" in lines
    assert f"[2/2] {IWAE}: held by w1 on {socket.gethostname()}; `bench status` follows it;" in (
        " ".join(lines)
    )
    assert "nothing to submit" in lines and not (fake_slurm / "calls").exists()


def test_slurm_without_a_slurm_client_is_one_usage_error(tmp_path, tiny, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    opts = options(tmp_path, executor="slurm", slurm=SlurmOptions(folder=tmp_path / "logs"))
    with pytest.raises(
        UsageError,
        match="^--executor slurm: no Slurm client here .*srun.*; run on a machine with one",
    ):
        submit(plan(tiny, opts), opts)


def test_a_time_limit_of_2_minutes_or_less_is_refused_before_sbatch(tmp_path, tiny, fake_slurm):
    slurm = SlurmOptions(time_min=2, folder=tmp_path / "logs")
    opts = options(tmp_path, executor="slurm", slurm=slurm)
    refused = "^--time-min 2: a cell never finishes under a limit of 2 minutes or less .*90 s"
    with pytest.raises(UsageError, match=refused + " before.*; pass --time-min 3 or more$"):
        submit(plan(tiny, opts), opts)
    assert not (fake_slurm / "calls").exists()
    opts = replace(opts, slurm=replace(slurm, time_min=3))
    assert [j.job_id for j in submit(plan(tiny, opts), opts)] == ["4242_0", "4242_1"]


def test_a_cancelled_task_is_reported_by_its_state_and_log(tmp_path):
    from bench.executors.slurm import _failure

    class Task:
        state = "CANCELLED by 0"
        paths = type("Paths", (), {"stderr": tmp_path / "7_0_log.err"})

    error = RuntimeError("Job (task=0) failed\nsrun: Force Terminated StepId=7.0")
    assert _failure(Task(), error) == f": cancelled (CANCELLED by 0); log: {tmp_path}/7_0_log.err"
    Task.state = "FAILED"
    assert _failure(Task(), error) == (
        f" failed: srun: Force Terminated StepId=7.0 (log: {tmp_path}/7_0_log.err)"
    )


def _task(job_id, folder, done_at=None, state="UNKNOWN"):
    class Task:
        paths = type("Paths", (), {"stderr": folder / f"{job_id}_log.err"})

        def done(self):
            return done_at is not None and time.monotonic() >= done_at

        def result(self):
            return Outcome(job_id, "ran")

    task = Task()
    task.job_id, task.state = job_id, state
    return task


def test_a_task_lost_while_sacct_fails_is_reported_after_the_grace_not_waited_for(
    tmp_path, fake_slurm, monkeypatch
):
    """Accounting down: a task that left the queue without a result file (killed, out of
    memory) had `bench run` wait forever, and every task after it unreported."""
    (fake_slurm / "sacct").write_text(
        "#!/bin/bash\necho 'sacct: error: Problem talking to the database: Connection refused'"
        " >&2\nexit 1\n"
    )
    (fake_slurm / "squeue").write_text("#!/bin/bash\necho 4242_1; echo 4242_2\n")  # not 4242_0
    for name in ("sacct", "squeue"):
        (fake_slurm / name).chmod(stat.S_IRWXU)
    monkeypatch.setattr(slurm_executor, "SACCT_GRACE_S", 0.5)
    monkeypatch.setattr(slurm_executor, "CHECK_S", 0.1)
    monkeypatch.setattr(slurm_executor, "POLL_S", 0.05)
    jobs = [type("Job", (), {"prefix": f"[{i}/3] c{i}"}) for i in (1, 2, 3)]
    lost, ends = _task("4242_0", tmp_path), _task("4242_1", tmp_path, time.monotonic() + 1.5)
    queued = _task("4242_2", tmp_path, time.monotonic() + 2.0)  # still queued: never lost
    lines = []
    start = time.monotonic()
    outcomes = slurm_executor._collect(list(zip(jobs, [lost, ends, queued])), True, lines.append)
    assert time.monotonic() - start < 10
    assert [o.cell for o in outcomes] == ["4242_1", "4242_2"]
    assert lines[0].startswith(
        "[1/3] c1: job 4242_0: state unknown: sacct fails (sacct: error: Problem talking to the"
        " database: Connection refused); it left the queue without a result 0.5 s ago or more;"
        f" log: {tmp_path}/4242_0_log.err; `sacct -j 4242_0` tells how it ended"
    )
    assert lines[1:] == ["[2/3] c2: job 4242_1: ran", "[3/3] c3: job 4242_2: ran"]


def _wait_for(path, seconds=120):
    start = time.monotonic()
    while not path.exists():
        assert time.monotonic() - start < seconds, f"{path} never appeared"
        time.sleep(0.2)


def test_a_preempted_task_gives_up_its_lease_and_is_requeued_with_the_same_cell(tmp_path, tiny):
    submitit = pytest.importorskip("submitit")
    opts = options(tmp_path)
    job = plan(tiny, opts)[0]
    path = lease_path(record_path(opts.results, "tiny", "smoke", job.cell.id))
    path.parent.mkdir(parents=True, exist_ok=True)
    held = lease.Lease(path, "slurm 7_0")
    assert held.acquire()
    again = CellTask().checkpoint(job)
    held._stop.set()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.args == (job,) and not path.exists()


def test_slurm_defaults_come_from_the_config_file_then_the_options(tmp_path, monkeypatch):
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "long"\ntime_min = 600\nextra = { qos = "high" }\n')
    monkeypatch.setenv("DGM_BENCH_SLURM_CONFIG", str(config))
    got = slurm_options(None, time_min=30, partition=None)
    assert (got.partition, got.time_min, got.extra) == ("long", 30, {"qos": "high"})
    config.write_text("partitoin = 'x'\n")
    with pytest.raises(UsageError, match="unknown key\\(s\\) partitoin"):
        slurm_options(None)
