"""Run the cells of a table: one task call per cell, one record per cell, then render.

A finished cell (an ok record with the same settings and seed) is skipped; an interrupted one
resumes from its checkpoint. A cell that fails (NaN loss, missing data) gets a record saying why,
and the run moves on. Each cell holds a file lock, so two `bench run` processes on the same table
never work on, or write, the same cell.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist
from filelock import FileLock, Timeout

from . import data as datasets
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
    write_record,
)
from .render import TABLES_DIR, write_table
from .spec import TableSpec, settings_for
from .tasks import Context, get_task
from .train import Checkpoint, CheckpointError, NonFiniteLoss, world


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


def run_key(settings: dict, seed: int, params: dict) -> str:
    """Identifies what a record or checkpoint was made from; a change means start the cell over."""
    blob = json.dumps([settings, seed, params], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
    raw_settings = spec.settings(opts.tier)
    device = resolve_device(opts.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    rank, size = world()
    origin = provenance()  # the code as it was when the run started, not when a cell ended
    if rank != 0:
        log = _quiet

    done = []
    for i, cell in enumerate(cells, 1):
        path = record_path(opts.results, spec.id, opts.tier, cell.id)
        key = run_key(raw_settings, opts.seed, cell.as_dict())
        if _agree(not opts.fresh and _finished(path, key)):
            log(f"[{i}/{len(cells)}] {cell.id}: done already ({path}); --fresh reruns it")
            continue
        lock = FileLock(str(path.with_name(f".{path.name}.lock")))
        path.parent.mkdir(parents=True, exist_ok=True)
        locked = True
        if rank == 0:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                locked = False
        if not _agree(locked):
            log(f"[{i}/{len(cells)}] {cell.id}: skipped, another `bench run` is running it")
            continue
        try:
            record = _run_cell(
                spec, cell, task, settings, raw_settings, key, device, opts, i, len(cells), origin
            )
            if rank == 0:
                write_record(opts.results, record)
                log(f"[{i}/{len(cells)}] {cell.id}: {_summary(spec, record)}")
            done.append(record)
        finally:
            if lock.is_locked:
                lock.release()
    if rank == 0:
        records, warnings = read_records(opts.results, spec.id, opts.tier)
        table = write_table(spec, opts.tier, records, warnings, opts.tables)
        log(f"table: {table}")
    if size > 1:
        dist.barrier()  # every process sees the records before it reports
    return done


def _quiet(*args, **kwargs) -> None:
    """The log of processes other than rank 0: one copy of each line is enough."""


def _finished(path: Path, key: str) -> bool:
    if not path.exists():
        return False
    try:
        record = read_record(path)
    except RecordError:
        return False
    return record.status == "ok" and record.settings.get("_key") == key


def _run_cell(spec, cell, task, settings, raw_settings, key, device, opts, i, n, origin) -> Record:
    folder = opts.checkpoints / spec.id / opts.tier
    ckpt = Checkpoint(folder / f"{cell.id}.{key}.pt", every=opts.checkpoint_every)
    if opts.fresh:
        ckpt.remove()
    ctx = Context(
        data_dir=opts.data_dir, device=device, seed=opts.seed, tier=opts.tier, checkpoint=ckpt,
        desc=f"[{i}/{n}] {cell.id}", download=opts.download,
        weights=folder / f"{cell.id}.weights.pt" if opts.save_weights else None,
    )  # fmt: skip
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    status, reason, result = "ok", "", None
    try:
        result = task.run(cell.as_dict(), settings, ctx)
    except datasets.DataError as e:
        status, reason = "skipped", str(e)
    except (NonFiniteLoss, CheckpointError) as e:
        status, reason = "failed", str(e)
    record = Record(
        table=spec.id, tier=opts.tier, cell=cell.id, params=cell.as_dict(), status=status,
        reason=reason, settings={**raw_settings, "_key": key}, seed=opts.seed,
        device=device_name(device), command=command_line(), started=started,
        wall_s=round(time.perf_counter() - t0, 2), **origin,
    )  # fmt: skip
    if result is not None:
        record.metrics, record.memory = result.metrics, result.memory
        record.data, record.history = result.data, result.history
        record.deterministic = _determinism(device)
        ckpt.remove()
    return record


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
