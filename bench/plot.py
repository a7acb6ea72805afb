"""Figures from records: measured vs published per metric, and training curves.

Like tables, figures are drawn from records only, so they can be redrawn at any time.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .records import Record  # noqa: E402
from .render import parse_units  # noqa: E402
from .spec import Metric, TableSpec  # noqa: E402


def _number(metric: Metric, value) -> float | None:
    if value in (None, ""):
        return None
    if metric.kind == "units":
        return float(sum(parse_units(value)))
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_published_vs_measured(
    spec: TableSpec, records: dict[str, Record], path: Path
) -> Path | None:
    """One panel per metric that has both numbers for some cell; the diagonal is agreement."""
    panels = []
    for m in spec.metrics:
        points = []
        for cell in spec.cells("full") if "full" in spec.tiers else []:
            record = records.get(cell.id)
            if record is None or record.status != "ok":
                continue
            pub = _number(m, spec.published_for(cell).get(m.name))
            ours = _number(m, record.metrics.get(m.name))
            if pub is not None and ours is not None:
                points.append((pub, ours, cell.id))
        if points:
            panels.append((m, points))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (m, points) in zip(axes[0], panels):
        xs, ys, names = zip(*points)
        ax.scatter(xs, ys, s=18)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = published")
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=6, alpha=0.7)
        ax.set(xlabel=f"published {m.title}", ylabel=f"measured {m.title}")
        ax.legend(fontsize=7)
    fig.suptitle(f"{spec.title}: measured vs published (arXiv {spec.paper['arxiv']})", fontsize=9)
    return save_figure(fig, path)


def plot_curves(spec: TableSpec, records: dict[str, Record], path: Path) -> Path | None:
    """Training loss per epoch of every cell with a logged history."""
    curves = [(r.cell, r.history) for r in records.values() if r.history]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history in sorted(curves):
        ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label=name, lw=1)
    ax.set(xlabel="epoch", ylabel="training loss", title=f"{spec.title}: training curves")
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def plot_metrics(spec: TableSpec, records: dict[str, Record], path: Path) -> Path | None:
    """The spec's [plot]: each y metric against the x metric, one line per series."""
    if not spec.plot:
        return None
    x_name, y_names = spec.plot["x"], spec.plot["y"]
    series: dict[str, list[Record]] = {}
    for r in records.values():
        if r.status == "ok":
            key = " ".join(str(r.params[f]) for f in spec.plot.get("series", []))
            series.setdefault(key, []).append(r)
    if not series:
        return None
    metrics = {m.name: m for m in spec.metrics}
    fig, axes = plt.subplots(1, len(y_names), figsize=(5 * len(y_names), 4.2), squeeze=False)
    for ax, y_name in zip(axes[0], y_names):
        for key, rs in sorted(series.items()):
            rs = sorted(rs, key=lambda r: r.metrics[x_name])
            xs = [r.metrics[x_name] for r in rs]
            ax.plot(xs, [r.metrics[y_name] for r in rs], "o-", label=key, lw=1.2)
        for axis, name in (("x", x_name), ("y", y_name)):
            m = metrics[name]
            getattr(ax, f"set_{axis}label")(m.title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    devices = sorted({r.device for rs in series.values() for r in rs})
    fig.suptitle(f"{spec.title}\n{'; '.join(devices)}", fontsize=9)
    return save_figure(fig, path)
