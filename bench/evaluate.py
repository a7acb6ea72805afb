"""`bench eval`: score a trained model under its table's evaluation, without training.

The cell is set up as training starts it (the same data, seed, model and measured step), the
checkpoint's weights replace the initial ones, and the task's `score` measures it: the code that
scores a model after `bench run` trains it, so an evaluated record cannot drift from a trained
one. The checkpoint is a `bench run --save-weights` state_dict or a training checkpoint (its
model state), read with `weights_only=True`. The record is the one a run writes, with an empty
history and `evaluated_from` naming the file and its sha256; the table marks the cell.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from .cell import (
    RunOptions,
    cell_key,
    cell_record,
    describe_crash,
    resolve_device,
    summary_line,
    worker_name,
)
from .errors import CheckpointError, DataError, UsageError
from .lease import Lease, campaign, lease_path
from .records import (
    RESULTS_DIR,
    Record,
    RecordError,
    command_line,
    provenance,
    read_record,
    read_records,
    record_path,
    writable_folder,
    write_record,
)
from .render import TABLES_DIR, write_table
from .spec import SEED, SEED_LIMIT, Cell, TableSpec, check_cells, register_plugins, settings_for
from .tasks import get_task
from .tasks.common import Context
from .train import Checkpoint, why

WHAT = "pass a file written by `bench run --save-weights` or a training checkpoint"


@dataclass(frozen=True)
class EvalOptions:
    tier: str
    cell: str
    checkpoint: Path
    data_dir: Path | None = None
    device: str = "cpu"
    seed: int = 0  # the run's seed: the test set's preparation and the sampling follow it
    force: bool = False  # replace an ok trained record of the cell
    results: Path = RESULTS_DIR
    tables: Path = TABLES_DIR
    command: str | None = None  # the command line the record names (None: this process's argv)


def evaluate_cell(spec: TableSpec, opts: EvalOptions, log=print) -> Record:
    """Check the request, score the checkpoint, write its record and re-render the table."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("bench eval runs in one process; start it without torchrun")
    device = resolve_device(opts.device)
    task, cell = _task_and_cell(spec, opts)
    settings = settings_for(task.Settings, spec, opts.tier)
    check_cells(spec, opts.tier, task.preflight, settings, [cell])
    seed = opts.seed + cell.as_dict().get(SEED, 0)  # a replicate's seed offsets the run's
    if seed >= SEED_LIMIT:
        raise UsageError(f"--seed {opts.seed} plus the cell's seed passes {SEED_LIMIT - 1}")
    state, source = read_weights(opts.checkpoint)
    path = record_path(opts.results, spec.id, opts.tier, cell.id)
    writable_folder(path.parent, "--results")
    writable_folder(opts.tables, "--tables")
    lease = Lease(lease_path(path), worker=worker_name())
    if not lease.acquire():
        holder = lease.holder()
        who = f"{holder.worker} on {holder.host}" if holder else "another worker"
        raise UsageError(
            f"cell {cell.id} is being run by {who} (`bench status {spec.id} --tier"
            f" {opts.tier}`); evaluate it once that ends"
        )
    try:
        _refuse_to_replace(path, cell, opts.force)
        try:
            record = _score(spec, cell, task, settings, opts, device, seed, state, source)
        except (CheckpointError, DataError, UsageError):
            raise
        except Exception as e:  # the model's code raised or scored NaN: nothing is written
            raise UsageError(
                f"cell {cell.id}: cannot score --checkpoint {opts.checkpoint}"
                f" ({describe_crash(e)}); nothing written"
            ) from None
        write_record(opts.results, record)
    finally:
        lease.release()
    sha, summary = record.evaluated_from["sha256"], summary_line(spec, record)
    log(f"{cell.id}: evaluated from {opts.checkpoint} (sha256 {sha[:12]}): {summary}")
    records, warnings = read_records(opts.results, spec.id, opts.tier)
    try:
        table = write_table(spec, opts.tier, records, warnings, opts.tables, results=opts.results)
    except OSError as e:
        raise UsageError(
            f"{opts.tables}: cannot write the table ({e.strerror or e}); the record is saved,"
            f" `bench table {spec.id} --tier {opts.tier}` renders it"
        ) from None
    log(f"table: {table}")
    return record


def _task_and_cell(spec: TableSpec, opts: EvalOptions) -> tuple[Any, Cell]:
    if opts.tier not in spec.tiers:
        raise UsageError(
            f"table '{spec.id}' has no tier '{opts.tier}'; it has: {', '.join(spec.tiers)}"
        )
    register_plugins(spec)
    task = get_task(spec.task)
    if not hasattr(task, "score"):
        raise UsageError(
            f"table '{spec.id}' (task '{spec.task}') measures untrained models:"
            " there are no weights to evaluate; use `bench run`"
        )
    cells = spec.cells(opts.tier)
    cell = next((c for c in cells if c.id == opts.cell), None)
    if cell is None:
        raise UsageError(
            f"--cell {opts.cell}: not a cell of {spec.id} --tier {opts.tier}; its"
            f" cells: {', '.join(c.id for c in cells)}"
        )
    return task, cell


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state_dict in `path` and the record's `evaluated_from`: the path, what the file was
    ("weights" or "training checkpoint, epoch N") and the sha256 of the bytes loaded. A file
    that holds Python objects is refused unrun; anything else that is not weights is one line."""
    if not path.is_file():
        raise UsageError(f"--checkpoint {path}: no such file; {WHAT}")
    try:
        raw = path.read_bytes()
        content = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load's errors: an unsafe pickle, a truncated or foreign file
        raise CheckpointError(
            f"--checkpoint {path}: cannot load ({type(e).__name__}: {why(e)}); {WHAT}"
        ) from None
    state, kind = content, "weights"
    if isinstance(content, dict) and {"model", "optimizer", "epoch"} <= content.keys():
        state, kind = content["model"], f"training checkpoint, epoch {content['epoch']}"
    if not (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CheckpointError(
            f"--checkpoint {path}: holds a {type(state).__name__}, not a state_dict (parameter"
            f" names to tensors); {WHAT}"
        )
    return state, {"path": str(path), "kind": kind, "sha256": hashlib.sha256(raw).hexdigest()}


def load_weights(model: torch.nn.Module, state: dict, path: Path, cell: Cell) -> None:
    """Load `state` into the cell's model; a missing, extra or mis-shaped key is one line naming
    the first one, before anything is loaded."""
    own = model.state_dict()
    problems = []
    for key, value in own.items():
        if key not in state:
            problems.append(f"'{key}' is missing from the file")
        elif state[key].shape != value.shape:
            problems.append(
                f"'{key}' has shape {list(state[key].shape)} in the file,"
                f" {list(value.shape)} in the model"
            )
        elif state[key].dtype != value.dtype:
            problems.append(
                f"'{key}' is {state[key].dtype} in the file, {value.dtype} in the model"
            )
    problems += [f"'{key}' is in the file, not in the model" for key in state if key not in own]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"--checkpoint {path}: not weights of cell {cell.id}'s model"
            f" '{cell.as_dict().get('model')}': {problems[0]}{more}"
        )
    model.load_state_dict(state)


def _refuse_to_replace(path: Path, cell: Cell, force: bool) -> None:
    """An ok record made by training is replaced only with --force; an evaluated, failed or
    unreadable one is replaced."""
    if force or not path.exists():
        return
    try:
        kept = read_record(path)
    except RecordError:
        return
    if kept.status == "ok" and not kept.evaluated_from:
        raise UsageError(
            f"{path}: holds the ok trained record of cell {cell.id} (commit"
            f" {kept.commit[:12]}, started {kept.started}); --force replaces it"
            " with the evaluated one, or pass --results DIR"
        )


def _score(
    spec, cell: Cell, task, settings, opts: EvalOptions, device, seed: int, state, source: dict
) -> Record:
    """The cell set up as training starts it, given the checkpoint's weights, scored by the
    task; the record is a run's, with no history and `evaluated_from`."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    origin = provenance()
    run_opts = RunOptions(tier=opts.tier, data_dir=opts.data_dir, seed=opts.seed)
    _, made_from = cell_key(spec, cell, settings, run_opts)
    clock = Checkpoint(None)  # the wall time only: nothing is trained, nothing saved
    ctx = Context(
        data_dir=opts.data_dir,
        device=device,
        seed=seed,
        tier=opts.tier,
        checkpoint=clock,
        desc=cell.id,
        samples=opts.tables / "samples" / f"{spec.id}-{opts.tier}-{cell.id}.png",
    )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    prepared = task.setup(cell.model_params, settings, ctx)
    load_weights(prepared.model, state, opts.checkpoint, cell)
    prepared.has_weights = True
    result = task.score(cell.model_params, settings, ctx, prepared)
    made_from["_campaign"] = campaign(opts.results)
    return cell_record(
        spec,
        opts.tier,
        cell,
        result,
        settings=made_from,
        seed=seed,
        device=device,
        command=opts.command or command_line(),
        started=started,
        clock=clock,
        origin=origin,
        evaluated_from=source,
    )
