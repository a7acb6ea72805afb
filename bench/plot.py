"""Figures from records: the claim figure a spec's `[plot]` declares, measured vs published for
any table, training curves, the sample grids of generative models, and the distance to each
paper against the training budget across tiers (the series from bench/budget.py).

Like tables, figures are drawn from records only, so they can be redrawn at any time. Each
`*_figure` builder returns the Figure, its axes and series named by gid (so tests can check what
a reader would look for), and each `plot_*` wrapper saves it as a PNG.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from statistics import mean, median
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from . import budget  # noqa: E402
from .records import RESULTS_DIR, TABLES_DIR, Record  # noqa: E402
from .render import fmt_value, parse_units  # noqa: E402
from .results import number, ok_runs  # noqa: E402
from .spec import SPEC_DIR, Cell, Metric, TableSpec, load_spec, registry  # noqa: E402

MARKERS = "os^Dv<>PX*"
MAX_LABELS = 3  # outliers named in a measured-vs-published panel


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _save(fig: Figure | None, path: Path) -> Path | None:
    return save_figure(fig, path) if fig is not None else None


def _key(params: dict[str, Any], fields: tuple[str, ...]) -> tuple:
    return tuple(params.get(f) for f in fields)


def _name(fields: tuple[str, ...], key: tuple) -> str:
    """How a panel or series is titled: strings as they are, numbers with their field."""
    return ", ".join(v if isinstance(v, str) else f"{f} {v}" for f, v in zip(fields, key))


def _sorted(spec: TableSpec, fields: tuple[str, ...], keys) -> list[tuple]:
    """Keys in the order of the spec's grids (the table's order), unknown values last."""
    order = {f: list(spec.grid.get(f, ())) for f in fields}
    for tier in spec.tiers.values():
        for f in fields:
            order[f] += [v for v in (tier.grid or {}).get(f, ()) if v not in order[f]]

    def rank(key):
        return [
            (order[f].index(v), "") if v in order[f] else (len(order[f]), str(v))
            for f, v in zip(fields, key)
        ]

    return sorted(set(keys), key=rank)


def _cells(spec: TableSpec, ok: list[Record]) -> list[Cell]:
    """The cells whose published values a figure shows: the table's cells for the records' tier."""
    tier = ok[0].tier
    if tier in spec.tiers:
        return spec.table_cells(tier)
    return [Cell(tuple(r.params.items())) for r in ok]


def _suptitle(fig: Figure, spec: TableSpec, ok: list[Record], what: str = "") -> None:
    devices = "; ".join(sorted({r.device for r in ok if r.device}))
    tier = ", ".join(sorted({r.tier for r in ok}))
    fig.suptitle(f"{spec.title}{what} (tier {tier})\n{devices}", fontsize=9)


def _y_title(metric: Metric, values: list) -> str:
    layered = metric.kind == "units" and any(len(parse_units(v)) > 1 for v in values if v)
    return f"{metric.title}, all layers" if layered else metric.title


def _panel_grid(n_y: int, n_panels: int, width: float):
    """Axes for rows of y metrics by columns of panels, and at(i, j) to find one; a single panel's
    metrics go side by side instead (`side`), as a reader compares them."""
    side = n_panels == 1 and n_y > 1
    nrow, ncol = (1, n_y) if side else (n_y, n_panels)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(max(width * ncol, 6.5), 3.3 * nrow + 1.3),
        squeeze=False,
        layout="constrained",
    )

    def at(i: int, j: int):
        return axes[0][i] if side else axes[i][j]

    return fig, at, side


def _legend(fig: Figure, handles: list) -> None:
    """One legend under all panels, in as many columns as the figure's width holds."""
    ncol = max(1, min(len(handles), int(fig.get_figwidth() // 2.6)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def claim_figure(spec: TableSpec, records: dict[str, Record]) -> Figure | None:
    """The figure of the spec's `[plot]`: what the table claims, at a glance."""
    if spec.plot is None or not ok_runs(records.values()):
        return None
    return _lines(spec, records) if spec.plot.kind == "lines" else _bars(spec, records)


def _lines(spec: TableSpec, records: dict[str, Record]) -> Figure:
    """Each y against x, a line per series: measured solid (± standard error where the spec names
    one), published dashed in the same colour; several records at one x are averaged, each shown."""
    plot, ok = spec.plot, ok_runs(records.values())
    metrics = {m.name: m for m in spec.metrics}
    x_metric = metrics.get(plot.x)
    cells = _cells(spec, ok)
    panels = _sorted(spec, plot.panels, [_key(r.params, plot.panels) for r in ok])
    series = _sorted(spec, plot.series, [_key(r.params, plot.series) for r in ok])
    colours = {s: f"C{i % 10}" for i, s in enumerate(series)}

    def x_of(params: dict, values: dict) -> float | None:
        return number(values.get(plot.x)) if x_metric else params.get(plot.x)

    fig, at, side = _panel_grid(len(plot.y), len(panels), 4.0)
    drew_published = drew_error = False
    for i, y_name in enumerate(plot.y):
        m = metrics[y_name]
        for j, panel in enumerate(panels):
            ax = at(i, j)
            ax.set_gid(f"{y_name} | {_name(plot.panels, panel)}")
            xs_seen = set()
            for s in series:
                colour, label = colours[s], _name(plot.series, s) or "measured"
                rs = [
                    r
                    for r in ok
                    if _key(r.params, plot.panels) == panel and _key(r.params, plot.series) == s
                ]
                by_x: dict[float, list[tuple[float, float | None]]] = {}
                for r in rs:
                    x, y = x_of(r.params, r.metrics), number(r.metrics.get(y_name))
                    if x is not None and y is not None:
                        err = r.metrics.get(plot.error.get(y_name, ""))
                        by_x.setdefault(x, []).append((y, err))
                xs = sorted(by_x)
                xs_seen.update(xs)
                ys = [mean(y for y, _ in by_x[x]) for x in xs]
                ax.plot(xs, ys, "o-", color=colour, lw=1.5, ms=4, gid=f"measured {label}")
                for x in xs:
                    if len(by_x[x]) > 1:
                        ax.plot(
                            [x] * len(by_x[x]),
                            [y for y, _ in by_x[x]],
                            ".",
                            color=colour,
                            alpha=0.6,
                            gid=f"records {label}",
                        )
                errs = [by_x[x][0][1] if len(by_x[x]) == 1 else None for x in xs]
                if any(e is not None for e in errs):
                    drew_error = True
                    ax.errorbar(
                        xs,
                        ys,
                        yerr=[e or 0 for e in errs],
                        fmt="none",
                        ecolor=colour,
                        capsize=3,
                        lw=1,
                        gid=f"stderr {label}",
                    )
                published = []
                for c in cells:
                    params = c.as_dict()
                    if _key(params, plot.panels) != panel or _key(params, plot.series) != s:
                        continue
                    values = spec.published_for(c)
                    x, y = x_of(params, values), number(values.get(y_name))
                    if x is not None and y is not None:
                        published.append((x, y))
                if published:
                    drew_published = True
                    xs_seen.update(x for x, _ in published)
                    px, py = zip(*sorted(published))
                    ax.plot(
                        px,
                        py,
                        "s--",
                        color=colour,
                        mfc="none",
                        lw=1.2,
                        ms=4,
                        gid=f"published {label}",
                    )
            if plot.log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xticks(sorted(xs_seen), [f"{x:g}" for x in sorted(xs_seen)])
            if plot.y_from_zero:
                ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if (i == 0 or side) and plot.panels:
                ax.set_title(_name(plot.panels, panel), fontsize=9)
            if i == len(plot.y) - 1 or side:
                ax.set_xlabel(x_metric.title if x_metric else plot.x)
            if j == 0:
                ax.set_ylabel(_y_title(m, [r.metrics.get(y_name) for r in ok]))
    handles = [
        Line2D(
            [],
            [],
            color=colours[s],
            marker="o",
            lw=1.5,
            ms=4,
            label=(
                f"{_name(plot.series, s)}, measured" if drew_published else _name(plot.series, s)
            ).lstrip(", ")
            or "measured",
        )
        for s in series
    ]
    if drew_published:
        handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                ls="--",
                marker="s",
                mfc="none",
                ms=4,
                label="published (dashed, same colour)",
            )
        )
    if drew_error:
        handles.append(
            Line2D([], [], color="0.3", marker="|", ls="none", ms=10, label="± 1 standard error")
        )
    _legend(fig, handles)
    _suptitle(fig, spec, ok)
    return fig


def _bars(spec: TableSpec, records: dict[str, Record]) -> Figure:
    """Per x (a model), the measured bar beside the published one: its records' mean, each record
    a dot and their range a whisker where there are several (seeds), else ± its standard error."""
    plot, ok = spec.plot, ok_runs(records.values())
    metrics = {m.name: m for m in spec.metrics}
    cells = _cells(spec, ok)
    panels = _sorted(spec, plot.panels, [_key(r.params, plot.panels) for r in ok])
    series = _sorted(spec, plot.series, [_key(c.as_dict(), plot.series) for c in cells])
    colours = {s: f"C{i % 10}" for i, s in enumerate(series)}
    width = 0.4
    n_x = max(
        len({c.as_dict()[plot.x] for c in cells if _key(c.as_dict(), plot.panels) == p})
        for p in panels
    )
    fig, at, side = _panel_grid(len(plot.y), len(panels), max(0.9 * n_x + 1.6, 4.2))
    drew = set()
    for i, y_name in enumerate(plot.y):
        m = metrics[y_name]
        for j, panel in enumerate(panels):
            ax = at(i, j)
            ax.set_gid(f"{y_name} | {_name(plot.panels, panel)}")
            in_panel = [c for c in cells if _key(c.as_dict(), plot.panels) == panel]
            xs = [
                key[0]
                for key in _sorted(spec, (plot.x,), [(c.as_dict()[plot.x],) for c in in_panel])
            ]
            shown = []
            for x in xs:
                at_x = [c for c in in_panel if c.as_dict()[plot.x] == x]
                pubs = [number(spec.published_for(c).get(y_name)) for c in at_x]
                pub = next((p for p in pubs if p is not None), None)
                rs = [
                    r
                    for r in ok
                    if _key(r.params, plot.panels) == panel and r.params.get(plot.x) == x
                ]
                vals = [(v, r) for r in rs if (v := number(r.metrics.get(y_name))) is not None]
                if pub is None and not vals:
                    continue
                idx = len(shown)
                shown.append(x)
                if pub is not None:
                    drew.add("published")
                    bar = ax.bar(
                        idx - width / 2,
                        pub,
                        width,
                        color="0.85",
                        edgecolor="0.35",
                        hatch="//",
                        gid=f"published {x}",
                    )
                    ax.bar_label(bar, [fmt_value(m, pub)], fontsize=7, padding=2)
                if not vals:
                    ax.text(
                        idx + width / 2,
                        0,
                        "not run",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color="0.3",
                    )
                    continue
                colour = colours[_key(rs[0].params, plot.series)]
                height = mean(v for v, _ in vals)
                bar = ax.bar(idx + width / 2, height, width, color=colour, gid=f"measured {x}")
                ax.bar_label(bar, [fmt_value(m, height)], fontsize=7, padding=2)
                if len(vals) > 1:
                    drew.add("spread")
                    ys = [v for v, _ in vals]
                    ax.plot(
                        [idx + width / 2] * len(ys), ys, "o", color="k", ms=3, gid=f"records {x}"
                    )
                    ax.vlines(idx + width / 2, min(ys), max(ys), color="k", lw=1)
                elif (err := vals[0][1].metrics.get(plot.error.get(y_name, ""))) is not None:
                    drew.add("stderr")
                    ax.errorbar(
                        idx + width / 2,
                        height,
                        yerr=err,
                        fmt="none",
                        ecolor="k",
                        capsize=3,
                        lw=1,
                        gid=f"stderr {x}",
                    )
            long = max((len(str(x)) for x in shown), default=0) > 8
            ax.set_xticks(
                range(len(shown)),
                [str(x) for x in shown],
                rotation=30 if long else 0,
                ha="right" if long else "center",
                fontsize=8,
            )
            ax.set_xlim(-0.7, len(shown) - 0.3)
            ax.margins(y=0.15)
            ax.grid(axis="y", alpha=0.3)
            if (i == 0 or side) and plot.panels:
                ax.set_title(_name(plot.panels, panel), fontsize=9)
            if j == 0:
                ax.set_ylabel(_y_title(m, [r.metrics.get(y_name) for r in ok]))
    handles = [
        Patch(color=colours[s], label=f"measured {_name(plot.series, s)}".strip()) for s in series
    ]
    if "published" in drew:
        handles.append(Patch(facecolor="0.85", edgecolor="0.35", hatch="//", label="published"))
    if "spread" in drew:
        handles.append(
            Line2D(
                [],
                [],
                color="k",
                marker="o",
                ms=3,
                lw=1,
                label="one dot per record (seed); bar: mean",
            )
        )
    if "stderr" in drew:
        handles.append(
            Line2D([], [], color="k", marker="|", ls="none", ms=10, label="± 1 standard error")
        )
    _legend(fig, handles)
    _suptitle(fig, spec, ok)
    return fig


def scatter_figure(spec: TableSpec, records: dict[str, Record]) -> Figure | None:
    """Measured against published for every metric with both, any table: the diagonal is
    agreement, colour and marker name the cell's fields in a legend, and only outliers (far from
    the panel's typical offset) are labelled, so no text piles up."""
    ok = ok_runs(records.values())
    panels = []
    for m in spec.metrics:
        points = []
        for r in ok:
            pub = number(spec.published_for(Cell(tuple(r.params.items()))).get(m.name))
            ours = number(r.metrics.get(m.name))
            if pub is not None and ours is not None:
                points.append((pub, ours, r))
        if points:
            panels.append((m, points))
    if not panels:
        return None
    ordered = (
        *(spec.plot.series + spec.plot.panels if spec.plot else ()),
        *spec.layout_columns,
        *spec.layout_rows,
    )
    fields = [
        f
        for f in dict.fromkeys(ordered)
        if len({r.params.get(f) for _, pts in panels for *_, r in pts}) > 1
    ]
    colour_by, marker_by = (fields + [None, None])[:2]
    records_shown = [r for _, pts in panels for *_, r in pts]
    colours = (
        {
            v: f"C{i % 10}"
            for i, (v,) in enumerate(
                _sorted(spec, (colour_by,), [(r.params.get(colour_by),) for r in records_shown])
            )
        }
        if colour_by
        else {}
    )
    markers = (
        {
            v: MARKERS[i % len(MARKERS)]
            for i, (v,) in enumerate(
                _sorted(spec, (marker_by,), [(r.params.get(marker_by),) for r in records_shown])
            )
        }
        if marker_by
        else {}
    )

    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels) + 1.8, 4.4), squeeze=False, layout="constrained"
    )
    for ax, (m, points) in zip(axes[0], panels):
        ax.set_gid(m.name)
        for pub, ours, r in points:
            ax.scatter(
                pub,
                ours,
                s=30,
                alpha=0.85,
                color=colours.get(r.params.get(colour_by), "C0"),
                marker=markers.get(r.params.get(marker_by), "o"),
                gid=f"point {r.cell}",
            )
        xs, ys = [p for p, *_ in points], [o for _, o, _ in points]
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, gid="measured = published")
        for n, (pub, ours, r) in enumerate(outliers(points)):
            ax.annotate(
                r.cell,
                (pub, ours),
                xytext=(6, 8 - 14 * (n % 2)),
                textcoords="offset points",
                fontsize=7,
                arrowprops={"arrowstyle": "-", "lw": 0.5},
            )
        ax.set(xlabel=f"published {m.title}", ylabel=f"measured {m.title}")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color="k", ls="--", lw=0.8, label="measured = published")]
    handles += [
        Line2D([], [], color=c, marker="o", ls="none", label=_name((colour_by,), (v,)))
        for v, c in colours.items()
    ]
    handles += [
        Line2D([], [], color="0.4", marker=mk, ls="none", label=_name((marker_by,), (v,)))
        for v, mk in markers.items()
    ]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    _suptitle(fig, spec, ok, f": measured vs published (arXiv {spec.paper['arxiv']})")
    return fig


def outliers(points: list[tuple]) -> list[tuple]:
    """The points whose measured - published is far (over 3 robust deviations) from the panel's
    median offset, the farthest first, at most MAX_LABELS of them."""
    if len(points) < 4:
        return []
    offsets = [ours - pub for pub, ours, *_ in points]
    mid = median(offsets)
    spread = 1.4826 * median(abs(o - mid) for o in offsets)
    scale = max(abs(v) for p in points for v in p[:2]) or 1.0
    far = [
        (abs(o - mid), p)
        for o, p in zip(offsets, points)
        if abs(o - mid) > max(3 * spread, 1e-6 * scale)
    ]
    return [p for _, p in sorted(far, key=lambda t: -t[0])[:MAX_LABELS]]


def curves_figure(spec: TableSpec, records: dict[str, Record]) -> Figure | None:
    """Training loss per epoch of every cell with a logged history; where the histories log
    active units (new likelihood records), a second panel draws them per layer."""
    curves = [(r.cell, r.history) for r in records.values() if r.history]
    if not curves:
        return None
    if any("active_units" in h for _, history in curves for h in history):
        return _curves_with_units(spec, sorted(curves))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history in sorted(curves):
        ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label=name, lw=1)
    ax.set(xlabel="epoch", ylabel="training loss")
    ax.set_title(textwrap.fill(f"{spec.title}: training curves", 70), fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    return fig


LAYER_STYLES = ("-", "--", ":", "-.")


def layer_style(layer: int) -> str:
    """The line style of stochastic layer `layer` (from 0) in the units panel."""
    return LAYER_STYLES[layer % len(LAYER_STYLES)]


def _curves_with_units(spec: TableSpec, curves: list[tuple[str, list[dict]]]) -> Figure:
    """The loss panel beside each epoch's active units (one colour per cell, one line style per
    stochastic layer), so a reader sees whether a count moves with training or sits at its
    value at initialisation. Records made before the units were logged draw no units line."""
    fig, (ax, au) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    ax.set_gid("loss")
    au.set_gid("units")
    layers = 0
    for i, (name, history) in enumerate(curves):
        colour, epochs = f"C{i % 10}", [h["epoch"] for h in history]
        ax.plot(epochs, [h["loss"] for h in history], label=name, lw=1, color=colour)
        logged = [h for h in history if "active_units" in h]
        for layer in range(len(logged[-1]["active_units"]) if logged else 0):
            x, y = [h["epoch"] for h in logged], [h["active_units"][layer] for h in logged]
            au.plot(
                x, y, lw=1, color=colour, ls=layer_style(layer), gid=f"units {name} {layer + 1}"
            )
            layers = max(layers, layer + 1)
    ax.set(xlabel="epoch", ylabel="training loss")
    ax.set_title("training loss", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    au.set(xlabel="epoch", ylabel="active units (a fixed subset of the test images)")
    au.set_title("active units after each epoch, per stochastic layer", fontsize=9)
    styles = [
        Line2D([], [], color="0.3", lw=1, ls=layer_style(n), label=f"layer {n + 1}")
        for n in range(layers)
    ]
    au.legend(handles=styles, fontsize=7)
    fig.suptitle(textwrap.fill(f"{spec.title}: training curves", 120), fontsize=10)
    return fig


def samples_figure(spec: TableSpec, records: dict[str, Record], tables_dir: Path) -> Figure | None:
    """The sample grid each run saved (tables/samples/<table>-<tier>-<cell>.png), side by side,
    each titled with its cell and its first plotted metric."""
    if spec.plot is None or not spec.plot.samples:
        return None
    metric = next(m for m in spec.metrics if m.name == spec.plot.y[0])
    found = [
        (r, tables_dir / "samples" / f"{spec.id}-{r.tier}-{r.cell}.png")
        for r in ok_runs(records.values())
    ]
    found = [(r, p) for r, p in found if p.is_file()]
    if not found:
        return None
    order = {c.id: i for i, c in enumerate(_cells(spec, [r for r, _ in found]))}  # the table's
    found.sort(key=lambda t: (order.get(t[0].cell, len(order)), t[0].cell))
    ncol = min(len(found), 4)
    nrow = -(-len(found) // ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(2.7 * ncol, 3.0 * nrow + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, (r, path) in zip(axes.flat, found):
        ax.imshow(plt.imread(path), interpolation="nearest", cmap="gray")
        value = r.metrics.get(metric.name)
        caption = f"\n{metric.title} {fmt_value(metric, value)}" if value is not None else ""
        ax.set_title(f"{r.cell}{caption}", fontsize=8)
        ax.set_gid(f"samples {r.cell}")
    _suptitle(fig, spec, ok_runs(records.values()), ": samples")
    return fig


def plot_metrics(spec: TableSpec, records: dict[str, Record], path: Path) -> Path | None:
    """The claim figure (`[plot]`), tables/<table>-<tier>.png."""
    return _save(claim_figure(spec, records), path)


def plot_published_vs_measured(
    spec: TableSpec, records: dict[str, Record], path: Path
) -> Path | None:
    return _save(scatter_figure(spec, records), path)


def plot_curves(spec: TableSpec, records: dict[str, Record], path: Path) -> Path | None:
    return _save(curves_figure(spec, records), path)


def plot_samples(spec: TableSpec, records: dict[str, Record], path: Path) -> Path | None:
    """The sample grids, read from the folder `samples/` beside `path`."""
    return _save(samples_figure(spec, records, path.parent), path)


# --- the gap to the paper against the training budget (bench/budget.py computes the series) ---


def _gap_label(metric: Metric) -> str:
    """The y axis of a signed gap: its unit (percentage points for a % metric) and which side
    is worse than the paper."""
    unit = "percentage points" if metric.unit == "%" else metric.unit
    worse = {"lower": "> 0", "higher": "< 0"}.get(metric.better)
    text = f"{metric.label}: measured − published" + (f" ({unit})" if unit else "")
    return text + (f"\n{worse}: worse than the paper" if worse else "")


def _budget_axis(ax, ticks: dict[float, str] | None, lo: float, hi: float) -> None:
    """Log x from `lo` to `hi` images, and a top axis naming each tier's budget and the paper's."""
    ax.set_xscale("log")
    ax.set_xlim(lo / 2, hi * 2)
    ax.set_xlabel("images seen in training (training images per epoch × epochs)")
    if not ticks:
        return
    top = ax.secondary_xaxis("top")
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)], fontsize=7)


def gap_budget_figure(gaps: budget.Gaps) -> Figure | None:
    """One table's headline cells: measured - published (signed, the metric's unit) against the
    images each tier's training saw (log), one line per cell, the paper's schedule a dashed
    vertical line with its epochs and images, each tier's budget named on the top axis with its
    fraction of the paper's. Several seeds: their mean, each a dot; one record: ± its standard
    error where the task reports one. Panels split the cells by data set (whose size sets the
    budget) and the spec's `[plot]` panels; colour and marker tell the cells of a panel apart.
    Nothing is drawn past the largest tier that ran."""
    if gaps is None or not gaps.drawable:
        return None
    spec, metric = gaps.spec, gaps.metric
    params = [s.cell.as_dict() for s in gaps.series]
    fields = list(dict.fromkeys(f for p in params for f in p))
    varying = [f for f in fields if len({p.get(f) for p in params}) > 1]
    # The data set always names a panel (its size sets the budget), other panel fields if they vary.
    panel_fields = tuple(
        f
        for f in dict.fromkeys(("dataset", *(spec.plot.panels if spec.plot else ())))
        if f in varying or (f == "dataset" and f in fields)
    )
    series_first = (*(spec.plot.series if spec.plot else ()), *fields)
    line_fields = tuple(
        f for f in dict.fromkeys(series_first) if f in varying and f not in panel_fields
    )
    panels = _sorted(spec, panel_fields, [_key(p, panel_fields) for p in params])
    colour_values = _sorted(spec, line_fields[:1], [_key(p, line_fields[:1]) for p in params])
    marker_values = _sorted(spec, line_fields[1:], [_key(p, line_fields[1:]) for p in params])
    colours = {v: f"C{i % 10}" for i, v in enumerate(colour_values)}
    markers = {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(marker_values)}
    ncol = 2 if len(panels) == 4 else min(len(panels), 3)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(max(5.2 * ncol, 8.0), 3.9 * nrow + 1.6),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    drew_error = drew_seeds = False
    for ax, panel in zip(axes.flat, panels):
        in_panel = [s for s in gaps.series if _key(s.cell.as_dict(), panel_fields) == panel]
        ax.set_gid(f"gap | {_name(panel_fields, panel)}" if panel_fields else "gap")
        ax.axhline(0, color="k", lw=0.8, gid="published")
        ticks, xs_all = {}, []
        for s in in_panel:
            p = s.cell.as_dict()
            colour = colours[_key(p, line_fields[:1])]
            marker = markers[_key(p, line_fields[1:])]
            xs, ys = [pt.images for pt in s.points], [pt.gap for pt in s.points]
            xs_all += xs
            ax.plot(xs, ys, "-", marker=marker, color=colour, lw=1.4, ms=5, gid=f"gap {s.cell.id}")
            for pt in s.points:
                if len(pt.gaps) > 1:
                    drew_seeds = True
                    ax.plot(
                        [pt.images] * len(pt.gaps),
                        pt.gaps,
                        ".",
                        color=colour,
                        alpha=0.6,
                        gid=f"seeds {s.cell.id} {pt.tier}",
                    )
                elif pt.stderr:
                    drew_error = True
                    ax.errorbar(
                        pt.images,
                        pt.gap,
                        yerr=pt.stderr,
                        fmt="none",
                        ecolor=colour,
                        capsize=3,
                        lw=1,
                    )
            for pt in s.points:
                if s.paper:
                    ticks[pt.images] = f"{pt.tier}\n{budget.ratio_text(pt.images, s.paper.images)}"
                else:
                    ticks[pt.images] = pt.tier
        papers = sorted({s.paper for s in in_panel if s.paper}, key=lambda b: b.images)
        for b in papers:
            ax.axvline(b.images, color="0.3", ls="--", lw=1.2, gid=f"paper {b.images}")
            ticks[b.images] = "paper"
            below = mean(pt.gap for s in in_panel for pt in s.points) < 0
            ax.annotate(  # away from the zero line: at the top where the gaps are above it
                f"paper's schedule:\n{b.epochs:,} epochs\n× {b.per_epoch:,} images",
                (b.images, 0 if below else 1),
                xycoords=("data", "axes fraction"),
                xytext=(-4, 4 if below else -4),
                textcoords="offset points",
                ha="right",
                va="bottom" if below else "top",
                fontsize=7,
                color="0.3",
            )
        xs_all += [b.images for b in papers]
        _budget_axis(ax, ticks, min(xs_all), max(xs_all))
        ax.set_ylabel(_gap_label(metric), fontsize=8)
        ax.grid(alpha=0.3)
        if panel_fields:
            ax.set_title(_name(panel_fields, panel), fontsize=9)
    handles = [
        Line2D(
            [],
            [],
            color=colours[c],
            marker=markers[m],
            lw=1.4,
            ms=5,
            label=_cell_label(line_fields, c + m),
        )
        for c in colour_values
        for m in marker_values
        if any(_key(p, line_fields) == c + m for p in params)
    ]
    handles.append(Line2D([], [], color="k", lw=0.8, label="= published"))
    handles.append(
        Line2D(
            [], [], color="0.3", ls="--", lw=1.2, label="the paper's schedule (spec's full tier)"
        )
    )
    if drew_seeds:
        handles.append(
            Line2D([], [], color="0.3", marker=".", ls="none", label="one dot per seed; line: mean")
        )
    if drew_error:
        handles.append(
            Line2D([], [], color="0.3", marker="|", ls="none", ms=10, label="± 1 standard error")
        )
    _legend(fig, handles)
    width = int(fig.get_figwidth() * 15)  # characters of a 9-point line
    title = (
        f"{spec.id} (arXiv {spec.paper.get('arxiv', '—')}): distance to the published"
        f" {metric.label} against the training budget",
        f"tiers {', '.join(gaps.tiers)} (smoke, a pipeline check, left out); top axis: each"
        " tier's budget as a fraction of the paper's; no extrapolation to the paper's budget",
    )
    fig.suptitle("\n".join(textwrap.fill(t, width) for t in title), fontsize=9)
    return fig


def _cell_label(fields: tuple[str, ...], key: tuple) -> str:
    """A line's legend entry: a model or data set by its name, any other field with its name."""
    return (
        ", ".join(v if f in ("model", "dataset") else f"{f} {v}" for f, v in zip(fields, key))
        or "measured"
    )


def scoreboard_gap_figure(all_gaps: list[budget.Gaps]) -> Figure | None:
    """The scoreboard's compact view: a panel per table, a line per data set, the median
    |measured - published| of its headline cells (those run at every tier drawn, so each tier's
    median is over the same cells) against images seen, the paper's schedule a dashed line of
    the same colour."""
    drawn = []
    for gaps in all_gaps:
        if gaps is None or not gaps.drawable:
            continue
        datasets = list(dict.fromkeys(s.cell.as_dict().get("dataset") for s in gaps.series))
        lines = [(d, budget.median_abs_gap(gaps, d)) for d in datasets]
        lines = [(d, pts) for d, pts in lines if len(pts) > 1]
        if lines:
            drawn.append((gaps, lines))
    if not drawn:
        return None
    ncol = min(len(drawn), 3)
    nrow = -(-len(drawn) // ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(4.3 * ncol, 3.3 * nrow + 0.8), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(drawn) :]:
        ax.axis("off")
    for ax, (gaps, lines) in zip(axes.flat, drawn):
        ax.set_gid(f"gap | {gaps.spec.id}")
        xs_all, top = [], max(p[2] for _, pts in lines for p in pts)
        for i, (dataset, pts) in enumerate(lines):
            colour = f"C{i % 10}"
            paper = next(
                (s.paper for s in gaps.series if s.cell.as_dict().get("dataset") == dataset), None
            )
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            label = f"{dataset} ({pts[0][3]} cells)"
            ax.plot(xs, ys, "o-", color=colour, lw=1.4, ms=4, gid=f"median {dataset}", label=label)
            for tier, x, y, _ in pts:
                ratio = f" {budget.ratio_text(x, paper.images)}" if paper else ""
                ax.annotate(
                    f"{tier}{ratio}",
                    (x, y),
                    xytext=(5, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color=colour,
                )
            xs_all += xs
            if paper:
                ax.axvline(paper.images, color=colour, ls="--", lw=1, gid=f"paper {dataset}")
                xs_all.append(paper.images)
        _budget_axis(ax, None, min(xs_all), max(xs_all))
        ax.set_xlabel("images seen in training", fontsize=8)
        unit = "percentage points" if gaps.metric.unit == "%" else gaps.metric.unit
        ax.set_ylabel("median |measured − published|" + (f"\n({unit})" if unit else ""), fontsize=8)
        ax.set_ylim(0, top * 1.15)  # room for the tier names above the highest point
        ax.set_title(f"{gaps.spec.id}: {gaps.metric.label}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    title = (
        "Distance to the published number against the training budget, per table: the median"
        " over the headline cells run at every tier (smoke left out); each tier's budget as a"
        " fraction of the paper's; dashed, same colour: the paper's schedule; no extrapolation"
    )
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 15)), fontsize=9)
    return fig


def plot_gap_vs_budget(spec: TableSpec, results: Path, path: Path) -> Path | None:
    """tables/<table>-gap-vs-budget.png, from the records of every tier."""
    return _save(gap_budget_figure(budget.gap_series(spec, results)), path)


def plot_scoreboard_gap(specs: list[TableSpec], results: Path, path: Path) -> Path | None:
    """tables/gap-vs-budget.png: the scoreboard's compact figure."""
    return _save(scoreboard_gap_figure([budget.gap_series(s, results) for s in specs]), path)


def write_gap_figures(
    results: Path = RESULTS_DIR, spec_dir: Path = SPEC_DIR, tables_dir: Path = TABLES_DIR
) -> list[Path]:
    """Every table's gap-vs-budget figure that can be drawn, and the scoreboard's."""
    specs = [load_spec(p) for p in registry(spec_dir).values()]
    drawn = [
        plot_gap_vs_budget(s, results, tables_dir / f"{s.id}-gap-vs-budget.png") for s in specs
    ]
    drawn.append(plot_scoreboard_gap(specs, results, tables_dir / "gap-vs-budget.png"))
    return [p for p in drawn if p]


if __name__ == "__main__":
    print("\n".join(str(p) for p in write_gap_figures()))
