"""The scoreboard, tables/README.md: one line per table and tier, from records, specs and claims
alone, so that the README need not repeat measured numbers by hand.

It imports no torch (reading records and specs never needs it), so it runs in a second on any
checkout: `bench summary`, or `python -m bench.summary` without the CLI's training imports.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from .claims import compare
from .records import RESULTS_DIR, Record, atomic_write_text, read_perf_records, read_records
from .render import TABLES_DIR, fmt_value, reproduced
from .results import number, view
from .spec import REPRODUCE_TIER, SPEC_DIR, TIERS, SpecError, TableSpec, load_spec, registry

VERDICTS = ("holds", "inconclusive", "does not hold")


def _fmt(metric, v: float) -> str:
    """A difference in the metric's format; active units (summed, maybe over seeds) as a number."""
    return f"{v:.1f}" if metric.kind == "units" else fmt_value(metric, v)


def deltas(spec: TableSpec, tier: str, records: dict[str, Record]) -> list[str]:
    """Per published metric: median and worst |measured - published| over the tier's cells
    that have both, in the metric's unit (a cell repeated over seeds counts once, its mean)."""
    out, cells = [], view(spec, tier, records)
    for m in spec.metrics:
        gaps = [(gap, c) for c in cells if (gap := c.gap(m.name)) is not None]
        diffs = [gap for gap, _ in gaps]
        derived = any(c.derived(m.name) for _, c in gaps)
        if diffs:
            median, worst = (_fmt(m, v) for v in (statistics.median(diffs), max(diffs)))
            what = m.title + (", published value derived" if derived else "")
            out.append(f"{what}: {median} / {worst} ({len(diffs)} cells)")
    return out


PIPELINE_ONLY = "smoke"  # seconds on a committed sample: it checks that the code runs, no more


def comparisons(spec: TableSpec, tier: str, records: dict[str, Record]) -> list:
    """Every comparison behind the spec's claims at this tier (bench.claims.compare)."""
    return [c for claim in spec.claims for c in compare(spec, tier, records, claim)]


def claim_counts(tier: str, found: list) -> str:
    """The tier's claim comparisons: holding / inconclusive / not holding; none for the
    pipeline-only tier, whose verdicts would read as the paper's."""
    judged = [c for c in found if c.verdict in VERDICTS]
    if tier == PIPELINE_ONLY:
        return "—" if not found else "pipeline only: not judged"
    if not judged:
        return "—" if not found else f"not run ({len(found)})"
    text = " / ".join(str(sum(c.verdict == v for c in judged)) for v in VERDICTS)
    if len(judged) < len(found):
        text += f" ({len(found) - len(judged)} not run)"
    return text


def decides(tier: str, found: list) -> str:
    """What a tier's records can say about the paper, in words: nothing for the pipeline-only
    tier, the claims a CPU budget decided, or whether the published numbers reproduce."""
    if tier == PIPELINE_ONLY:
        return "nothing about the paper: that the pipeline runs end to end"
    if tier == REPRODUCE_TIER:
        return "whether the published numbers reproduce (the paper's schedule)"
    if not found:
        return "measurements beside the paper's (no claim at this tier)"
    decided = sum(c.verdict in ("holds", "does not hold") for c in found)
    if all(c.verdict == "not run" for c in found):
        return "not run"
    if not decided:
        return "no claim decided at this budget (too short to show them)"
    return f"{decided} of {len(found)} claim comparisons decided at a CPU budget"


def reproduce_counts(spec: TableSpec, tier: str, records: dict[str, Record]) -> str:
    """Full tier: how many published numbers with a `[reproduce]` tolerance the records
    reproduce / do not; "—" for a CPU tier (no verdict there) or a spec without tolerances."""
    if tier != REPRODUCE_TIER or not spec.reproduce:
        return "—"
    judged, unrun = [], 0
    for cell in dict.fromkeys(c.replicate_of for c in spec.cells(tier)):  # not reference rows
        for m in spec.metrics:
            if (
                spec.tolerance_for(cell, m.name) is None
                or number(spec.published_for(cell).get(m.name)) is None
            ):
                continue
            verdict = reproduced(spec, tier, records, cell, m)
            if verdict is None:
                unrun += 1
            else:
                judged.append(verdict[0])
    if not judged:
        return f"not run ({unrun})"
    text = f"{sum(judged)} / {len(judged) - sum(judged)}"
    return text + (f" ({unrun} not run)" if unrun else "")


def _span(dates: list[str]) -> str:
    dates = sorted(d for d in dates if d)
    return "" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"


def provenance(records: list[Record]) -> str:
    """The commit(s) and dates of a tier's records."""
    if not records:
        return "—"
    commits: dict[str, int] = {}
    for r in records:
        name = r.commit[:8] + (" (dirty)" if r.dirty else "")
        commits[name] = commits.get(name, 0) + 1
    named = ", ".join(c if len(commits) == 1 else f"{c} ({n})" for c, n in commits.items())
    return f"{named}; {_span([r.started[:10] for r in records])}".rstrip("; ")


def links(table: str, tier: str, tables_dir: Path) -> str:
    """The rendered table and the figures `bench plot` drew for it, relative to tables/."""
    stem = f"{table}-{tier}"
    found = [(label, stem + suffix) for suffix, label in _FILES.items()]
    if tier != PIPELINE_ONLY:  # the figure spans the tiers; smoke is not on it
        found.append(("gap vs budget", f"{table}-gap-vs-budget.png"))
    return (
        ", ".join(f"[{label}]({name})" for label, name in found if (tables_dir / name).is_file())
        or "—"
    )


_FILES = {
    ".md": "table",
    ".png": "figure",
    "-vs-paper.png": "vs paper",
    "-curves.png": "curves",
    "-samples.png": "samples",
}


def summary_rows(spec: TableSpec, results: Path, tables_dir: Path) -> list[dict[str, str]]:
    rows = []
    for tier in (t for t in TIERS if t in spec.tiers):
        records, _ = read_records(results, spec.id, tier)
        runs = spec.cells(tier)
        current = [records[c.id] for c in runs if c.id in records]  # not a grid's leftovers
        ok = sum(r.status == "ok" for r in current)
        if tier == PIPELINE_ONLY:
            off = "pipeline only: no distance shown"
        else:
            off = "<br>".join(deltas(spec, tier, records)) or "—"
        found = comparisons(spec, tier, records)
        rows.append(
            {
                "table": spec.id,
                "tier": tier,
                "cells run": f"{ok} / {len(runs)}",
                "what it can decide": decides(tier, found),
                "off the published number: median / worst": off,
                "claims: holds / inconclusive / does not hold": claim_counts(tier, found),
                "full tier: reproduced / not reproduced": reproduce_counts(spec, tier, records),
                "records: commit; date": provenance(current),
                "table and figures": links(spec.id, tier, tables_dir),
            }
        )
    return rows


def _perf_line(results: Path, tables_dir: Path) -> str:
    """`bench perf`'s records are not a spec's table: one line with their commit and date."""
    found = list(read_perf_records(results)[0].values())
    if not found:
        return ""
    commits = sorted({r.get("commit", "")[:8] for r in found})
    table = "[perf.md](perf.md)" if (tables_dir / "perf.md").is_file() else "not rendered"
    return (
        f"Timings against peers (`bench perf`, not a paper's table): {len(found)} benchmarks"
        f" at {', '.join(commits)}, {_span([r.get('started', '')[:10] for r in found])};"
        f" {table}."
    )


def render_summary(
    results: Path = RESULTS_DIR, spec_dir: Path = SPEC_DIR, tables_dir: Path = TABLES_DIR
) -> str:
    import pandas as pd

    rows, invalid = [], []
    for table, path in registry(spec_dir).items():
        try:
            rows += summary_rows(load_spec(path), results, tables_dir)
        except SpecError as e:
            invalid.append(f"- `{table}`: invalid spec: {e}")
    lines = [
        "# Scoreboard: every table and tier, from its records",
        "",
        "Rendered by `bench summary` from `results/` and `bench/specs/` alone (no number is"
        " typed by hand); rerun it after any run. *cells run*: runs with an ok record of the"
        " tier's grid (a seed replicate counts as a run). *off the published number*:"
        " |measured − published| over the cells with both, in each published metric's unit (a"
        " cell's seeds pooled into their mean; active units summed over layers); a published"
        " value converted by the spec is marked derived. *claims*: the comparisons behind the"
        " spec's claims of the paper (bench/claims.py). The smoke tier trains for seconds on a"
        " committed sample: it checks that the pipeline runs, so it shows neither distances nor"
        " verdicts (its tables keep them, as pipeline checks). *reproduced*: at the full tier"
        " only, the published numbers whose |measured − published| is within the tolerance the"
        " spec takes from independent reproductions (`[reproduce]`; each table lists them), and"
        " those beyond it. *what it can decide*: what the tier's records can say about the"
        " paper. The paper, schedule and departures of each tier are in its table.",
        "",
        pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
        "",
    ]
    if (tables_dir / "gap-vs-budget.png").is_file():
        lines += [
            "[The distance to each published number against the training budget]"
            "(gap-vs-budget.png) (`python -m bench.plot`; per table, the 'gap vs budget' links):"
            " the smoke tier left out, the paper's schedules dashed, nothing extrapolated.",
            "",
        ]
    perf = _perf_line(results, tables_dir)
    if perf:
        lines += [perf, ""]
    if invalid:
        lines += ["## Specs that could not be read", "", *invalid, ""]
    return "\n".join(lines)


def write_summary(
    results: Path = RESULTS_DIR, spec_dir: Path = SPEC_DIR, tables_dir: Path = TABLES_DIR
) -> Path:
    path = tables_dir / "README.md"
    atomic_write_text(path, render_summary(results, spec_dir, tables_dir))
    return path


if __name__ == "__main__":
    print(write_summary())
    sys.exit(0)
