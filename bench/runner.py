"""Run the cells of a table: check the request and every cell before any trains, run each one
(bench/cell.py: reuse, lease, resume, record), then render the table from all its records.

The cells run where the run's executor puts them (bench/executors/: one after another here,
worker processes, Slurm jobs); each goes through `cell.execute`, so a cell's numbers do not
depend on where it ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

from . import data as datasets
from .cell import CellJob, RunOptions, resolve_device
from .curves import check_available
from .errors import UsageError
from .executors import get_executor
from .lease import campaign
from .records import (
    Record,
    command_line,
    provenance,
    read_records,
    record_path,
    writable_folder,
)
from .render import write_table
from .spec import SEED, SEED_LIMIT, Cell, TableSpec, check_cells, register_plugins, settings_for
from .tasks import get_task
from .tasks.settings import rehearsal
from .train import world


def plan(spec: TableSpec, opts: RunOptions) -> list[CellJob]:
    """Check the request and every cell before any trains; one job per selected cell."""
    if opts.tier not in spec.tiers:
        raise UsageError(
            f"table '{spec.id}' has no tier '{opts.tier}'; it has: {', '.join(spec.tiers)}"
        )
    cells = spec.select(opts.tier, opts.cells)
    if not cells:
        known = ", ".join(c.id for c in spec.cells(opts.tier))
        raise UsageError(f"--cells '{opts.cells}' matches no cell of {spec.id}; cells: {known}")
    get_executor(opts.executor)  # an unknown one is refused before anything is checked
    if opts.tensorboard:
        check_available()
    register_plugins(spec)
    task = get_task(spec.task)
    settings = settings_for(task.Settings, spec, opts.tier)
    if opts.rehearse:
        settings = rehearsal(settings, sample=_data_absent(cells, settings, opts.data_dir))
    check_cells(spec, opts.tier, task.preflight, settings, cells)  # every cell, before any trains
    offset = max(c.as_dict().get(SEED, 0) for c in cells)
    if opts.seed + offset >= SEED_LIMIT:
        raise UsageError(
            f"--seed {opts.seed} plus the tier's seed {offset} passes {SEED_LIMIT - 1}"
        )
    threads = opts.threads_per_cell
    if threads is None and opts.parallel:  # the cores shared by the cells that run at once
        threads = max(1, len(os.sched_getaffinity(0)) // min(opts.jobs, len(cells)))
    origin = provenance()  # the code as it was when the run started, not when a cell ended
    folder = opts.results / spec.id / opts.tier
    writable_folder(folder, "--results")
    writable_folder(opts.tables, "--tables")
    writable_folder(opts.checkpoints, "--checkpoints")
    for cell in cells:  # a record could never replace a folder: say so before training it
        path = record_path(opts.results, spec.id, opts.tier, cell.id)
        if path.is_dir() and not path.is_symlink():
            raise UsageError(f"{path}: a folder where the cell's record belongs; remove it")
    ours = campaign(opts.results)
    command = opts.command or command_line()
    return [
        CellJob(spec, cell, settings, opts, i, len(cells), origin, command, ours, threads)
        for i, cell in enumerate(cells, 1)
    ]


def _data_absent(cells: list[Cell], settings, data_dir: Path | None) -> bool:
    """Whether a real-data tier's data sets are missing here (a rehearsal then runs the exact
    models on the committed sample, and its report says so)."""
    if getattr(settings, "data", "sample") != "real":
        return False
    for name in {c.as_dict().get("dataset") for c in cells} - {None}:
        try:
            if not datasets.fingerprint(name, data_dir):  # empty: no file of it here
                return True
        except datasets.DataError:
            return True
    return False


def run_table(spec: TableSpec, opts: RunOptions, log=print) -> list[Record]:
    """Run (or reuse) every selected cell, then render the table from all its records."""
    resolve_device(opts.device)  # an unusable --device fails before anything is planned
    rank, size = world()
    if rank != 0:
        log = _quiet
    jobs = plan(spec, opts) if rank == 0 else None
    if size > 1:
        box = [jobs]
        dist.broadcast_object_list(box, src=0)
        jobs = box[0]
    outcomes = get_executor(opts.executor).run(jobs, opts, log)
    if rank == 0 and not opts.rehearse:  # a rehearsal renders no table: bench/rehearse.py reports
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
    return [o.record for o in outcomes if o.state == "ran" and o.record is not None]


def _quiet(*args, **kwargs) -> None:
    """The log of processes other than rank 0: one copy of each line is enough."""
