"""A paper's claims as measured differences with standard errors and a verdict.

A claim compares twin cells (the same cell but for the fields the claim names, e.g. IWAE vs VAE
at the same k, layers and data set). Where both records hold per-image NLLs of the same test
images, the difference is paired: its standard error is that of the per-image differences, far
smaller than the two NLLs' own errors combined. A difference within two standard errors of zero
is inconclusive, and a verdict is never stronger than its tier: the smoke tier says so. Where a
tier repeats cells with several seeds, each side is the mean over its seeds, the standard error
is the seeds' spread (Welch) and the critical value Student's t at its degrees of freedom; a
match (expect = "equal") is an equivalence test: it holds only when the whole interval of the
difference lies within the claim's margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .records import Record
from .results import ok_runs, pooled, replicate_ids, replicates, value
from .spec import Cell, Claim, TableSpec, matches
from .tasks import TASKS, Measure

Z = 2.0  # standard errors a difference must clear


@dataclass(frozen=True)
class Comparison:
    claim: Claim
    group: str  # the fields the twins share, e.g. "dataset mnist, layers 1, k 5"
    a: float | None
    b: float | None
    diff: float | None
    se: float | None
    paired: bool
    verdict: str  # "holds", "does not hold", "inconclusive" or "not run"
    seeds: tuple[int, int] = (1, 1)  # records per side: > 1 where the tier repeats cells
    crit: float = Z  # standard errors the difference was judged at (Student's t over seeds)


def stderr(record: Record, measure: Measure | None) -> float | None:
    """The record's standard error of the metric, where its task declares one."""
    v = record.metrics.get(measure.stderr) if measure and measure.stderr else None
    return None if v is None else float(v)


def _same_images(a: Record, b: Record) -> bool:
    keys = ("sha256", "n_test", "notes")
    return a.seed == b.seed and all(a.data.get(k) == b.data.get(k) for k in keys)


def difference(
    a: Record, b: Record, metric: str, measure: Measure | None
) -> tuple[float, float | None, bool]:
    """a - b with its standard error; paired over per-image values of the same test images,
    where the task declares them for this metric (`measure`, bench/tasks/__init__.py)."""
    per = measure.per_item if measure else None
    per_a, per_b = (a.metrics.get(per), b.metrics.get(per)) if per else (None, None)
    if per_a and per_b and len(per_a) == len(per_b) > 1 and _same_images(a, b):
        d = [x - y for x, y in zip(per_a, per_b)]
        mean = sum(d) / len(d)
        var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
        return mean, math.sqrt(var / len(d)), True
    se_a, se_b = stderr(a, measure), stderr(b, measure)
    se = math.hypot(se_a, se_b) if se_a is not None and se_b is not None else None
    return value(a, metric) - value(b, metric), se, False


def verdict(
    expect: str, diff: float, se: float | None, crit: float = Z, margin: float = 0.0
) -> str:
    """Holds when the difference clears `crit` standard errors in the claimed direction, does not
    hold when it clears them the other way, and is inconclusive between; without a standard
    error (counts such as active units) the sign decides. "equal" is an equivalence test: it
    holds when the whole interval diff ± crit * se lies within ± margin, does not hold when it
    lies outside, and is inconclusive without a standard error."""
    if expect == "equal":
        if se is None:
            return "inconclusive"
        if abs(diff) + crit * se <= margin:
            return "holds"
        return "does not hold" if abs(diff) - crit * se > margin else "inconclusive"
    band = crit * se if se else 0.0
    if expect == "higher":
        diff = -diff  # a > b is b - a < 0
    if expect == "not lower":  # a >= b
        if diff >= 0:
            return "holds"
        return "does not hold" if diff < -band else "inconclusive"
    if diff < -band or (not band and diff < 0):
        return "holds"
    return "does not hold" if diff > band or not band else "inconclusive"


# Two-sided 95% points of Student's t by degrees of freedom (a table: no scipy in the core).
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def t_crit(df: float) -> float:
    """The critical value for a difference over few seeds: Student's t at the Welch degrees of
    freedom (interpolated in 1/df between the table's rows), never below Z."""
    rows = sorted(_T975.items())
    if df <= rows[0][0]:
        return rows[0][1]
    for (d0, t0), (d1, t1) in zip(rows, rows[1:]):
        if df <= d1:
            return max(Z, t0 + (t1 - t0) * (1 / d0 - 1 / df) / (1 / d0 - 1 / d1))
    return Z


def welch_df(se_a: float, se_b: float, n_a: int, n_b: int) -> float:
    # Welch-Satterthwaite: (se_a^2 + se_b^2)^2 / (se_a^4 / (n_a - 1) + se_b^4 / (n_b - 1))
    return (se_a**2 + se_b**2) ** 2 / (se_a**4 / (n_a - 1) + se_b**4 / (n_b - 1))


def _group(params: dict, skip: set) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items() if k not in skip)


def _tier_cells(spec: TableSpec, tier: str) -> list[Cell]:
    return list(dict.fromkeys(c.replicate_of for c in spec.cells(tier)))


def compare(spec: TableSpec, tier: str, records: dict[str, Record], claim: Claim) -> list:
    tier_cells = _tier_cells(spec, tier)
    cells = [c for c in tier_cells if matches(c.as_dict(), claim.a)]
    cells = [c for c in cells if all(c.as_dict()[k] in v for k, v in claim.where.items())]
    if claim.expect == "rising":
        return _rising(spec, tier, records, claim, cells)
    out = []
    for cell in cells:
        twin = Cell(tuple({**cell.as_dict(), **claim.b}.items()))
        a_rs, b_rs = (ok_runs(replicates(spec, tier, records, c)) for c in (cell, twin))
        group = _group(cell.as_dict(), set(claim.a))
        (va, se_a), (vb, se_b) = pooled(a_rs, claim.metric), pooled(b_rs, claim.metric)
        if va is None or vb is None:
            out.append(Comparison(claim, group, va, vb, None, None, False, "not run"))
            continue
        seeds, crit = (len(a_rs), len(b_rs)), Z
        if not replicate_ids(spec, tier, cell):
            measure = TASKS[spec.task].measure(claim.metric)
            diff, se, paired = difference(a_rs[0], b_rs[0], claim.metric, measure)
            found = verdict(claim.expect, diff, se, margin=claim.margin or 0.0)
        else:  # means over seeds, judged against their spread
            diff, paired = va - vb, False
            se = math.hypot(se_a, se_b) if se_a is not None and se_b is not None else None
            if not se:  # a side with one seed, or seeds that agree exactly: no spread to judge by
                found = "inconclusive"
            else:
                crit = t_crit(welch_df(se_a, se_b, *seeds))
                found = verdict(claim.expect, diff, se, crit, claim.margin or 0.0)
        out.append(Comparison(claim, group, va, vb, diff, se, paired, found, seeds, crit))
    return out


def _rising(spec, tier, records, claim, cells) -> list:
    """Within each group of cells that differ only in `along`, values in the grid's order."""
    order = list((spec.tiers[tier].grid or spec.grid)[claim.along])
    groups: dict[str, list] = {}
    for cell in cells:
        groups.setdefault(_group(cell.as_dict(), {claim.along, *claim.a}), []).append(cell)
    out = []
    for group, members in groups.items():
        members.sort(key=lambda c: order.index(c.as_dict()[claim.along]))
        values = [
            pooled(ok_runs(replicates(spec, tier, records, c)), claim.metric)[0] for c in members
        ]
        if any(v is None for v in values) or len(values) < 2:
            out.append(Comparison(claim, group, None, None, None, None, False, "not run"))
            continue
        steps_ok = all(y >= x for x, y in zip(values, values[1:]))
        holds = steps_ok and values[-1] > values[0]
        out.append(
            Comparison(
                claim,
                f"{group}: {' -> '.join(f'{v:g}' for v in values)}",
                values[0],
                values[-1],
                values[-1] - values[0],
                None,
                False,
                "holds" if holds else "does not hold",
            )
        )
    return out


def _se_text(c: Comparison) -> str:
    a, b = c.seeds
    how = " (paired)" if c.paired else ""
    if max(a, b) > 1:
        how = f" ({a} seeds)" if a == b else f" ({a}/{b} seeds)"
    return ("—" if c.se is None else f"{c.se:.2f}") + how


def claims_markdown(spec: TableSpec, tier: str, records: dict[str, Record]) -> str:
    """A summary line per claim, then every comparison behind it."""
    lines, rows, seeded, unjudged, crits = [], [], False, False, set()
    for claim in spec.claims:
        kind = next(m.kind for m in spec.metrics if m.name == claim.metric)

        def fmt(v: float | None, sign: str = "", kind: str = kind) -> str:
            if v is None:
                return "—"
            return f"{v:{sign}.0f}" if kind == "units" else f"{v:{sign}.2f}"

        found = compare(spec, tier, records, claim)
        label = claim.label + (f" (within ± {fmt(claim.margin)})" if claim.margin else "")
        if not found:
            lines.append(f"- **{label}**: not in this tier's grid")
            continue
        counts = {
            v: sum(c.verdict == v for c in found)
            for v in ("holds", "does not hold", "inconclusive", "not run")
        }
        summary = ", ".join(f"{v} in {n}" for v, n in counts.items() if n)
        lines.append(f"- **{label}**: {summary} of {len(found)} comparisons")
        for c in found:
            rows.append(
                {
                    "claim": claim.label,
                    "cells": c.group,
                    "a": fmt(c.a),
                    "b": fmt(c.b),
                    "a − b": fmt(c.diff, "+"),
                    "± se": _se_text(c),
                    "verdict": c.verdict,
                }
            )
        seeded = seeded or any(max(c.seeds) > 1 for c in found)
        crits |= {round(c.crit, 2) for c in found if max(c.seeds) > 1 and c.se}
        unjudged = unjudged or any(
            c.claim.expect == "equal" and not c.se and c.diff is not None for c in found
        )
    if seeded:
        lines.append(
            "- Means over seeds are compared with the seeds' spread (Welch standard error) at"
            " Student's t for its degrees of freedom"
            + (
                f" (here {', '.join(f'{t:.2f}' for t in sorted(crits))} standard errors)"
                if crits
                else ""
            )
            + ", not at 2; one seed has no spread, so no verdict."
        )
    if unjudged:
        lines.append(
            "- A match (within ± a margin) holds only when the whole 95% interval of the"
            " difference lies inside the margin; without a spread over seeds it is"
            " inconclusive."
        )
    if tier == "smoke":
        lines.append(
            "- The smoke tier trains for seconds on a sample: these verdicts test the"
            " pipeline, not the paper."
        )
    table = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else ""
    return "\n".join([*lines, "", table]).rstrip()
