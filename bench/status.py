"""`bench status`: where every cell of a table stands, from records and leases alone.

It imports neither torch nor pandas, so it answers in a fraction of a second while a campaign
runs, from any machine that sees the results folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .lease import CAMPAIGN_FILE, lease_path, read_lease
from .records import RecordError, read_record, record_path
from .spec import TableSpec


@dataclass(frozen=True)
class CellState:
    cell: str
    state: str  # pending, running, stale lease, ok, failed, skipped, unreadable
    detail: str = ""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def cell_states(spec: TableSpec, tier: str, results: Path) -> list[CellState]:
    """One state per cell of the tier: a live lease first (the cell is being worked on), then
    its record, else pending."""
    campaign_file = results / CAMPAIGN_FILE
    words = campaign_file.read_text().split() if campaign_file.is_file() else []
    ours = words[0] if words else None
    now = time.time()
    states = []
    for cell in spec.cells(tier):
        path = record_path(results, spec.id, tier, cell.id)
        lease = read_lease(lease_path(path))
        if lease is not None and not lease.stale:
            since = datetime.fromtimestamp(lease.since).strftime("%H:%M:%S")
            where = f"{lease.worker or lease.pid} on {lease.host}, since {since}"
            if lease.phase == "training" and lease.steps:
                where += f", epoch {lease.epoch + 1}/{lease.epochs}"
                where += f" (step {lease.step}/{lease.steps})"
            elif lease.phase == "evaluating" and lease.of_images:
                where += f", evaluating (test image {lease.images}/{lease.of_images})"
            else:
                where += f", {lease.phase}"
            eta = lease.eta(now)  # None until the phase has a pace
            if eta is not None:
                where += f", about {_minutes(eta)} left"
            states.append(CellState(cell.id, "running", where))
            continue
        if lease is not None:
            states.append(CellState(
                cell.id, "stale lease",
                f"{lease.worker or lease.pid} on {lease.host} last seen {_minutes(lease.age)} ago;"
                " the next run takes the cell over and resumes it",
            ))  # fmt: skip
            continue
        if not path.exists():
            states.append(CellState(cell.id, "pending"))
            continue
        try:
            record = read_record(path)
        except RecordError as e:
            states.append(CellState(cell.id, "unreadable", str(e)))
            continue
        if record.status == "ok":
            detail = f"{_minutes(record.wall_s)} at {record.commit[:8]}, {record.started}"
            if ours is not None and record.settings.get("_campaign") != ours:
                detail += " (another campaign: a reference, `bench run` retrains it)"
        else:
            detail = record.detail or record.reason
        states.append(CellState(cell.id, record.status, detail))
    return states


def render_status(spec: TableSpec, tier: str, states: list[CellState]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    width = max(len(s.cell) for s in states)
    lines = [f"{spec.id} --tier {tier}: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    for s in states:
        lines.append(f"  {s.cell:<{width}}  {s.state:<11} {s.detail}".rstrip())
    return "\n".join(lines)
