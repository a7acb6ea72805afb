"""`bench status`: where every cell of a table stands, from records and leases alone.

It imports neither torch nor pandas, so it answers in a fraction of a second while a campaign
runs, from any machine that sees the results folder. Each cell's state says what the next
`bench run` does with it (`CellState.next_run`), by the rules the run follows: a reusable record
first (reused whatever lease is beside it), then the cell's lease, then the record. What it
cannot see without torch is the reuse key (code, settings, data sums, --seed): an "ok" cell is
reused unless one of those changed.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from . import lease as leases
from .errors import UsageError
from .files import path_kind
from .lease import LeaseInfo, Unreadable, check_environment, lease_path, probe, read_campaign
from .records import RecordError, read_record, record_path
from .spec import TableSpec

# What the next `bench run` does with a cell.
REUSES, TRAINS, WAITS, TAKES_OVER, REFUSES = "reuses", "trains", "waits", "takes over", "refuses"


@dataclass(frozen=True)
class CellState:
    cell: str
    # pending, running, copied lease, stale lease, unreadable lease, ok, reference, evaluated,
    # rehearsal, failed, skipped, unreadable
    state: str
    detail: str = ""
    next_run: str = TRAINS


class CellStates(list):
    """The cells' states, and notes on the whole results folder (its campaign file)."""

    def __init__(self, states=(), notes=()):
        super().__init__(states)
        self.notes: list[str] = list(notes)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


@dataclass
class _Folder:
    """What every cell's state depends on: the folder's campaign and this host."""

    campaign: str | None
    refused: bool = False  # its campaign file is unusable: a record's campaign cannot be told
    now: float = field(default_factory=time.time)
    host: str = field(default_factory=socket.gethostname)


def cell_states(spec: TableSpec, tier: str, results: Path) -> CellStates:
    """One state per cell of the tier, each with what the next `bench run` does with it."""
    check_environment()
    notes = []
    try:
        ours = read_campaign(results)
    except UsageError as e:
        ours, refused = None, str(e)
        notes.append(f"{refused} (`bench run` refuses to start until it is fixed)")
    else:
        refused = None
    folder = _Folder(ours, refused=refused is not None)
    states = CellStates(notes=notes)
    for cell in spec.cells(tier):
        state = _cell_state(cell.id, record_path(results, spec.id, tier, cell.id), folder)
        states.append(replace(state, next_run=REFUSES) if refused else state)
    if ours is None and not refused and any(s.state == "reference" for s in states):
        states.notes.append(
            f"{results} has no campaign file yet: the next `bench run` starts a new campaign"
            " and trains every cell (its records stay references for `bench check`)"
        )
    return states


def _cell_state(cell: str, path: Path, folder: _Folder) -> CellState:
    record, unreadable = _record(path)
    held = probe(lease_path(path))
    if _reusable(record, folder):
        detail = f"{_minutes(record.wall_s)} at {record.commit[:8]}, {record.started}"
        if held is not None:
            detail += f"; {_leftover(held)}"
        return CellState(cell, "ok", detail, REUSES)
    if isinstance(held, LeaseInfo):
        return _leased(cell, held, path, folder)
    if isinstance(held, Unreadable):
        return _unreadable_lease(cell, held)
    if unreadable is not None:
        return CellState(cell, "unreadable", unreadable, TRAINS)
    if record is None:
        return CellState(cell, "pending")
    done = f"{_minutes(record.wall_s)} at {record.commit[:8]}, {record.started}"
    if record.status != "ok":
        return CellState(cell, record.status, record.detail or record.reason, TRAINS)
    if record.rehearsal:
        why = "a rehearsal (`bench run --rehearse`), never reused: the next `bench run` trains it"
        return CellState(cell, "rehearsal", f"{done}; {why}", TRAINS)
    if record.evaluated_from:
        why = "scored from a checkpoint by `bench eval`: the next `bench run` trains it"
        return CellState(cell, "evaluated", f"{done}; {why}", TRAINS)
    theirs = record.settings.get("_campaign")
    where = f"made in campaign {theirs}" if theirs else "made in no campaign"
    if folder.campaign is None:
        where += ", and this folder has none yet"
    why = f"a reference ({where}): the next `bench run` trains it"
    return CellState(cell, "reference", f"{done}; {why}", TRAINS)


def _record(path: Path):
    """The cell's record (None: none), or why it cannot be read; a record that is not a regular
    file (a FIFO would block the read) is not opened."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as e:
        return None, f"{path}: cannot look at it ({e.strerror or e})"
    if stat.S_ISLNK(mode):
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            return None, f"{path}: a symbolic link to nothing readable ({e.strerror or e})"
    if not stat.S_ISREG(mode):
        return None, f"{path}: {path_kind(mode)}, not a record; remove it and rerun its cell"
    try:
        return read_record(path), None
    except RecordError as e:
        return None, str(e)


def _reusable(record, folder: _Folder) -> bool:
    """The run's test of a finished cell (`_finished`), less the reuse key, which needs torch
    (with an unusable campaign file, any trained ok record: the run refuses them all anyway)."""
    if record is None or record.status != "ok" or record.evaluated_from or record.rehearsal:
        return False
    theirs = record.settings.get("_campaign")
    return folder.refused or (folder.campaign is not None and theirs == folder.campaign)


def _who(held: LeaseInfo) -> str:
    return f"{held.worker or held.pid} on {held.host}"


def _leftover(held: LeaseInfo | Unreadable) -> str:
    """A lease beside a reusable record: the run reuses the record and leaves the lease be."""
    name = held.path.name if isinstance(held, Unreadable) else "its lease"
    if isinstance(held, LeaseInfo) and not held.stale and not held.copied:
        return f"{_who(held)} is training it again (a --fresh run)"
    return f"{name} is left over (harmless; delete it)"


def _leased(cell: str, held: LeaseInfo, path: Path, folder: _Folder) -> CellState:
    if held.copied:
        left = _minutes(max(0.0, leases.EXPIRY - held.age))
        detail = (
            f"copied lease: {_who(held)} holds this cell in {held.folder or 'another folder'},"
            f" not in this one; the next `bench run` here waits until it expires (in {left})"
            " and then trains the cell"
        )
        return CellState(cell, "copied lease", detail, WAITS)
    if held.stale:
        detail = (
            f"{_who(held)} last seen {_minutes(held.age)} ago; the next run takes the cell over"
            " and resumes it"
        )
        return CellState(cell, "stale lease", detail, TAKES_OVER)
    since = datetime.fromtimestamp(held.since).strftime("%H:%M:%S")
    where = f"{_who(held)}, since {since}"
    if held.phase == "training" and held.steps:
        where += f", epoch {held.epoch + 1}/{held.epochs} (step {held.step}/{held.steps})"
    elif held.phase == "evaluating" and held.of_images:
        where += f", evaluating (test image {held.images}/{held.of_images})"
    else:
        where += f", {held.phase}"
    eta = held.eta(folder.now)  # None until the phase has a pace
    if eta is not None:
        where += f", about {_minutes(eta)} left"
    here = os.path.realpath(path.parent)
    if held.folder and held.host != folder.host and held.folder != here:
        left = _minutes(max(0.0, leases.EXPIRY - held.age))
        where += (
            f"; its lease was made in {held.folder}: if this folder is a copy, nobody holds the"
            f" cell here and the lease expires in {left}"
        )
    return CellState(cell, "running", where, WAITS)


def _unreadable_lease(cell: str, held: Unreadable) -> CellState:
    if held.has_files:
        detail = (
            f"({held.reason}): {held.path} is not a lease; the next `bench run` stops at this"
            " cell until it is moved away"
        )
        return CellState(cell, "unreadable lease", detail, REFUSES)
    if held.stale:
        detail = (
            f"({held.reason}): the next `bench run` replaces it and trains the cell (or delete"
            f" {held.path})"
        )
        return CellState(cell, "unreadable lease", detail, TAKES_OVER)
    left = _minutes(max(0.0, leases.EXPIRY - held.age))
    detail = (
        f"({held.reason}): it may be a lease being written; if nothing rewrites it, the next"
        f" `bench run` takes the cell over in {left} (or delete {held.path})"
    )
    return CellState(cell, "unreadable lease", detail, WAITS)


def render_status(spec: TableSpec, tier: str, states: list[CellState]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    width = max((len(s.cell) for s in states), default=0)
    kinds = max((len(s.state) for s in states), default=0)
    lines = [f"{spec.id} --tier {tier}: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    lines += [f"  warning: {note}" for note in getattr(states, "notes", ())]
    for s in states:
        lines.append(f"  {s.cell:<{width}}  {s.state:<{kinds}} {s.detail}".rstrip())
    return "\n".join(lines)
