"""Render a table from its spec and records: published | measured | delta for every cell.

Only records feed the measured columns; a cell without one says "not run", never a number.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from .claims import claims_markdown
from .records import RESULTS_DIR, TABLES_DIR, Record, atomic_write_text
from .results import measured, number, replicate_ids, replicates
from .spec import REPRODUCE_TIER, Cell, Metric, TableSpec, Tolerance, matches

EVALUATED = "†"  # marks a measured value scored from a checkpoint (`bench eval`)


def parse_units(value: Any) -> list[int]:
    """Active units as a list per layer: "16+5" -> [16, 5], 19 -> [19]."""
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(v) for v in str(value).split("+")]


def fmt_value(metric: Metric, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if metric.kind == "units":
        return "+".join(str(v) for v in parse_units(value))
    if isinstance(value, int | float):
        return f"{value:{metric.format}}"
    return str(value)


def fmt_delta(metric: Metric, published: Any, measured: Any) -> str:
    if published in (None, "") or measured in (None, ""):
        return "—"
    if metric.kind == "units":
        pub, ours = parse_units(published), parse_units(measured)
        if len(pub) != len(ours):
            return "—"
        return "/".join(f"{o - p:+d}" for p, o in zip(pub, ours))
    try:
        delta = float(measured) - float(published)
    except (TypeError, ValueError):
        return "—"
    text = f"{delta:+{metric.format}}"
    direction = metric.direction(delta) if float(text) != 0 else ""
    return text + (f" ({direction})" if direction else "")


def reproduced(
    spec: TableSpec, tier: str, records: dict[str, Record], cell: Cell, metric: Metric
) -> tuple[bool, Tolerance] | None:
    """Whether a full-tier cell reproduces its published number: the mean of its ok records
    (seeds pooled; active units summed) within the spec's `[reproduce]` tolerance. None means no
    verdict: a CPU tier (it does not train as the paper did), no tolerance, no published number
    or nothing measured."""
    tolerance = spec.tolerance_for(cell, metric.name) if tier == REPRODUCE_TIER else None
    published = number(spec.published_for(cell).get(metric.name))
    if tolerance is None or published is None:
        return None
    mean = measured(replicates(spec, tier, records, cell), metric.name).mean
    if mean is None:
        return None
    return tolerance.holds(published, mean), tolerance


def verdict_text(judged: tuple[bool, Tolerance] | None) -> str:
    if judged is None:
        return ""
    ok, tolerance = judged
    return "reproduced" if ok else f"not reproduced: Δ beyond {tolerance.text}"


def measured_text(metric: Metric, record: Record | None) -> str:
    if record is None:
        return "not run"
    if record.status == "skipped":
        return f"not run ({record.detail or 'data absent'})"  # or "data corrupt"
    if record.status != "ok":
        return "failed"
    return fmt_value(metric, record.metrics.get(metric.name))


def pooled_text(metric: Metric, seeds: list[Record], planned: int = 0) -> tuple[Any, str]:
    """A cell repeated with several seeds, from its ok records: "mean ± sd (sd, n seeds)", or
    the value where all agree (a parameter count); active units, one "a+b" per seed. Fewer ok
    records than the `planned` seeds say "k of n seeds"."""
    k = len(seeds)
    count = f"{k} of {planned} seeds" if k < planned else f"{k} seeds"
    partial = f" ({count})" if k < planned else ""
    if metric.kind == "units":
        units = [r.metrics.get(metric.name) for r in seeds]
        if all(u == units[0] for u in units):
            return units[0], fmt_value(metric, units[0]) + partial
        return None, " / ".join(fmt_value(metric, u) for u in units) + f" ({count})"
    got = measured(seeds, metric.name)
    if not got.n:
        return None, "—"
    mean, sd = got.mean, got.sd or 0.0
    if float(f"{sd:{metric.format}}") == 0:  # no spread at the metric's precision
        return mean, fmt_value(metric, mean) + partial
    return mean, f"{mean:{metric.format}} ± {sd:{metric.format}} (sd, {count})"


def seeds_text(metric: Metric, seeds: list[Record], planned: int) -> tuple[Any, str]:
    """What a repeated cell shows: its ok seeds pooled, else why none is (failed, not run)."""
    ok = [r for r in seeds if r.status == "ok"]
    if ok:
        return pooled_text(metric, ok, planned)
    return None, measured_text(metric, seeds[0] if seeds else None)


def compact_text(
    metric: Metric,
    published: Any,
    measured: Any,
    text: str,
    derived: bool = False,
    verdict: str = "",
) -> str:
    """One cell a reader can scan: "measured (published, Δ)", and at the full tier "measured
    (published, Δ, reproduced)"; "not run; published P" without a measurement; the measured text
    alone where the paper gives no number. A published value converted here from another one
    reads "P derived"."""
    if published in (None, ""):
        return text
    shown = fmt_value(metric, published) + (" derived" if derived else "")
    if measured in (None, ""):
        return f"{text}; published {shown}"
    delta = fmt_delta(metric, published, measured).split(" (")[0]  # the header says which way
    return f"{text} ({shown}, {delta}{', ' + verdict if verdict else ''})"


def frame(
    spec: TableSpec, tier: str, records: dict[str, Record], wide: bool = False
) -> pd.DataFrame:
    """One row per combination of the layout's row fields. Compact: one column per published
    metric and combination of the column fields, metric by metric so that twins (a VAE cell and
    its IWAE cell) sit side by side, each cell "measured (published, Δ)". Wide: published,
    measured and Δ in three columns of their own."""
    table: dict[tuple, dict[str, str]] = {}
    # Metrics the paper did not publish (memory, step time) get one measured column.
    compared = {name for _, values in spec.published for name in values}
    prefixes: dict[str, None] = {}
    for cell in spec.table_cells(tier):
        params = cell.as_dict()
        row = table.setdefault(tuple(params[k] for k in spec.layout_rows), {})
        prefix = " ".join(str(params[k]) for k in spec.layout_columns)
        prefixes[prefix] = None
        ids = replicate_ids(spec, tier, cell)  # the tier's seeds of this cell, if it repeats it
        record = None if ids else records.get(cell.id)
        seeds = [records[i] for i in ids if i in records]
        published = spec.published_for(cell)
        for m in spec.metrics:
            judged = verdict_text(reproduced(spec, tier, records, cell, m))
            ours = record.metrics.get(m.name) if record and record.status == "ok" else None
            name = f"{prefix} {m.title}".strip()
            text = measured_text(m, record)
            if ids:
                ours, text = seeds_text(m, seeds, len(ids))
            shown = seeds if ids else [record] if record else []
            if any(r.status == "ok" and r.evaluated_from for r in shown):
                text += f" {EVALUATED}"
            if m.name not in compared:
                row[name] = text
            elif not wide:
                derived = spec.derived_for(cell, m.name) is not None
                row[name] = compact_text(m, published.get(m.name), ours, text, derived, judged)
            else:
                derived = " (derived)" if spec.derived_for(cell, m.name) else ""
                row[f"{name} published"] = fmt_value(m, published.get(m.name)) + derived
                row[f"{name} measured"] = text
                row[f"{name} Δ"] = fmt_delta(m, published.get(m.name), ours)
                if _judging(spec, tier, m):
                    row[f"{name} verdict"] = judged or "—"
    index = pd.MultiIndex.from_tuples(list(table), names=list(spec.layout_rows))
    df = pd.DataFrame(list(table.values()), index=index).fillna("—")
    if not wide:
        df = df[[f"{p} {m.title}".strip() for m in spec.metrics for p in prefixes]]
    return df.reset_index()


def _judging(spec: TableSpec, tier: str, metric: Metric | None = None) -> bool:
    """Whether this tier's table says reproduced / not reproduced (for `metric`, or any)."""
    return tier == REPRODUCE_TIER and any(
        metric is None or t.metric == metric.name for t in spec.reproduce
    )


def tolerance_lines(spec: TableSpec) -> list[str]:
    """The footer that states each `[reproduce]` tolerance and where it comes from."""
    lines = []
    for t in spec.reproduce:
        metric = next(m for m in spec.metrics if m.name == t.metric)
        cells = f", {', '.join(f'{k} = {v}' for k, v in t.where.items())}" if t.where else ""
        source = t.source + ("" if t.source.endswith(".") else ".")
        lines.append(f"- {metric.title}{cells}: {t.text}. {t.reason} Source: {source}")
    return lines


def render(
    spec: TableSpec,
    tier: str,
    records: dict[str, Record],
    warnings: list[str],
    wide: bool = False,
    results: Path = RESULTS_DIR,
) -> str:
    df = frame(spec, tier, records, wide)
    compared = [m for m in spec.metrics if any(m.name in values for _, values in spec.published)]
    lower = [m.title for m in compared if m.better == "lower"]
    higher = [m.title for m in compared if m.better == "higher"]
    better = "; ".join(
        f"{word} is better for {', '.join(titles)}"
        for word, titles in (("lower", lower), ("higher", higher))
        if titles
    )
    legend = (
        "Δ = measured − published, marked (better) or (worse) where the metric has a preferred"
        " direction."
        if wide
        else "A compared cell reads measured (published, Δ), Δ = measured − published"
        + (f"; {better}" if better else "")
        + ". `bench table --wide` gives published, measured and Δ columns of their own."
    )
    if _judging(spec, tier):
        legend += (
            " A compared cell with a tolerance also says reproduced (|Δ| within it)"
            " or not reproduced; the tolerances and their sources are listed below."
        )
    if not compared:  # measured columns only
        legend = ""
    ok = [r for r in records.values() if r.status == "ok"]
    lines = [
        f"# {spec.title} — tier `{tier}`",
        "",
        f"Published: {spec.paper.get('authors', '')} (arXiv {spec.paper['arxiv']}), "
        f"{spec.paper['table']}. Measured: records under `{results / spec.id / tier}/`, "
        f"rendered by `bench table`. {legend}".rstrip(),
        "",
        df.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    provenance = _provenance(records)
    if provenance:
        lines += ["## How these numbers were measured", "", *provenance, ""]
    if spec.claims:
        claims = claims_markdown(spec, tier, records)
        lines += ["## Claims, as measured", "", claims, ""]
    if spec.ratios:
        lines += [
            "## Claims as ratios (both cells from the records above)",
            "",
            ratio_table(spec, records),
            "",
        ]
    evaluated = [r for r in ok if r.evaluated_from]
    if evaluated:
        lines += [
            "## Cells evaluated from a checkpoint",
            "",
            f"{EVALUATED} scored by `bench eval` from a checkpoint's weights, not trained:"
            " no training history, no images/s.",
            "",
        ]
        lines += [
            f"- `{r.cell}`: evaluated from checkpoint {r.evaluated_from['sha256'][:12]}"
            f" ({r.evaluated_from['kind']}, `{r.evaluated_from['path']}`)"
            for r in evaluated
        ]
        lines.append("")
    not_ok = [r for r in records.values() if r.status != "ok"]
    if not_ok or warnings:
        lines += ["## Cells not measured", ""]
        lines += [f"- `{r.cell}`: {r.status}: {r.reason}" for r in not_ok]
        lines += [f"- {w}" for w in warnings]
        lines.append("")
    if spec.sources:
        lines += ["## Sources of the published numbers", ""]
        lines += [f"- {_where(cell)}: {source}" for cell, source in spec.sources]
        lines.append("")
    if _judging(spec, tier):
        lines += [
            f"## When a published number counts as reproduced (tier `{tier}`)",
            "",
            "Reproduced: |measured − published| within the metric's tolerance (a % is of"
            " the published value), taken from how close independent reproductions came"
            " to the paper; a cell's seeds are pooled into their mean and active units"
            " summed over layers.",
            "",
            *tolerance_lines(spec),
            "",
        ]
    outside = {r.plugin["model"]: r.plugin for r in records.values() if r.plugin}
    if outside:
        lines += ["## Models from outside this repository (rows added by the user)", ""]
        lines += [
            f"- `{name}`: `{p['constructor']}` from {p['package']} {p['version']}, source"
            f" sha256 {p['source_sha256'][:16]}; the paper publishes nothing for it, and a"
            f" claim about a paper model is also judged with `{name}` in its place"
            for name, p in sorted(outside.items())
        ]
        lines.append("")
    if spec.derived:
        lines += ["## Published values derived here (the paper does not print them)", ""]
        lines += [_derivation(spec, d) for d in spec.derived]
        lines.append("")
    departures = spec.tiers[tier].departures if tier in spec.tiers else ()
    if departures:
        lines += [f"## How tier `{tier}` departs from the paper", ""]
        lines += [f"- {d}" for d in departures]
        lines.append("")
    if spec.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in spec.notes], ""]
    if not ok:
        lines.insert(
            4, "**No cell of this tier has been run yet: every measured column says so.**\n"
        )
    return "\n".join(lines)


def _where(cell) -> str:
    return ", ".join(f"{k} = {v}" for k, v in cell.params)


def _derivation(spec: TableSpec, d) -> str:
    metric, source = (next(m for m in spec.metrics if m.name == n) for n in (d.metric, d.source))
    published = dict(spec.published)[d.cell][d.source]
    return (
        f"- {metric.title}, {_where(d.cell)}: {fmt_value(metric, d.value)} derived ="
        f" {d.formula} with {d.source} = {fmt_value(source, published)} (published) and"
        f" D = {d.dims}"
    )


def ratio_table(spec: TableSpec, records: dict[str, Record]) -> str:
    rows = []
    for ratio in spec.ratios:
        over, under = (_find(records, where) for where in (ratio.over, ratio.under or ratio.over))
        under_metric = ratio.under_metric or ratio.metric
        value, met = None, "—"
        if over and under and under.metrics.get(under_metric):
            value = over.metrics[ratio.metric] / under.metrics[under_metric]
            if ratio.target:
                op, bound = ratio.target[:2], float(ratio.target[2:])
                met = "yes" if (value <= bound if op == "<=" else value >= bound) else "no"
        measured = f"{value:.3f}" if value is not None else "not run"
        rows.append(
            {"ratio": ratio.label, "measured": measured, "target": ratio.target or "—", "met": met}
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _find(records: dict[str, Record], where: dict) -> Record | None:
    return next(
        (r for r in records.values() if r.status == "ok" and matches(r.params, where)), None
    )


def _provenance(records: dict[str, Record]) -> list[str]:
    if not records:
        return []
    rs = list(records.values())

    def common(values) -> str:
        counts = Counter(values)
        return "; ".join(
            f"{v} ({n} cells)" if len(counts) > 1 else str(v) for v, n in counts.items()
        )

    return [
        f"- command: {common(r.command for r in rs)}",
        f"- commit: {common(r.commit[:12] + (' (dirty)' if r.dirty else '') for r in rs)}",
        f"- device: {common(r.device for r in rs)}",
        f"- versions: {common(', '.join(f'{k} {v}' for k, v in r.versions.items()) for r in rs)}",
        f"- seed: {common(r.seed for r in rs)}",
        f"- data: {common(r.data.get('source') or f'none ({r.status})' for r in rs)}",
        f"- wall time: {sum(r.wall_s for r in rs) / 60:.1f} min over {len(rs)} records "
        f"({sum(r.status == 'ok' for r in rs)} ok)",
    ]


def write_table(
    spec: TableSpec,
    tier: str,
    records,
    warnings,
    tables_dir: Path = TABLES_DIR,
    wide: bool = False,
    results: Path = RESULTS_DIR,
) -> Path:
    """tables_dir/<table>-<tier>.md; its header names the results folder the records came from."""
    path = tables_dir / f"{spec.id}-{tier}.md"
    atomic_write_text(path, render(spec, tier, records, warnings, wide, results))
    return path
