"""Cells as Slurm jobs through submitit (the `slurm` extra), or as submitit's local processes
(`submitit-local`: the same path, tried without a cluster).

One array job per table run, one task per cell, `--array-parallelism` at most at once. A task
that Slurm preempts or times out is requeued by submitit's checkpoint hook and resumes from the
cell's checkpoint; a cell with several GPUs gets one task per GPU, and each joins
torch.distributed from submitit's job environment (the same DDP path as torchrun).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import tomllib
from dataclasses import fields, replace
from pathlib import Path

from ..cell import CellJob, Outcome, RunOptions, SlurmOptions, before_submission, execute
from ..errors import UsageError
from ..lease import lease_path, read_lease
from ..records import record_path
from . import SIGNAL_LEAD_S, get_executor

CONFIG_ENV = "DGM_BENCH_SLURM_CONFIG"
CONFIG_PATH = Path("~/.config/dgm-bench/slurm.toml")
MAX_TIMEOUTS = 3  # submitit's requeues after a time-out (its default), then the task ends


def run(jobs: list[CellJob], opts: RunOptions, log=print) -> list[Outcome]:
    return run_submitit(jobs, opts, log)


class TimedOutTooOften(BaseException):
    """submitit's last time-out, raised from its USR2 handler mid-training. A BaseException, so
    that the cell's `except Exception` neither writes a failed record nor, finding the lease
    that `checkpoint` gave up, claims a take-over: the checkpoint stays for a longer rerun."""


class CellTask:
    """What a Slurm task runs: one cell. submitit calls `checkpoint` on preemption or time-out
    and requeues the returned submission, which resumes from the cell's checkpoint; after
    `max_timeouts` requeues the next time-out ends the task, reported as timed out."""

    def __init__(self, max_timeouts: int = 3):
        self.max_timeouts = max_timeouts

    def __call__(self, job: CellJob) -> Outcome:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per GPU: join torch.distributed like torchrun would
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        os.environ["DGM_BENCH_BARS"] = "0"
        _end_on_the_last_time_out()
        try:
            return execute(job)
        except TimedOutTooOften:
            times = self.max_timeouts + 1
            return Outcome(
                job.cell.id,
                f"timed out {times} time{'s' * (times > 1)} (limit {job.opts.slurm.time_min}"
                " min); its checkpoint is kept: rerun with a longer --time-min",
            )

    def checkpoint(self, job: CellJob):
        import submitit

        path = lease_path(record_path(job.opts.results, job.spec.id, job.opts.tier, job.cell.id))
        held = read_lease(path)
        if held is not None and held.pid == os.getpid() and held.host == socket.gethostname():
            path.unlink(missing_ok=True)  # let the requeued task take the cell at once
        return submitit.helpers.DelayedSubmission(self, job)


def _end_on_the_last_time_out() -> None:
    """Wrap submitit's preemption handler (set before the task runs): the UncompletedJobError it
    raises once the time-outs are spent becomes TimedOutTooOften (see there)."""
    from submitit.core.utils import UncompletedJobError

    handler = signal.getsignal(signal.SIGUSR2)
    if not callable(handler):
        return

    def on_usr2(signum, frame):
        try:
            handler(signum, frame)
        except UncompletedJobError as e:
            raise TimedOutTooOften(str(e)) from None

    signal.signal(signal.SIGUSR2, on_usr2)


def slurm_options(config: Path | None = None, **given) -> SlurmOptions:
    """The user's defaults file (--slurm-config, $DGM_BENCH_SLURM_CONFIG or
    ~/.config/dgm-bench/slurm.toml), then the command line's options (None: not given)."""
    path = config or Path(os.environ.get(CONFIG_ENV, CONFIG_PATH)).expanduser()
    values: dict = {}
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: not a valid TOML file ({e})") from None
    elif config is not None:
        raise UsageError(f"--slurm-config {config}: no such file")
    known = {f.name for f in fields(SlurmOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values.update({k: v for k, v in given.items() if v is not None})
    if "folder" in values:
        values["folder"] = Path(values["folder"]).expanduser()
    if not isinstance(values.get("extra", {}), dict):
        raise UsageError(f"{path}: 'extra' must be a table of sbatch options")
    return SlurmOptions(**values)


def make_executor(opts: RunOptions, n_cells: int, name: str):
    """A submitit executor for one cell per task, with the resources of `opts.slurm`."""
    try:
        import submitit
    except ImportError:
        raise UsageError(
            f"--executor {opts.executor} needs submitit: pip install -e '.[slurm]'"
        ) from None
    s = opts.slurm
    cluster = get_executor(opts.executor).cluster
    try:
        executor = submitit.AutoExecutor(
            folder=s.folder / "%j", cluster=cluster, slurm_max_num_timeout=MAX_TIMEOUTS
        )
    except RuntimeError as e:  # submitit looks for `srun` as the executor is made
        raise UsageError(
            f"--executor slurm: no Slurm client here ({e}); run on a machine with"
            " one (a login node), or use --executor submitit-local to try it here"
        ) from None
    tasks = max(1, s.gpus_per_cell)  # one process per GPU, as torchrun would start
    params = dict(
        name=name,
        timeout_min=s.time_min,
        nodes=1,
        tasks_per_node=tasks,
        cpus_per_task=max(1, s.cpus_per_cell // tasks),
        gpus_per_node=s.gpus_per_cell,
        mem_gb=s.mem_gb,
    )
    if cluster == "slurm":
        params.update(slurm_array_parallelism=min(s.array_parallelism, n_cells))
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.extra:
            params["slurm_additional_parameters"] = dict(s.extra)
    executor.update_parameters(**params)
    return executor


def submit(jobs: list[CellJob], opts: RunOptions):
    """Submit one array job (one task per cell); returns submitit's jobs, in the order given."""
    spec = jobs[0].spec
    least = get_executor(opts.executor).min_time_min
    if opts.slurm.time_min < least:
        raise UsageError(
            f"--time-min {opts.slurm.time_min}: a cell never finishes under a limit of"
            f" {least - 1} minutes or less (submitit's USR2 comes {SIGNAL_LEAD_S} s before it"
            f" and requeues the task); pass --time-min {least} or more"
        )
    executor = make_executor(opts, len(jobs), f"bench-{spec.id}-{opts.tier}")
    jobs = [
        replace(j, wait=True, threads=opts.threads_per_cell or opts.slurm.cpus_per_cell)
        for j in jobs
    ]
    try:
        return executor.map_array(CellTask(MAX_TIMEOUTS), jobs)
    except FileNotFoundError as e:
        raise UsageError(
            f"--executor slurm: {e.filename or 'sbatch'} not found; run on a machine with the"
            " Slurm client (a login node), or use --executor submitit-local to try it here"
        ) from None


def run_submitit(jobs: list[CellJob], opts: RunOptions, log=print) -> list[Outcome]:
    """Submit every cell that is neither finished nor held by a live worker (saying which are
    not submitted), then wait for the jobs and report each as it ends."""
    outcomes, queued = [], []
    for job in jobs:
        outcome, why = before_submission(job)
        if outcome is None:
            queued.append(job)
            continue
        log(f"{job.prefix}: {why}; not submitted")
        outcomes.append(outcome)
    if not queued:
        log("nothing to submit")
        return outcomes
    jobs, submitted = queued, submit(queued, opts)
    first = submitted[0].job_id.split("_")[0] if submitted else "-"
    log(
        f"submitted {len(submitted)} cells as job {first} ({opts.executor}); logs under"
        f" {opts.slurm.folder}; `bench status {jobs[0].spec.id} --tier {opts.tier}` shows"
        " them; Ctrl-C stops waiting, not the jobs"
    )
    accounted = get_executor(opts.executor).accounted
    return outcomes + _collect(list(zip(jobs, submitted, strict=True)), accounted, log)


POLL_S = 2.0  # between looks for finished tasks (submitit's result files)
CHECK_S = 30.0  # between asking Slurm about the tasks whose state submitit does not know
SACCT_GRACE_S = 600.0  # a task gone from the queue, without a result, while sacct fails


def _collect(pending: list[tuple], accounted: bool, log) -> list[Outcome]:
    """Each task's outcome as it ends, in the order they end. A Slurm task that has left the
    queue without a result while sacct fails (accounting down: submitit would wait for it
    forever, and for every task after it) is reported as of unknown state once it has been so
    for SACCT_GRACE_S seconds."""
    outcomes: list[Outcome] = []
    lost: dict[str, float] = {}  # job id -> since when it has looked lost
    why: dict[str, str] = {}
    checked = float("-inf")
    while pending:
        if accounted and time.monotonic() - checked >= CHECK_S:
            checked = time.monotonic()
            unknown = [t for _, t in pending if t.state == "UNKNOWN" and not t.done()]
            why = _lost(unknown)
            lost = {t: lost.get(t, checked) for t in why}
        still = []
        for job, task in pending:
            if task.done():
                outcomes += _outcome(job, task, log)
            elif task.job_id in lost and time.monotonic() - lost[task.job_id] >= SACCT_GRACE_S:
                log(
                    f"{job.prefix}: job {task.job_id}: state unknown: {why[task.job_id]}; it"
                    f" left the queue without a result {SACCT_GRACE_S:g} s ago or more; log:"
                    f" {task.paths.stderr}; `sacct -j {task.job_id}` tells how it ended once"
                    " accounting answers, and a rerun resumes the cell"
                )
            else:
                still.append((job, task))
        pending = still
        if pending:
            time.sleep(POLL_S)
    return outcomes


def _outcome(job: CellJob, task, log) -> list[Outcome]:
    """A finished task's outcome, reported in one line ([] for a task that gave none)."""
    try:
        outcome = task.result()
    except Exception as e:  # submitit's error: the task's traceback is in its log
        log(f"{job.prefix}: job {task.job_id}{_failure(task, e)}")
        return []
    log(f"{job.prefix}: job {task.job_id}: {outcome.state}")
    return [outcome]


def _slurm(*command: str) -> tuple[str, str | None]:
    """A Slurm client command's output, or why it failed (one line)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "", f"{command[0]}: {e}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return "", last[:200]
    return done.stdout, None


def _lost(tasks: list) -> dict[str, str]:
    """Of tasks whose state submitit does not know, those that look lost: sacct fails and squeue
    does not list them (a task still queued or running is not lost). By job id: why."""
    if not tasks:
        return {}
    ids = sorted({t.job_id.split("_")[0] for t in tasks})
    _, sacct_error = _slurm("sacct", "-n", "-X", "-o", "JobID", "-j", ",".join(ids))
    if sacct_error is None:
        return {}  # accounting answers: submitit will learn the state
    queued, squeue_error = _slurm("squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids))
    listed = set(queued.split())
    why = f"sacct fails ({sacct_error})"
    if squeue_error is not None:
        why += f", and so does squeue ({squeue_error})"
    return {t.job_id: why for t in tasks if t.job_id not in listed}


def _failure(task, error: Exception) -> str:
    """How a task without a result ended: cancelled, by Slurm's state (sacct), since the last
    line of submitit's error is then only the tail of its stderr; else that line."""
    try:
        state = task.state
    except Exception:  # accounting unreachable: the error is all there is
        state = ""
    if state.startswith("CANCELLED"):
        return f": cancelled ({state}); log: {task.paths.stderr}"
    last = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    return f" failed: {last[:200]} (log: {task.paths.stderr})"
