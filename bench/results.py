"""One view of a table's results: per cell, in grid order, and per metric, what was measured
(each replicate's value, their mean, sd and standard error, trained or scored by `bench eval`)
and what was published (the number, derived or printed). The renderer, the scoreboard, the
figures and the gap-to-budget series read it instead of pooling replicates each their own way;
`load` is the entry point for a notebook:

    from bench.results import load
    df = load("iwae-table", "medium")  # one row per cell: settings, metrics, errors, provenance
    df.pivot_table(index=["dataset", "layers", "k"], columns="model", values="nll")
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import RESULTS_DIR, Record, read_records
from .spec import SEED, Cell, Metric, TableSpec, get_spec
from .tasks import TASKS


def number(value: Any) -> float | None:
    """A metric value as one number: active units per layer ([16, 5] or "16+5") summed; None
    for nothing or for text that is no number."""
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple):
        return float(sum(value))
    if isinstance(value, str) and "+" in value.strip("+-"):
        try:
            return float(sum(int(v) for v in value.split("+")))
        except ValueError:
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def value(record: Record | None, metric: str) -> float | None:
    """A record's metric as one number, for an ok record (else None)."""
    if record is None or record.status != "ok":
        return None
    return number(record.metrics.get(metric))


def ok_runs(rs: Iterable[Record]) -> list[Record]:
    """The ok records among a cell's replicates (a table's, a figure's): failed and not-run
    ones count nowhere."""
    return [r for r in rs if r.status == "ok"]


def replicate_ids(spec: TableSpec, tier: str, cell: Cell) -> list[str]:
    """The runs of a table cell where the tier repeats it with several seeds (else none)."""
    want = cell.as_dict()
    return [
        c.id for c in spec.cells(tier) if SEED in c.as_dict() and c.replicate_of.as_dict() == want
    ]


def replicates(spec: TableSpec, tier: str, records: dict[str, Record], cell: Cell) -> list[Record]:
    """A table cell's records: one per seed of the tier's grid, or its own; records of seeds
    (or cells) the grid no longer has are left out."""
    ids = replicate_ids(spec, tier, cell) or [cell.id]
    return [records[i] for i in ids if i in records]


@dataclass(frozen=True)
class Measured:
    """A metric of one table cell over its ok replicates (one for a cell run once)."""

    values: list[float] = field(default_factory=list)
    planned: int = 1  # the seeds the tier runs of the cell
    evaluated: bool = False  # a value scored from a checkpoint (`bench eval`), not trained here

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def se(self) -> float | None:
        """The standard error of the mean over replicates (None for fewer than two)."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (self.n - 1) / self.n)


def measured(runs: Iterable[Record], metric: str, planned: int = 1) -> Measured:
    """A metric over a cell's records: the ok ones with a value count."""
    ok = ok_runs(runs)
    values = [v for r in ok if (v := value(r, metric)) is not None]
    return Measured(values, planned, any(r.evaluated_from for r in ok))


def pooled(rs: list[Record], metric: str) -> tuple[float | None, float | None]:
    """The mean of a metric over replicates and its standard error (None for one record)."""
    got = measured(rs, metric)
    return got.mean, got.se


@dataclass(frozen=True)
class CellResults:
    """A table cell: its records (one per seed where the tier repeats it) and its published
    values."""

    cell: Cell
    records: list[Record]
    planned: int  # the records the tier runs of it (its seeds, else 1)
    published: dict[str, Any]
    spec: TableSpec = field(repr=False)

    def measured(self, metric: str) -> Measured:
        return measured(self.records, metric, self.planned)

    def published_number(self, metric: str) -> float | None:
        return number(self.published.get(metric))

    def derived(self, metric: str) -> bool:
        return self.spec.derived_for(self.cell, metric) is not None

    def gap(self, metric: str) -> float | None:
        """|measured mean - published| where there are both."""
        mean, published = self.measured(metric).mean, self.published_number(metric)
        return None if mean is None or published is None else abs(mean - published)


def view(spec: TableSpec, tier: str, records: dict[str, Record]) -> list[CellResults]:
    """Every table cell of the tier, in grid order, with its records and published values."""
    out = []
    for cell in spec.table_cells(tier):
        ids = replicate_ids(spec, tier, cell)
        out.append(
            CellResults(
                cell,
                replicates(spec, tier, records, cell),
                len(ids) or 1,
                spec.published_for(cell),
                spec,
            )
        )
    return out


def rows(spec: TableSpec, tier: str, records: dict[str, Record]) -> list[dict[str, Any]]:
    """One dict per table cell: its grid fields, then per metric the mean over its ok
    replicates (`metric`), their standard error (`metric_se`: over seeds, or the record's own
    where it keeps one, e.g. `nll_stderr`) and the published number (`metric_published`), then
    how many replicates ran and the provenance of its records."""
    out = []
    for c in view(spec, tier, records):
        ok = ok_runs(c.records)
        row: dict[str, Any] = dict(c.cell.as_dict())
        for m in spec.metrics:
            got = c.measured(m.name)
            row[m.name] = got.mean
            row[f"{m.name}_se"] = got.se if got.n > 1 else _own_se(spec, ok, m)
            row[f"{m.name}_published"] = c.published_number(m.name)
        row["runs"] = len(ok)
        row["planned"] = c.planned
        row["status"] = _status(c.records, c.planned)
        row["evaluated"] = any(r.evaluated_from for r in ok)
        row["seeds"] = [r.seed for r in ok]
        row["commits"] = sorted({r.commit for r in c.records})
        row["wall_s"] = sum(r.wall_s for r in c.records) if c.records else None
        row["devices"] = sorted({r.device for r in c.records})
        out.append(row)
    return out


def _own_se(spec: TableSpec, ok: list[Record], metric: Metric) -> float | None:
    """The standard error a single record keeps of the metric, where its task declares one
    (the NLL's over the test images)."""
    measure = TASKS[spec.task].measure(metric.name)
    if len(ok) != 1 or measure is None or measure.stderr is None:
        return None
    return number(ok[0].metrics.get(measure.stderr))


def _status(records: list[Record], planned: int) -> str:
    """ok (every planned run ok), partial, failed, skipped or not run."""
    if not records:
        return "not run"
    ok = sum(r.status == "ok" for r in records)
    if ok == planned:
        return "ok"
    if ok:
        return "partial"
    return "skipped" if all(r.status == "skipped" for r in records) else "failed"


def load(
    table: str,
    tier: str,
    results: Path | str = RESULTS_DIR,
    specs: Path | str | None = None,
):
    """The records of a table and tier as a pandas DataFrame, one row per table cell (see
    `rows`); cells not run are rows of missing values, so the grid is always whole."""
    import pandas as pd

    spec = get_spec(table, Path(specs)) if specs else get_spec(table)
    records, _ = read_records(Path(results), spec.id, tier)
    return pd.DataFrame(rows(spec, tier, records))
