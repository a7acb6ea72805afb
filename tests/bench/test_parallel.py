"""bench.parallel and the shared results folder: --jobs N equals serial bit for bit, a folder is
reused wherever it is, a killed worker's cell is resumed by another, the Slurm path runs."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from bench import lease, parallel
from bench.cell import Outcome, SlurmOptions
from bench.lease import CAMPAIGN_FILE, Lease, lease_path, read_lease
from bench.parallel import CellTask, slurm_options, submit
from bench.records import read_record, record_path
from bench.runner import UsageError, plan, run_table

from .conftest import IWAE, VAE, model_metrics, options, write_spec


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
    args = ["run", "tiny", "--specs", str(spec_dir), "--results", str(opts.results),
            "--tables", str(opts.tables), "--checkpoints", str(opts.checkpoints),
            "--cells", VAE, "--threads-per-cell", "1"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_ONE_EPOCH, *args],
                            capture_output=True, text=True)  # fmt: skip
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
    uninterrupted = run_table(load_spec(spec), options(tmp_path / "b", cells=VAE,
                              threads_per_cell=1), log=quiet)  # fmt: skip
    assert _numbers([record]) == _numbers(uninterrupted)


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
    slurm = SlurmOptions(partition="gpu", time_min=90, gpus_per_cell=2, cpus_per_cell=8,
                         mem_gb=16, array_parallelism=1, folder=tmp_path / "logs",
                         extra={"account": "lab"})  # fmt: skip
    opts = options(tmp_path, executor="slurm", slurm=slurm, device="cpu")
    jobs = submit(plan(tiny, opts), opts)
    script = (tmp_path / "logs" / "4242" / "4242_submission.sh").read_text()
    for line in ["#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB",
                 "#SBATCH --array=0-1%1", "#SBATCH --account=lab", "#SBATCH --nodes=1",
                 "#SBATCH --job-name=bench-tiny-smoke"]:  # fmt: skip
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
    with pytest.raises(UsageError, match="^--executor slurm: no Slurm client here .*srun.*; run"
                       " on a machine with one"):  # fmt: skip
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
    from bench.parallel import _failure

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
    monkeypatch.setattr(parallel, "SACCT_GRACE_S", 0.5)
    monkeypatch.setattr(parallel, "CHECK_S", 0.1)
    monkeypatch.setattr(parallel, "POLL_S", 0.05)
    jobs = [type("Job", (), {"prefix": f"[{i}/3] c{i}"}) for i in (1, 2, 3)]
    lost, ends = _task("4242_0", tmp_path), _task("4242_1", tmp_path, time.monotonic() + 1.5)
    queued = _task("4242_2", tmp_path, time.monotonic() + 2.0)  # still queued: never lost
    lines = []
    start = time.monotonic()
    outcomes = parallel._collect(list(zip(jobs, [lost, ends, queued])), True, lines.append)
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


def test_each_local_worker_gets_a_gpu_of_its_own(monkeypatch):
    from bench.parallel import _visible_gpus

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
