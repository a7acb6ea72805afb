"""One cell of a table: what a job is, running it under its lease, the record it makes.

`execute` runs one cell from a picklable `CellJob` and says what became of it (`Outcome`). A
finished cell (an ok record with the same reuse key, made in this results folder's campaign:
see bench/lease.py) is reused; an interrupted one resumes from its checkpoint. A cell that fails
(NaN loss, missing data) gets a record saying why, but an ok record is never replaced by a
failed or skipped one. A cell being trained holds a lease, so two processes or machines sharing
a results folder never train the same cell at once. A checkpoint is removed only once its cell's
record is on disk.

The runner (bench/runner.py) plans the jobs and renders the table; the executors
(bench/executors/) and `bench eval` (bench/evaluate.py) import this module and nothing here
imports them (only their registry, which imports nothing of the harness), so a new executor
depends on the cell, not on the runner. `cell_record` is the one
place a record is built, for a trained cell and an evaluated one alike.
"""

from __future__ import annotations

import os
import socket
import sysconfig
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import models

from . import curves, fingerprint
from . import data as datasets
from .curves import Curves
from .errors import UsageError
from .executors import get_executor
from .lease import (
    CAMPAIGN_FILE,
    Lease,
    LeaseInfo,
    LeaseLost,
    keep_campaign,
    lease_path,
    probe,
    wait_for,
)
from .records import (
    RESULTS_DIR,
    TABLES_DIR,
    Record,
    RecordError,
    device_name,
    read_record,
    record_path,
    write_record,
)
from .spec import SEED, Cell, TableSpec, register_plugins
from .tasks import TASKS, get_task
from .tasks.common import CellResult, Context
from .tasks.settings import REHEARSAL_SAMPLE_S
from .train import Checkpoint, CheckpointError, NonFiniteLoss, NonFiniteMetric, world


@dataclass(frozen=True)
class SlurmOptions:
    """Per-cell resources of a Slurm job (bench/executors/slurm.py reads the user's defaults
    file)."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_cell: int = 0
    cpus_per_cell: int = 2
    mem_gb: float = 8.0
    array_parallelism: int = 16
    folder: Path = Path("slurm-logs")
    max_time_min: int | None = None  # the partition's limit: a longer cell requeues
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"account": "...", "qos": "..."}


@dataclass(frozen=True)
class RunOptions:
    tier: str = "smoke"
    cells: str | None = None
    data_dir: Path | None = None
    device: str = "cpu"
    seed: int = 0
    fresh: bool = False
    download: bool = False
    save_weights: bool = False
    checkpoint_every: int = 1
    results: Path = RESULTS_DIR
    tables: Path = TABLES_DIR
    checkpoints: Path = Path("checkpoints")
    jobs: int = 1  # cells at once on this machine, each in its own worker process
    threads_per_cell: int | None = None  # default: this machine's cores / jobs (all with jobs 1)
    executor: str = "local"  # a name in bench.executors.EXECUTORS
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    command: str | None = None  # the command line records name (None: this process's argv)
    rehearse: bool = False  # the tier's exact configuration for a bounded amount of work
    stop_after: int | None = None  # epochs, then stop as if killed (a rehearsal's first process)
    tensorboard: bool = False  # each cell's curves as TensorBoard events (bench/curves.py)

    @property
    def parallel(self) -> bool:
        """Cells run in worker processes or Slurm jobs: threads fixed per cell, no progress bar."""
        return self.jobs > 1 or get_executor(self.executor).workers


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell; picklable, for a process pool or Slurm job."""

    spec: TableSpec
    cell: Cell
    settings: Any
    opts: RunOptions
    index: int
    total: int
    origin: dict  # commit, dirtiness, versions: of the code when the run started
    command: str
    campaign: str
    threads: int | None = None
    wait: bool = False  # wait for a cell another worker holds, instead of passing it by

    @property
    def prefix(self) -> str:
        return f"[{self.index}/{self.total}] {self.cell.id}"


@dataclass(frozen=True)
class Outcome:
    """What became of one job: "done" (reused), "busy" (held by another worker) or "ran"."""

    cell: str
    state: str
    record: Record | None = None


def resolve_device(name: str) -> torch.device:
    """The device to train on; under torchrun, also join the process group (gloo on CPU)."""
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"--device {name}: expected cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name} asked for, but PyTorch sees no CUDA GPU here; use --device cpu"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if name.startswith("cuda") else "gloo")
        if name.startswith("cuda"):
            name = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
            torch.cuda.set_device(torch.device(name))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1 and name.startswith("cuda"):
        name = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return torch.device(name)


def cell_key(spec: TableSpec, cell, settings, opts: RunOptions) -> tuple[str, dict]:
    """The reuse key of a cell and what it was made from: every resolved setting, the seed, the
    cell, the sums of the data files it reads and the hash of the code that computes it."""
    params = cell.as_dict()
    resolved = asdict(settings)
    sample = resolved.get("data") == "sample"
    data = {}
    if "dataset" in params:
        try:
            data = datasets.fingerprint(params["dataset"], opts.data_dir, sample=sample)
        except datasets.DataError:
            data = {}  # unknown or absent: the cell will say so when it runs
    model_names = [params.get("model"), (resolved.get("timing_reference") or {}).get("model")]
    code = fingerprint.code(TASKS[spec.task], [m for m in model_names if m])
    seed = opts.seed + params.get(SEED, 0)
    key = fingerprint.run_key(resolved, seed, params, data, code)
    return key, {**resolved, "_key": key, "_code": code, "_data": data}


def others_first(jobs: list[CellJob], run) -> list[Outcome]:
    """Run `jobs` through `run(jobs) -> [(job, outcome)]`; cells another worker holds come last:
    once every free cell is done, they are waited for (or taken over if their holder died)."""
    done = run(jobs)
    waited = run([replace(job, wait=True) for job, o in done if o.state == "busy"])
    return [o for _, o in done if o.state != "busy"] + [o for _, o in waited]


def worker_name() -> str:
    """How `bench status` names the process holding a cell."""
    slurm = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if slurm:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm {slurm}" + (f"_{task}" if task else "")
    return f"{socket.gethostname()}:{os.getpid()}"


def _agree(decision: bool) -> bool:
    """Under torchrun every process must run the same cells: rank 0 decides for all."""
    if world()[1] == 1:
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def execute(job: CellJob, log=print) -> Outcome:
    """Run one cell under its lease, or reuse its record; "busy" if another worker holds it
    (unless job.wait, in which case wait for that worker, then reuse its record or take over)."""
    spec, cell, opts = job.spec, job.cell, job.opts
    register_plugins(spec)  # a worker process starts without the run's plugins
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    device = resolve_device(opts.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    rank, _ = world()
    path = record_path(opts.results, spec.id, opts.tier, cell.id)
    key, made_from = cell_key(spec, cell, job.settings, opts)
    made_from["_campaign"] = job.campaign
    fresh = opts.fresh
    while True:
        if rank == 0:
            _keep_campaign(job, log)
        if _agree(not fresh and _finished(path, key, job.campaign)):
            log(f"{job.prefix}: done already ({path}); --fresh reruns it")
            return Outcome(cell.id, "done", read_record(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        lease = Lease(lease_path(path), worker=worker_name())
        if _agree(lease.acquire() if rank == 0 else True):
            if not _agree(not fresh and _finished(path, key, job.campaign)):
                break
            lease.release()  # another worker finished it between our look and our lease
            continue
        if not job.wait:
            return Outcome(cell.id, "busy")
        holder = lease.holder()
        who = f"{holder.worker} on {holder.host}" if holder else "another worker"
        log(f"{job.prefix}: {who} is running it; waiting (`bench status` shows its progress)")
        wait_for(lease.path)
        fresh = False  # what the other worker finished is this run's result too
    if opts.parallel:  # no progress bar there: say it started
        log(f"{job.prefix}: started by {lease.info.worker} ({torch.get_num_threads()} threads)")
    try:
        record, ckpt = _run_cell(job, made_from, key, device, lease, fresh)
        if rank == 0:
            record = _save(job, record, ckpt, path, log, lease)
    finally:
        lease.release()
    return Outcome(cell.id, "ran", record)


def _keep_campaign(job: CellJob, log) -> None:
    """The results folder still in the campaign this run started in (lease.keep_campaign)."""
    if keep_campaign(job.opts.results, job.campaign):
        log(
            f"{job.prefix}: {job.opts.results / CAMPAIGN_FILE} was removed during this run;"
            f" written again with its campaign {job.campaign}"
        )


def before_submission(job: CellJob) -> tuple[Outcome | None, str]:
    """What a cell is before a task is queued for it, and how to say so: a finished record of
    this key and campaign ("done"), or a live lease ("busy": another worker trains it). Either
    way a task would only sit in its allocation; (None, "") for a cell to submit."""
    path = record_path(job.opts.results, job.spec.id, job.opts.tier, job.cell.id)
    if not job.opts.fresh:
        key, _ = cell_key(job.spec, job.cell, job.settings, job.opts)
        if _finished(path, key, job.campaign):
            return Outcome(job.cell.id, "done", read_record(path)), f"done already ({path})"
    held = probe(lease_path(path))
    if held is None or held.stale:
        return None, ""
    who = f"{held.worker} on {held.host}" if isinstance(held, LeaseInfo) else "a live lease"
    return Outcome(job.cell.id, "busy"), f"held by {who}; `bench status` follows it"


def _save(job: CellJob, record: Record, ckpt: Checkpoint, path: Path, log, lease: Lease) -> Record:
    """Write the record, then remove the checkpoint; keep an ok record a worse one would replace.

    Returns the record as it stands for this run: a write that fails is a failed cell whose
    checkpoint survives, so the same command resumes it. A worker whose lease was taken over
    (it looked dead to another) writes nothing: the cell is the other worker's now."""
    spec, opts, prefix = job.spec, job.opts, job.prefix
    if not lease.owned():
        reason = "another worker took the cell over (this one's lease had expired)"
        log(f"{prefix}: not saved: {reason}")
        return replace(record, status="failed", reason=reason)
    _keep_campaign(job, log)  # a record only into the campaign it was made in
    try:
        kept = read_record(path) if record.status != "ok" and path.exists() else None
    except RecordError:
        kept = None
    if kept is not None and kept.status == "ok":
        log(
            f"{prefix}: {record.status}: {record.reason}; kept the ok record {path}"
            f" (seed {kept.seed}, started {kept.started}) instead of replacing it"
        )
        return record
    try:
        write_record(opts.results, record)
    except OSError as e:
        reason = f"cannot write {path} ({e.strerror or e})"
        if ckpt.path is not None and ckpt.path.exists():
            log(f"{prefix}: error: {reason}; kept the checkpoint {ckpt.path}, rerun to resume")
        else:
            log(f"{prefix}: error: {reason}; rerun the cell")
        return replace(record, status="failed", reason=reason)
    if record.status == "ok":
        ckpt.remove()
    log(f"{prefix}: {summary_line(spec, record)}")
    return record


def _finished(path: Path, key: str, campaign_id: str) -> bool:
    """An ok record of the same key made in this results folder's campaign by training: records
    made in another (the committed ones, on a fresh clone) are references, and one `bench eval`
    scored from a checkpoint is not this run's result: the cell runs again."""
    if not path.exists():
        return False
    try:
        record = read_record(path)
    except RecordError:
        return False
    same = record.settings.get("_key") == key and record.settings.get("_campaign") == campaign_id
    return record.status == "ok" and same and not record.evaluated_from and not record.rehearsal


def _run_cell(
    job: CellJob, made_from: dict, key: str, device, lease: Lease, fresh: bool
) -> tuple[Record, Checkpoint]:
    spec, cell, opts = job.spec, job.cell, job.opts
    folder = opts.checkpoints / spec.id / opts.tier
    watched = Curves(curves.folder(opts.results, spec.id, opts.tier, cell.id))
    ckpt = Checkpoint(
        folder / f"{cell.id}.{key}.pt",
        every=opts.checkpoint_every,
        on_progress=lease.progress,
        stop_after=opts.stop_after,
        on_epoch=watched if opts.tensorboard else None,
    )
    if fresh:
        ckpt.remove()
    seed = opts.seed + cell.as_dict().get(SEED, 0)  # a replicate's seed offsets the run's
    weights = folder / f"{cell.id}.weights.pt" if opts.save_weights else None
    ctx = Context(
        data_dir=opts.data_dir,
        device=device,
        seed=seed,
        tier=opts.tier,
        checkpoint=ckpt,
        desc=job.prefix,
        download=opts.download,
        weights=weights,
        samples=opts.tables / "samples" / f"{spec.id}-{opts.tier}-{cell.id}.png",
        sample_budget_s=REHEARSAL_SAMPLE_S if opts.rehearse else None,
    )
    task = get_task(spec.task)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    status, reason, detail, result = "ok", "", "", None
    try:
        result = task.run(cell.model_params, job.settings, ctx)
    except datasets.DataError as e:
        status, reason, detail = "skipped", str(e), _data_detail(e)
    except (NonFiniteLoss, NonFiniteMetric, CheckpointError, LeaseLost) as e:
        status, reason = "failed", str(e)
    except Exception as e:  # the model's code raised (a plugin's forward, a size it cannot take)
        if opts.download and _raised_by_torchvision_datasets(e):
            status, detail = "skipped", "data absent"
            reason = str(_download_error(e, cell.as_dict().get("dataset", "data"), opts.data_dir))
        elif dist.is_available() and dist.is_initialized():
            raise  # one rank alone cannot fail a DDP cell: every process stops
        else:  # this cell fails with a record, the run goes on to the next
            status, reason = "failed", describe_crash(e)
    finally:
        watched.close()  # a writer opened by the first epoch, whatever became of the cell
    record = cell_record(
        spec,
        opts.tier,
        cell,
        result,
        settings=made_from,
        seed=seed,
        device=device,
        command=job.command,
        started=started,
        clock=ckpt,
        origin=job.origin,
        status=status,
        reason=reason,
        detail=detail,
        rehearsal=opts.rehearse,
    )
    return record, ckpt


def cell_record(
    spec: TableSpec,
    tier: str,
    cell: Cell,
    result: CellResult | None,
    *,
    settings: dict,
    seed: int,
    device: torch.device,
    command: str,
    started: str,
    clock: Checkpoint,
    origin: dict,
    status: str = "ok",
    reason: str = "",
    detail: str = "",
    rehearsal: bool = False,
    evaluated_from: dict | None = None,
) -> Record:
    """The record of one cell, trained (`execute`) or scored from a checkpoint (`bench eval`):
    one builder, so the two cannot drift apart. `clock` gives the wall time and the processes
    that trained it; metrics, memory, data and history come from `result` (None for a cell that
    failed or was skipped)."""
    params = cell.as_dict()
    record = Record(
        table=spec.id,
        tier=tier,
        cell=cell.id,
        params=params,
        status=status,
        reason=reason,
        detail=detail,
        settings=settings,
        seed=seed,
        device=device_name(device),
        command=command,
        started=started,
        wall_s=round(clock.wall_s(), 2),
        cpu_s=round(clock.cpu_s(), 2),
        resumed=clock.resumed_at > 0,
        segments=clock.segments,
        plugin=models.provenance(params["model"]) if "model" in params else {},
        rehearsal=rehearsal,
        evaluated_from=evaluated_from or {},
        load=[round(x, 2) for x in os.getloadavg()],
        **origin,
    )
    if result is not None:
        record.metrics, record.memory = result.metrics, result.memory
        record.data, record.history = result.data, result.history
        record.deterministic = determinism(device)
    return record


def describe_crash(error: Exception) -> str:
    """An exception raised while a cell ran, in one line: its type, message and the innermost
    line of code outside the standard library and installed packages that raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    stdlib = sysconfig.get_paths()["stdlib"]
    ours = [f for f in frames if not ("-packages" in f.filename or f.filename.startswith(stdlib))]
    where = ""
    if ours:
        file = Path(ours[-1].filename)
        file = file.relative_to(Path.cwd()) if file.is_relative_to(Path.cwd()) else file
        where = f" at {file}:{ours[-1].lineno}"
    message = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}{where}: {message}"


def _data_detail(error: datasets.DataError) -> str:
    """How the table says a skipped cell's data failed: corrupt (a checksum failed) or absent."""
    return "data corrupt" if getattr(error, "corrupt", False) else "data absent"


def _raised_by_torchvision_datasets(error: BaseException) -> bool:
    """Whether `error` came out of torchvision's data set code (its downloaders, under
    --download), rather than out of training."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(
        Path(f.filename).parent.name == "datasets" and "torchvision" in f.filename for f in frames
    )


def _download_error(error: BaseException, name: str, data_dir: Path | None) -> datasets.DataError:
    why = " ".join(str(error).split())[:200]  # torchvision lists every mirror it tried
    return datasets.DataError(
        f"{name}: --download failed ({type(error).__name__}: {why}); run with network, or"
        f" place the data set under --data-dir {data_dir} and rerun without --download"
    )


def determinism(device: torch.device) -> str:
    """What a record says about repeating it: bit for bit on a CPU, not on CUDA."""
    if device.type == "cpu":
        return (
            "cpu, deterministic algorithms: a resumed run repeats an uninterrupted one bit for bit"
        )
    return "cuda: cuDNN/atomics may differ in the last bits between runs and after a resume"


def summary_line(spec: TableSpec, record: Record) -> str:
    """The line a run or `bench eval` prints for a cell: its status and the spec's metrics."""
    if record.status != "ok":
        return f"{record.status}: {record.reason}"
    parts = []
    for m in spec.metrics:
        value = record.metrics.get(m.name)
        if isinstance(value, float):
            parts.append(f"{m.name}={value:{m.format}}")
        elif value is not None:
            parts.append(f"{m.name}={value}")
    return f"ok in {record.wall_s:.0f}s: " + ", ".join(parts)
