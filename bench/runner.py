"""Run the cells of a table: one task call per cell, one record per cell, then render.

A finished cell (an ok record with the same settings and seed) is skipped; an interrupted one
resumes from its checkpoint. A cell that fails (NaN loss, missing data) gets a record saying why,
and the run moves on, but an ok record is never replaced by a failed or skipped one. Each cell
holds a file lock, so two `bench run` processes on the same table never work on, or write, the
same cell. A checkpoint is removed only once its cell's record is on disk.
"""

from __future__ import annotations

import fcntl
import os
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist

from . import data as datasets
from . import fingerprint
from .errors import UsageError
from .records import (
    RESULTS_DIR,
    Record,
    RecordError,
    command_line,
    device_name,
    provenance,
    read_record,
    read_records,
    record_path,
    writable_folder,
    write_record,
)
from .render import TABLES_DIR, write_table
from .spec import SEED, TableSpec, check_cells, settings_for
from .tasks import TASKS, get_task
from .tasks.common import Context
from .train import Checkpoint, CheckpointError, NonFiniteLoss, world

SEED_LIMIT = 2**32  # NumPy's seed range; seed * 1_000_003 + epoch then fits a torch seed


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
    return torch.device(name)


def _agree(decision: bool) -> bool:
    """Under torchrun every process must run the same cells: rank 0 decides for all."""
    if world()[1] == 1:
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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


def run_table(spec: TableSpec, opts: RunOptions, log=print) -> list[Record]:
    if opts.tier not in spec.tiers:
        raise UsageError(
            f"table '{spec.id}' has no tier '{opts.tier}'; it has: {', '.join(spec.tiers)}"
        )
    cells = spec.select(opts.tier, opts.cells)
    if not cells:
        known = ", ".join(c.id for c in spec.cells(opts.tier))
        raise UsageError(f"--cells '{opts.cells}' matches no cell of {spec.id}; cells: {known}")
    task = get_task(spec.task)
    settings = settings_for(task.Settings, spec, opts.tier)
    check_cells(spec, opts.tier, task, settings, cells)  # every cell, before any trains
    offset = max(c.as_dict().get(SEED, 0) for c in cells)
    if opts.seed + offset >= SEED_LIMIT:
        raise UsageError(
            f"--seed {opts.seed} plus the tier's seed {offset} passes {SEED_LIMIT - 1}"
        )
    place = fingerprint.place()
    device = resolve_device(opts.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    rank, size = world()
    origin = provenance()  # the code as it was when the run started, not when a cell ended
    if rank != 0:
        log = _quiet
    else:
        writable_folder(opts.results / spec.id / opts.tier, "--results")
        writable_folder(opts.tables, "--tables")
        writable_folder(opts.checkpoints / spec.id / opts.tier, "--checkpoints")

    done = []
    for i, cell in enumerate(cells, 1):
        path = record_path(opts.results, spec.id, opts.tier, cell.id)
        key, made_from = cell_key(spec, cell, settings, opts)
        made_from["_place"] = place
        if _agree(not opts.fresh and _finished(path, key, place)):
            log(f"[{i}/{len(cells)}] {cell.id}: done already ({path}); --fresh reruns it")
            continue
        lock = CellLock(path.with_name(f".{path.name}.lock"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _agree(lock.acquire() if rank == 0 else True):
            log(f"[{i}/{len(cells)}] {cell.id}: skipped, another `bench run` is running it")
            continue
        try:
            record, ckpt = _run_cell(
                spec, cell, task, settings, made_from, key, device, opts, i, len(cells), origin
            )
            if rank == 0:
                record = _save(spec, record, ckpt, path, opts, log, f"[{i}/{len(cells)}] {cell.id}")
            done.append(record)
        finally:
            lock.release()
    if rank == 0:
        records, warnings = read_records(opts.results, spec.id, opts.tier)
        try:
            table = write_table(
                spec, opts.tier, records, warnings, opts.tables, results=opts.results
            )
        except OSError as e:
            raise UsageError(
                f"{opts.tables}: cannot write the table ({e.strerror or e}); the records are"
                f" saved, `bench table {spec.id} --tier {opts.tier}` renders it"
            ) from None
        log(f"table: {table}")
    if size > 1:
        dist.barrier()  # every process sees the records before it reports
    return done


def _quiet(*args, **kwargs) -> None:
    """The log of processes other than rank 0: one copy of each line is enough."""


class CellLock:
    """A non-blocking flock on a cell's `.<cell>.json.lock`, whose file is deleted on release so
    that none is left (or committed) under results/. Deleting is safe because a lock is only
    held if the locked file is still the one at the path: a process that opened the file just
    before it was deleted finds another (or no) file there and backs off."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not os.path.samestat(os.fstat(fd), os.stat(self.path)):
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: see the class docstring
            os.close(self.fd)
            self.fd = None


def _save(spec, record: Record, ckpt: Checkpoint, path: Path, opts, log, prefix: str) -> Record:
    """Write the record, then remove the checkpoint; keep an ok record a worse one would replace.

    Returns the record as it stands for this run: a write that fails is a failed cell whose
    checkpoint survives, so the same command resumes it."""
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
    log(f"{prefix}: {_summary(spec, record)}")
    return record


def _finished(path: Path, key: str, place: str) -> bool:
    """An ok record of the same key made in this checkout on this machine: records made
    elsewhere (the committed ones, on a fresh clone) are references, and the cell runs again."""
    if not path.exists():
        return False
    try:
        record = read_record(path)
    except RecordError:
        return False
    same = record.settings.get("_key") == key and record.settings.get("_place") == place
    return record.status == "ok" and same


def _run_cell(
    spec, cell, task, settings, made_from, key, device, opts, i, n, origin
) -> tuple[Record, Checkpoint]:
    folder = opts.checkpoints / spec.id / opts.tier
    ckpt = Checkpoint(folder / f"{cell.id}.{key}.pt", every=opts.checkpoint_every)
    if opts.fresh:
        ckpt.remove()
    seed = opts.seed + cell.as_dict().get(SEED, 0)  # a replicate's seed offsets the run's
    ctx = Context(
        data_dir=opts.data_dir, device=device, seed=seed, tier=opts.tier, checkpoint=ckpt,
        desc=f"[{i}/{n}] {cell.id}", download=opts.download,
        weights=folder / f"{cell.id}.weights.pt" if opts.save_weights else None,
        samples=opts.tables / "samples" / f"{spec.id}-{opts.tier}-{cell.id}.png",
    )  # fmt: skip
    started = datetime.now(UTC).isoformat(timespec="seconds")
    status, reason, detail, result = "ok", "", "", None
    try:
        result = task.run(cell.model_params, settings, ctx)
    except datasets.DataError as e:
        status, reason, detail = "skipped", str(e), _data_detail(e)
    except (NonFiniteLoss, CheckpointError) as e:
        status, reason = "failed", str(e)
    except (OSError, RuntimeError) as e:
        if not (opts.download and _raised_by_torchvision_datasets(e)):
            raise
        status, detail = "skipped", "data absent"
        reason = str(_download_error(e, cell.as_dict().get("dataset", "data"), opts.data_dir))
    record = Record(
        table=spec.id, tier=opts.tier, cell=cell.id, params=cell.as_dict(), status=status,
        reason=reason, detail=detail, settings=made_from, seed=seed,
        device=device_name(device), command=command_line(), started=started,
        wall_s=round(ckpt.wall_s(), 2), resumed=ckpt.resumed_at > 0, segments=ckpt.segments,
        **origin,
    )  # fmt: skip
    if result is not None:
        record.metrics, record.memory = result.metrics, result.memory
        record.data, record.history = result.data, result.history
        record.deterministic = _determinism(device)
    return record, ckpt


def _data_detail(error: datasets.DataError) -> str:
    """How the table says a skipped cell's data failed: corrupt (a checksum failed) or absent."""
    return "data corrupt" if getattr(error, "corrupt", False) else "data absent"


def _raised_by_torchvision_datasets(error: BaseException) -> bool:
    """Whether `error` came out of torchvision's data set code (its downloaders, under
    --download), rather than out of training."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(Path(f.filename).parent.name == "datasets" and "torchvision" in f.filename
               for f in frames)  # fmt: skip


def _download_error(error: BaseException, name: str, data_dir: Path | None) -> datasets.DataError:
    why = " ".join(str(error).split())[:200]  # torchvision lists every mirror it tried
    return datasets.DataError(
        f"{name}: --download failed ({type(error).__name__}: {why}); run with network, or"
        f" place the data set under --data-dir {data_dir} and rerun without --download"
    )


def _determinism(device: torch.device) -> str:
    if device.type == "cpu":
        return (
            "cpu, deterministic algorithms: a resumed run repeats an uninterrupted one bit for bit"
        )
    return "cuda: cuDNN/atomics may differ in the last bits between runs and after a resume"


def _summary(spec: TableSpec, record: Record) -> str:
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
