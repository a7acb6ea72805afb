"""The gap to each paper against the training budget: for the headline cells of a likelihood or
classification table, measured - published at every tier that ran, placed at the images that
tier's training saw, beside the images of the paper's schedule (the spec's full tier).

It is what a CPU can show about a paper's number: not the number, but whether the distance to
it shrinks as the budget grows, and how far the largest budget run still is from the paper's.
Nothing is extrapolated to the paper's budget. `bench.plot` draws the series.

Images seen = training images per epoch x epochs, both by the training loop's own rule (a capped
epoch counts the steps it took, `train.Fit.images_per_epoch`), from each record's data and
resolved settings; the paper's from the spec's full tier, on the full training set where that
tier sets no `n_train` (`plan.FULL_SIZES`, as `bench plan` prices it).

Headline cells: the table's cells (seed replicates pooled into their mean) with a published
value of the headline metric, the first metric of the spec's `[plot]` y (the one the claim
figure leads with; the first metric with a published value where no plot is declared), and a
record at some tier. The smoke tier is left out: it is pipeline-only (tiny models or resized
images on a committed sample, `summary.PIPELINE_ONLY`), and the scoreboard shows no distance for
it either.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path

from .claims import stderr
from .plan import FULL_SIZES
from .records import RESULTS_DIR, Record, read_records
from .results import number, replicates, value
from .spec import REPRODUCE_TIER, TIERS, Cell, Metric, TableSpec, settings_for
from .summary import PIPELINE_ONLY
from .tasks import TASKS
from .tasks.settings import ClassifySettings, LikelihoodSettings, stage_epochs
from .train import Fit

TRAINING_TASKS = ("likelihood", "classify")  # the tasks whose cells train on images


@dataclass(frozen=True)
class Budget:
    """What a run trains on: `n_train` images per pass, `epochs` passes (a capped epoch counts
    only the images its steps drew)."""

    n_train: int
    epochs: int
    batch_size: int
    max_steps_per_epoch: int | None = None

    @property
    def per_epoch(self) -> int:
        # The loop's own rule, on a stand-in training set of the right length: nothing trains.
        fit = Fit(
            model=None,
            optimizer=None,
            loss=None,
            train=range(self.n_train),
            batch_size=self.batch_size,
            epochs=self.epochs,
            lr_at=None,
            seed=0,
            max_steps_per_epoch=self.max_steps_per_epoch,
        )
        return fit.images_per_epoch

    @property
    def images(self) -> int:
        return self.per_epoch * self.epochs


def epochs_of(s) -> int:
    """Epochs a task's settings train: a likelihood model's stages summed, a classifier's
    `epochs` (none where it only counts and measures an untrained model)."""
    if isinstance(s, LikelihoodSettings):
        return sum(stage_epochs(s))
    if isinstance(s, ClassifySettings):
        return s.epochs if s.train else 0
    raise TypeError(f"{type(s).__name__} trains no images")


def record_budget(spec: TableSpec, record: Record) -> Budget | None:
    """The budget a record trained with: its data's `n_train` and its resolved settings, rebuilt
    as the task's settings (keys the class no longer has are dropped); None where it trained on
    nothing or its settings cannot be read."""
    cls = TASKS[spec.task].settings_class()
    names = {f.name for f in dataclasses.fields(cls)}
    n_train = record.data.get("n_train")
    try:
        s = cls(**{k: v for k, v in record.settings.items() if k in names})
    except (TypeError, ValueError):
        return None
    if not isinstance(n_train, int) or n_train <= 0:
        return None
    budget = Budget(n_train, epochs_of(s), s.batch_size, s.max_steps_per_epoch)
    return budget if budget.images > 0 else None


def paper_budget(spec: TableSpec, cell: Cell) -> Budget | None:
    """The paper's schedule for a cell, as the spec's full tier states it (None: no full tier)."""
    if REPRODUCE_TIER not in spec.tiers:
        return None
    s = settings_for(TASKS[spec.task].settings_class(), spec, REPRODUCE_TIER)
    n_train = s.n_train or FULL_SIZES[cell.as_dict()["dataset"]][0]
    return Budget(n_train, epochs_of(s), s.batch_size, s.max_steps_per_epoch)


def headline_metric(spec: TableSpec) -> Metric | None:
    """The metric a table leads with that has a published value (see the module's docstring)."""
    by_name = {m.name: m for m in spec.metrics}
    order = [by_name[y] for y in spec.plot.y] if spec.plot else list(spec.metrics)
    for m in order:
        if any(number(values.get(m.name)) is not None for _, values in spec.published):
            return m
    return None


@dataclass(frozen=True)
class Point:
    """One tier of a cell: the images its training saw and measured - published, the mean over
    its records (seeds), each record's own gap, and a lone record's standard error."""

    tier: str
    images: int
    gap: float
    gaps: tuple[float, ...]
    stderr: float | None = None


@dataclass(frozen=True)
class Series:
    cell: Cell
    published: float
    paper: Budget | None
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Gaps:
    """A table's series; `tiers` are those with a point, in budget order."""

    spec: TableSpec
    metric: Metric
    series: tuple[Series, ...]
    tiers: tuple[str, ...]

    @property
    def drawable(self) -> bool:
        """More than one tier: a single budget shows no direction."""
        return len(self.tiers) > 1


def point(spec: TableSpec, metric: Metric, tier: str, runs: list[Record], published: float):
    """The cell's point at a tier, or None where no ok record has the metric and a budget (its
    records must agree on the budget: seeds of one schedule)."""
    measure = TASKS[spec.task].measure(metric.name)
    found = [
        (v - published, r, b)
        for r in runs
        if (v := value(r, metric.name)) is not None and (b := record_budget(spec, r)) is not None
    ]
    if not found or len({b.images for *_, b in found}) > 1:
        return None
    gaps = tuple(g for g, *_ in found)
    se = stderr(found[0][1], measure) if len(found) == 1 else None
    return Point(tier, found[0][2].images, statistics.fmean(gaps), gaps, se)


def tiers_of(spec: TableSpec) -> list[str]:
    """The tiers a gap is drawn for: all but the pipeline-only one."""
    return [t for t in TIERS if t in spec.tiers and t != PIPELINE_ONLY]


def gap_series(spec: TableSpec, results: Path = RESULTS_DIR) -> Gaps | None:
    """Every headline cell's series (None for a table that trains nothing or has no headline
    metric); a cell with no point at any tier is left out."""
    metric = headline_metric(spec) if spec.task in TRAINING_TASKS else None
    if metric is None:
        return None
    tiers = tiers_of(spec)
    records = {t: read_records(results, spec.id, t)[0] for t in tiers}
    cells = dict.fromkeys(c for t in tiers for c in spec.table_cells(t))
    series = []
    for cell in cells:
        published = number(spec.published_for(cell).get(metric.name))
        if published is None:
            continue
        points = [
            p
            for t in tiers
            if (p := point(spec, metric, t, replicates(spec, t, records[t], cell), published))
        ]
        if points:
            series.append(Series(cell, published, paper_budget(spec, cell), tuple(points)))
    with_points = {p.tier for s in series for p in s.points}
    return Gaps(spec, metric, tuple(series), tuple(t for t in tiers if t in with_points))


def ratio_text(images: int, paper: int) -> str:
    """A tier's budget as a fraction of the paper's: "1/1,230", or "x1.5" past it."""
    if images >= paper:
        return f"x{images / paper:.3g}"
    ratio = paper / images
    return f"1/{ratio:,.0f}" if ratio >= 10 else f"1/{ratio:.2g}"


def median_abs_gap(gaps: Gaps, dataset: str) -> list[tuple[str, int, float, int]]:
    """The scoreboard's compact series of one data set: per tier (tier, images, median |gap|,
    cells), over the headline cells of that data set that have a point at every tier where any
    of them has one, so that each tier's median is over the same cells."""
    series = [s for s in gaps.series if s.cell.as_dict().get("dataset") == dataset]
    tiers = [t for t in gaps.tiers if any(p.tier == t for s in series for p in s.points)]
    common = [s for s in series if {p.tier for p in s.points} >= set(tiers)]
    out = []
    for t in tiers:
        at = [p for s in common for p in s.points if p.tier == t]
        if at and len({p.images for p in at}) == 1:
            out.append((t, at[0].images, statistics.median(abs(p.gap) for p in at), len(at)))
    return out
