"""`bench check`: measure a table's cells again and compare each metric with its committed
reference record, within the tolerances of the spec's `[check.<tier>]`.

The committed records under `results/<table>/<tier>/` are the references; a check trains into a
scratch folder and never writes over them unless asked to (`--update`, after a deliberate change).
A cell without a reference, or whose data is absent here, is reported and is not a regression;
but a check that compared nothing (other than for absent data), met corrupt data or a corrupt
reference, or found NaN on either side, fails.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .errors import UsageError
from .records import Record, read_records, record_path, write_record
from .render import write_table
from .runner import RunOptions, run_table
from .spec import CheckTier, Rule, TableSpec

FAIL, OK, NO_REFERENCE, NOT_RUN = "FAIL", "ok", "no reference", "not run"


@dataclass(frozen=True)
class Row:
    """One line of the check's table: a metric of a cell, or the whole cell when it could not
    be compared (no reference, data absent, a failed run)."""

    cell: str
    metric: str
    verdict: str
    reference: str = ""
    now: str = ""
    delta: str = ""
    tolerance: str = ""
    why: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == FAIL


@dataclass
class Report:
    """What one table's check found, before it is printed (and what tests read)."""

    table: str
    tier: str
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> the rule's reason
    references: list[Record] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.failed]

    @property
    def compared(self) -> list[Row]:
        """The metric rows: a reference and a measurement judged against each other."""
        return [r for r in self.rows if r.verdict in (OK, FAIL) and not r.metric.startswith("(")]


def describe(rule: Rule) -> str:
    """The tolerance as the table prints it, e.g. '±0.1%, ±0.5', 'exact', '<= 0.0001'."""
    if rule.skip:
        return "not checked"
    parts = ["exact"] if rule.exact else []
    if rule.rel:
        parts.append(f"±{100 * rule.rel:.3g}%")
    if rule.abs_tol:
        parts.append(f"±{rule.abs_tol:.3g}")
    if rule.at_most is not None:
        parts.append(f"<= {rule.at_most:.3g}")
    if rule.at_least is not None:
        parts.append(f">= {rule.at_least:.3g}")
    return ", ".join(parts)


def _numbers(value: Any) -> list[float] | None:
    """A metric as a list of numbers (a scalar is a list of one), or None if it is not one."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        return None
    return [float(v) for v in items]


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def judge(rule: Rule, reference: Any, now: Any) -> tuple[bool, str, str]:
    """(within tolerance, Δ as printed, why not) for one metric under one rule."""
    now_n = _numbers(now)
    ref_n = _numbers(reference)
    if now_n is None or any(not math.isfinite(v) for v in now_n):
        return False, "", f"measured {_show(now)}"
    if ref_n is not None and any(not math.isfinite(v) for v in ref_n):
        return False, "", f"reference is {_show(reference)}"
    delta = ""
    if ref_n is not None and len(ref_n) == len(now_n):
        diffs = [n - r for n, r in zip(now_n, ref_n)]
        delta = ", ".join(f"{d:+.3g}" for d in diffs)
    if rule.banded:
        if ref_n is None:
            return False, delta, f"reference is {_show(reference)}"
        if len(ref_n) != len(now_n):
            return False, delta, "a different number of values"
        for r, n in zip(ref_n, now_n):
            if rule.exact and n != r:
                return False, delta, "differs"
            if not rule.exact and abs(n - r) > rule.abs_tol + rule.rel * abs(r):
                return False, delta, "outside the band"
    if rule.at_most is not None and max(now_n) > rule.at_most:
        return False, delta, f"above {rule.at_most:.3g}"
    if rule.at_least is not None and min(now_n) < rule.at_least:
        return False, delta, f"below {rule.at_least:.3g}"
    return True, delta, ""


def _settings_moved(reference: Record, now: Record) -> str:
    """The settings (or seed) the reference was made with that differ now, as one phrase. Only
    settings both records name: one added since (with a default that keeps the old behaviour)
    is not a change."""
    ref, cur = reference.settings, now.settings
    moved = [
        f"{k}: {ref[k]!r} -> {cur[k]!r}"
        for k in sorted(ref.keys() & cur.keys())
        if not k.startswith("_") and ref[k] != cur[k]
    ]
    if reference.seed != now.seed:
        moved.append(f"seed: {reference.seed} -> {now.seed}")
    return "; ".join(moved)


def compare(
    spec: TableSpec,
    tier: str,
    cells: list[str],
    references: dict[str, Record],
    fresh: dict[str, Record],
    unreadable: dict[str, str] | None = None,
) -> Report:
    """Judge every metric of every cell; failing rows first, in cell order otherwise.
    `unreadable` maps a cell to why its reference file could not be read: that fails, as does
    data found corrupt, and a check that compared nothing for another reason than absent data."""
    unreadable = unreadable or {}
    check: CheckTier = spec.checks[tier]
    report = Report(spec.id, tier)
    report.skipped = {n: r.reason for n, r in check.rules.items() if r.skip}
    rows = []
    for cell in cells:
        now, ref = fresh.get(cell), references.get(cell)
        if now is None or now.status == "failed":
            why = now.reason if now is not None else "no record was written"
            rows.append(Row(cell, "(run)", FAIL, why=why))
            continue
        if now.status != "ok" and now.detail == "data corrupt":
            rows.append(Row(cell, "(run)", FAIL, why=now.reason))
            continue
        if now.status != "ok":
            rows.append(Row(cell, "(run)", NOT_RUN, why=now.detail or now.reason))
            continue
        if cell in unreadable:
            rows.append(Row(cell, "(reference)", FAIL, why=unreadable[cell]))
            continue
        if ref is None or ref.status != "ok":
            why = "no committed record" if ref is None else f"the committed record is {ref.status}"
            rows.append(Row(cell, "(all)", NO_REFERENCE, why=why))
            continue
        report.references.append(ref)
        if moved := _settings_moved(ref, now):
            rows.append(Row(cell, "(settings)", FAIL, why=f"made with other settings: {moved}"))
            continue
        for name, rule in check.rules.items():
            if rule.skip or (name not in ref.metrics and name not in now.metrics):
                continue  # a metric this kind of cell does not have (e.g. an inverse's error)
            ok, delta, why = judge(rule, ref.metrics.get(name), now.metrics.get(name))
            rows.append(
                Row(
                    cell,
                    name,
                    OK if ok else FAIL,
                    _show(ref.metrics.get(name)),
                    _show(now.metrics.get(name)),
                    delta,
                    describe(rule),
                    why,
                )
            )
    report.rows = sorted(rows, key=lambda r: not r.failed)  # stable: cell order otherwise
    if not report.compared and not report.failed and any(r.verdict != NOT_RUN for r in rows):
        report.rows.insert(0, Row("(every cell)", "(none)", FAIL, why=NOTHING_COMPARED))
    return report


NOTHING_COMPARED = "nothing compared: no cell has both a reference and a new measurement"


def render_report(report: Report, where: Path) -> str:
    """The check as text: which references, one table, and a one-line verdict."""
    commits = sorted({r.commit[:8] + (" (dirty)" if r.dirty else "") for r in report.references})
    lines = [
        f"{report.table} --tier {report.tier}: references {where}/"
        + (f" (commit {', '.join(commits)})" if commits else "")
    ]
    headers = ["cell", "metric", "reference", "now", "Δ", "tolerance", "verdict"]
    table = [
        [
            r.cell,
            r.metric,
            r.reference,
            r.now,
            r.delta,
            r.tolerance,
            r.verdict + (f": {r.why}" if r.why else ""),
        ]
        for r in report.rows
    ]
    lines.append(tabulate(table, headers, tablefmt="simple", disable_numparse=True))
    if report.skipped:
        lines.append("not checked: " + "; ".join(f"{k} ({v})" for k, v in report.skipped.items()))
    checked = report.compared
    absent = {r.cell for r in report.rows if r.verdict in (NO_REFERENCE, NOT_RUN)}
    if report.failed:
        bad = [r for r in report.failed if r in checked]
        cells = [r for r in report.failed if r not in checked and r.why != NOTHING_COMPARED]
        parts = [f"{len(bad)} of {len(checked)} metrics outside tolerance"] if checked else []
        if cells:
            parts.append(f"{len(cells)} cells failed without a metric compared (see their rows)")
        if len(bad) + len(cells) < len(report.failed):
            parts.append(NOTHING_COMPARED)
        summary = "FAIL: " + "; ".join(parts)
    elif checked:
        summary = f"ok: all {len(checked)} metrics within tolerance"
    else:
        summary = "nothing compared: every cell's data is absent here (not a failure)"
    if absent:
        summary += f"; {len(absent)} cells not compared (no reference, or not run)"
    lines.append(summary)
    return "\n".join(lines)


def check_table(
    spec: TableSpec,
    tier: str,
    cells: str | None,
    opts: RunOptions,
    references: Path,
    update: Path | None = None,
    log=print,
) -> Report:
    """Run the cells into `opts`' scratch folders (reusing records of this code there), then
    compare with the references under `references`. `update` (a tables folder) copies the fresh
    records over the references and re-renders the table there."""
    if tier not in spec.checks:
        raise UsageError(
            f"table '{spec.id}' has no [check.{tier}] tolerances in {spec.path}; add them"
            " (README, 'Regression checks')"
        )
    if opts.results.resolve() == references.resolve():
        raise UsageError("--work must not hold the references (--results): a check runs apart")
    chosen = spec.select(tier, cells)
    run_table(spec, replace(opts, tier=tier, cells=cells), log=log)
    fresh, _ = read_records(opts.results, spec.id, tier)
    committed, warnings = read_records(references, spec.id, tier)
    for w in warnings:
        log(f"warning: {w}")
    ids = [c.id for c in chosen]
    unreadable = {}
    for cell in ids:  # a reference file that is there but unreadable is not "no reference"
        path = record_path(references, spec.id, tier, cell)
        if cell not in committed and path.exists():
            why = next((w for w in warnings if w.startswith(f"{path}:")), "unreadable")
            unreadable[cell] = f"corrupt reference: {why}"
    report = compare(spec, tier, ids, committed, fresh, unreadable)
    if update is not None:
        _update(spec, tier, ids, report, fresh, references, update, log)
    return report


def _update(spec, tier, ids, report, fresh, references: Path, tables: Path, log) -> None:
    """Write the fresh ok records as the new references, say what moved, re-render the table."""
    written = [fresh[c] for c in ids if c in fresh and fresh[c].status == "ok"]
    for record in written:
        write_record(references, record)
    moved = [f"{r.cell} {r.metric}: {r.reference} -> {r.now}" for r in report.failed]
    what = "moved " + "; ".join(moved) if moved else "none moved beyond its tolerance"
    log(f"updated {len(written)} references under {references / spec.id / tier}/: {what}")
    if any(r.dirty for r in written):
        log(
            "warning: the code differs from its commit; commit it and update again so that the"
            " references name the commit they came from"
        )
    records, warnings = read_records(references, spec.id, tier)
    log(f"table: {write_table(spec, tier, records, warnings, tables, results=references)}")


def scratch_options(work: Path, **changes) -> RunOptions:
    """Where a check trains: results, tables and checkpoints all under `work`."""
    return RunOptions(
        results=work / "results",
        tables=work / "tables",
        checkpoints=work / "checkpoints",
        **changes,
    )


def temporary_work() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-check-"))


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
