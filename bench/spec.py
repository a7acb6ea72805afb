"""Table specs: TOML files in bench/specs/, loaded and validated into frozen dataclasses.

A spec is data, not code: which cells to run (the grid), how to train them per tier, and what the
paper published. Every validation error is one line naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.typecheck import why_not

from .tasks import TASKS  # the registry only: no task (and so no torch) is imported here
from .units import CONVERSIONS

SPEC_DIR = Path(__file__).parent / "specs"
TIERS = ("smoke", "small", "medium", "full")
# A tier's grid may repeat each cell with several seeds: `seed = [0, 1]` runs every cell twice
# (the run's --seed plus each value), and tables, figures and claims pool the replicates.
SEED = "seed"
SEED_LIMIT = 2**32  # NumPy's seed range; seed * 1_000_003 + epoch then fits a torch seed
MAX_SEED_OFFSET = 2**16
_TOP_FIELDS = {
    "id",
    "title",
    "task",
    "paper",
    "notes",
    "metrics",
    "grid",
    "layout",
    "published",
    "ratios",
    "plot",
    "defaults",
    "tiers",
    "check",
    "claims",
    "derived",
    "models",
    "model_arguments",
    "reproduce",
}
_PLUGIN_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_METRIC_FIELDS = {"label", "unit", "format", "better", "kind"}


class SpecError(Exception):
    """A malformed spec; the message is one line: file, field, problem."""


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str = ""
    format: str = ".2f"
    better: str = ""  # "lower", "higher" or "" (no preferred direction)
    kind: str = "number"  # "number", or "units" for active units written "a+b"

    @property
    def title(self) -> str:
        """ "label (unit)": how tables and figures name the metric."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def direction(self, delta: float) -> str:
        """Whether a measured - published difference is in the metric's good direction."""
        if not self.better or delta == 0:
            return ""
        good = delta < 0 if self.better == "lower" else delta > 0
        return "better" if good else "worse"


@dataclass(frozen=True)
class Cell:
    """One point of the grid; `id` names its record file and is what `--cells` matches."""

    params: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        return "-".join(v if isinstance(v, str) else f"{k}{v}" for k, v in self.params)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def model_params(self) -> dict[str, Any]:
        """The fields the task sees: all but the replicate field `seed`."""
        return {k: v for k, v in self.params if k != SEED}

    @property
    def replicate_of(self) -> Cell:
        """The table cell this one repeats with another seed (itself when it has no `seed`)."""
        return Cell(tuple((k, v) for k, v in self.params if k != SEED))

    def matches(self, where: dict[str, Any]) -> bool:
        return matches(self.as_dict(), where)


def matches(params: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether a cell's fields hold every value of `where` (a published entry, a ratio's side)."""
    return all(params.get(k) == v for k, v in where.items())


@dataclass(frozen=True)
class Tier:
    name: str
    settings: dict[str, Any]
    grid: dict[str, tuple] | None = None  # a tier may run a different grid (e.g. a CIFAR stand-in)
    departures: tuple[str, ...] = ()  # how this tier departs from the paper, stated in its table


@dataclass(frozen=True)
class Derived:
    """A published value the paper does not print, converted here from one it does (`via` a
    function of bench/units.py); tables mark it as derived and print the formula."""

    cell: Cell  # the published entry it belongs to
    metric: str
    source: str  # the published metric it is converted from
    via: str
    dims: int
    value: float

    @property
    def formula(self) -> str:
        return CONVERSIONS[self.via][1]


@dataclass(frozen=True)
class Ratio:
    """A claim checked as a ratio of one metric between two cells of the same run."""

    label: str
    metric: str
    over: dict[str, Any]
    under: dict[str, Any] | None = None  # default: the same cell as `over`
    under_metric: str | None = None  # default: `metric`
    target: str = ""  # e.g. "<= 0.15"


CLAIM_EXPECT = ("lower", "higher", "not lower", "equal", "rising")


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a difference between cells: `metric` of the cells matching `a`
    is `expect` than that of their twins matching `b` (the same cell with b's values), for every
    cell that also matches `where`; or, with expect = "rising", the metric rises along the grid
    field `along` within each group of cells matching `a`."""

    label: str
    metric: str
    expect: str
    a: dict[str, Any]
    b: dict[str, Any] = field(default_factory=dict)
    where: dict[str, list] = field(default_factory=dict)  # field -> the values it may take
    along: str = ""
    margin: float | None = None  # expect = "equal": how far apart still counts as a match


@dataclass(frozen=True)
class Rule:
    """How far a metric may move from its committed reference before `bench check` fails.

    Every condition given must hold: `exact`, |now - ref| <= abs_tol + rel * |ref| (relative
    and absolute bands), now <= at_most and now >= at_least (bounds on a property, whatever the
    reference). `skip` documents a metric that is not compared (e.g. a time on a shared machine).
    """

    reason: str
    exact: bool = False
    rel: float = 0.0
    abs_tol: float = 0.0
    at_most: float | None = None
    at_least: float | None = None
    skip: bool = False

    @property
    def banded(self) -> bool:
        """Whether the rule compares with the reference (rather than only bounding `now`)."""
        return self.exact or self.rel > 0 or self.abs_tol > 0


@dataclass(frozen=True)
class CheckTier:
    """The tolerances of one tier (`[check.<tier>]`), and the cells CI's quick check runs."""

    rules: dict[str, Rule]
    subset: str | None = None


REPRODUCE_TIER = "full"  # the only tier that trains as the paper did, so the only one judged


@dataclass(frozen=True)
class Tolerance:
    """How far a full-tier measurement may sit from its published number and still count as
    the paper reproduced (`[reproduce]`): |measured - published| <= abs_tol + rel * |published|.
    The band comes from how close independent reproductions came (`source`), not from this
    suite's own runs, so that "reproduced" means what it means for anyone else."""

    metric: str
    source: str  # where the band comes from: arXiv id or repository + table, file or issue
    reason: str
    abs_tol: float = 0.0
    rel: float = 0.0
    where: dict[str, Any] = field(default_factory=dict)  # the cells it is for (default: all)

    def band(self, published: float) -> float:
        return self.abs_tol + self.rel * abs(published)

    def holds(self, published: float, measured: float) -> bool:
        # The slack absorbs float noise only: 26.70 - 25.40 is 1.2999999999999972.
        slack = 1e-9 * max(1.0, abs(published))
        return abs(measured - published) <= self.band(published) + slack

    @property
    def text(self) -> str:
        """ "± 0.5", "± 1%" or "± (0.5 + 1%)": the band as a reader compares it with a Δ."""
        parts = [f"{self.abs_tol:g}"] if self.abs_tol else []
        parts += [f"{self.rel * 100:g}%"] if self.rel else []
        return f"± {parts[0]}" if len(parts) == 1 else f"± ({' + '.join(parts)})"


PLOT_KINDS = ("lines", "bars")


@dataclass(frozen=True)
class Plot:
    """The figure that shows a table's claim (`[plot]`), so that a reader sees it without
    decoding the table: "lines" draws each y against x, one colour per series, the published
    values dashed in the same colour; "bars" puts each x's measured bar (with its spread when
    several records share it) beside its published one. Each y metric is a row of panels, each
    combination of the `panels` fields a column."""

    x: str  # a metric or a grid field ("bars": a grid field)
    y: tuple[str, ...]  # metrics
    kind: str = "lines"
    series: tuple[str, ...] = ()  # grid fields
    panels: tuple[str, ...] = ()  # grid fields
    error: dict[str, str] = field(default_factory=dict)  # y metric -> record metric of its stderr
    log_x: bool = False
    y_from_zero: bool = False
    samples: bool = False  # also a figure of the run's sample grids


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    task: str
    paper: dict[str, str]
    metrics: tuple[Metric, ...]
    grid: dict[str, tuple]
    layout_rows: tuple[str, ...]
    layout_columns: tuple[str, ...]
    published: tuple[tuple[Cell, dict[str, Any]], ...]
    tiers: dict[str, Tier]
    notes: tuple[str, ...] = ()
    # Where each published entry comes from, when it is not the spec's `paper` table
    sources: tuple[tuple[Cell, str], ...] = ()
    ratios: tuple[Ratio, ...] = ()
    claims: tuple[Claim, ...] = ()
    plot: Plot | None = None
    checks: dict[str, CheckTier] = field(default_factory=dict)  # tier -> `bench check` tolerances
    derived: tuple[Derived, ...] = ()  # published values converted here (also in `published`)
    # Models from outside this repository, name -> "package.module:Constructor" (models.register)
    plugins: tuple[tuple[str, str], ...] = ()
    # `[reproduce]`: per published metric, how close a full-tier run must come to count as the
    # paper reproduced; the first whose `where` matches a cell applies to it
    reproduce: tuple[Tolerance, ...] = ()
    path: Path = field(default=Path(), compare=False)

    def with_models(self, added: dict[str, str]) -> TableSpec:
        """This table with models from outside the repository as extra rows: each runs every
        cell the paper's models run, and each claim about one of the paper's models is also
        judged with the added model in its place."""
        if "model" not in self.grid:
            raise SpecError(f"{self.path}: table '{self.id}' has no `model` axis to add a model to")
        for name, target in added.items():
            _plugin(name, target, self.path, f"--add-model {name}")
        names = tuple(added)

        def extend(grid: dict[str, tuple] | None) -> dict[str, tuple] | None:
            if grid is None or "model" not in grid:
                return grid
            extra = tuple(n for n in names if n not in grid["model"])
            return {**grid, "model": grid["model"] + extra}

        tiers = {k: dataclasses.replace(t, grid=extend(t.grid)) for k, t in self.tiers.items()}
        stand_ins = tuple(
            dataclasses.replace(
                c, label=f"{c.label} ({name} in place of {c.a['model']})", a={**c.a, "model": name}
            )
            for name in names
            for c in self.claims
            if "model" in c.a
        )
        return dataclasses.replace(
            self,
            grid=extend(self.grid),
            tiers=tiers,
            claims=self.claims + stand_ins,
            plugins=tuple({**dict(self.plugins), **added}.items()),
        )

    def cells(self, tier: str) -> list[Cell]:
        return _product(self.tiers[tier].grid or self.grid)

    def table_cells(self, tier: str) -> list[Cell]:
        """The paper's cells, then any extra cells this tier runs (e.g. a CIFAR stand-in); seed
        replicates are one table cell."""
        tier_cells = [c.replicate_of for c in self.cells(tier)]
        return list(dict.fromkeys(_product(self.grid) + tier_cells))

    def select(self, tier: str, pattern: str | None) -> list[Cell]:
        """Cells of a tier whose id matches a glob (comma-separated globs allowed)."""
        cells = self.cells(tier)
        if not pattern:
            return cells
        globs = [g.strip() for g in pattern.split(",") if g.strip()]
        return [c for c in cells if any(fnmatch.fnmatchcase(c.id, g) for g in globs)]

    def published_for(self, cell: Cell) -> dict[str, Any]:
        for where, values in self.published:
            if cell.matches(where.as_dict()):
                return values
        return {}

    def settings(self, tier: str) -> dict[str, Any]:
        return dict(self.tiers[tier].settings)

    def tolerance_for(self, cell: Cell, metric: str) -> Tolerance | None:
        """The `[reproduce]` band of `metric` for `cell`, or None (the cell gets no verdict)."""
        return next(
            (t for t in self.reproduce if t.metric == metric and cell.matches(t.where)), None
        )

    def derived_for(self, cell: Cell, metric: str) -> Derived | None:
        """How the published `metric` of `cell` was derived, or None where the paper prints it."""
        for where, _ in self.published:
            if cell.matches(where.as_dict()):
                return next(
                    (d for d in self.derived if d.cell == where and d.metric == metric), None
                )
        return None


def _product(grid: dict[str, tuple]) -> list[Cell]:
    return [Cell(tuple(zip(grid, values))) for values in itertools.product(*grid.values())]


# Cell ids name record, lock and checkpoint files: no separators, no leading dot.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def _fail(path: Path, where: str, problem: str) -> SpecError:
    return SpecError(f"{path}: {where}: {problem}")


def _require(data: dict, key: str, kind: type, path: Path, where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise _fail(path, name, f"missing; add `{key} = ...`")
    if not isinstance(data[key], kind):
        raise _fail(path, name, f"expected {kind.__name__}, got {type(data[key]).__name__}")
    return data[key]


def _grid(raw: Any, path: Path, where: str) -> dict[str, tuple]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(
            path, where, "expected a table of field = [values, ...] with at least one field"
        )
    grid = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"{where}.{key}", "expected a non-empty list of values")
        if not _SAFE_VALUE.fullmatch(key):
            raise _fail(path, f"{where}.{key}", "field names use letters, digits and _ only")
        for value in values:
            if not isinstance(value, str | int | float) or (
                isinstance(value, str) and not _SAFE_VALUE.fullmatch(value)
            ):
                raise _fail(
                    path,
                    f"{where}.{key}",
                    f"{value!r} cannot be part of a cell id (a file name): use letters, digits"
                    " and _ . + = -, not starting with . or -",
                )
        if key == SEED and not (
            all(type(v) is int and 0 <= v < MAX_SEED_OFFSET for v in values)
            and len(set(values)) == len(values)
        ):
            raise _fail(
                path,
                f"{where}.{key}",
                f"seeds are distinct integers from 0 to {MAX_SEED_OFFSET - 1}, e.g. [0, 1]",
            )
        grid[key] = tuple(values)
    return grid


def _finite(value: Any, path: Path, where: str = "") -> None:
    """TOML reads `nan` and `inf` as numbers; no setting, published number or tolerance is one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, where, f"{value} is not a finite number; give a number")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, path, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, path, f"{where}[{i}]")


def _unique_ids(cells: list[Cell], path: Path, where: str) -> None:
    """Two cells with one id would share a record file, the second overwriting the first's."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.id in seen:
            both = f"{_describe(seen[cell.id])} and {_describe(cell)}"
            raise _fail(
                path,
                where,
                f"two cells have the id '{cell.id}' ({both}); change a"
                " value so that their ids differ",
            )
        seen[cell.id] = cell


def _describe(cell: Cell) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in cell.params)


def _metrics(raw: Any, path: Path) -> tuple[Metric, ...]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "metrics", "expected [metrics.<name>] tables")
    out = []
    for name, fields in raw.items():
        if not isinstance(fields, dict):
            raise _fail(path, f"metrics.{name}", "expected a table with at least `label`")
        unknown = set(fields) - _METRIC_FIELDS
        if unknown:
            raise _fail(path, f"metrics.{name}.{sorted(unknown)[0]}", "unknown field")
        if fields.get("better", "") not in ("", "lower", "higher"):
            raise _fail(path, f"metrics.{name}.better", "expected 'lower' or 'higher'")
        if fields.get("kind", "number") not in ("number", "units"):
            raise _fail(path, f"metrics.{name}.kind", "expected 'number' or 'units'")
        out.append(Metric(name=name, **{"label": name, **fields}))
    return tuple(out)


_RULE_KEYS = {
    "exact": "exact",
    "rel": "rel",
    "abs": "abs_tol",
    "max": "at_most",
    "min": "at_least",
    "skip": "skip",
    "reason": "reason",
}


def _declared(metrics: tuple[Metric, ...], task: str, path: Path) -> None:
    """Every metric a spec shows is one its task reports, in the task's direction."""
    for m in metrics:
        measure = TASKS[task].measure(m.name)
        if measure is None:
            raise _fail(
                path,
                f"metrics.{m.name}",
                f"task '{task}' reports no such metric; it"
                f" reports: {', '.join(TASKS[task].metrics)}",
            )
        if m.better and measure.better and m.better != measure.better:
            raise _fail(
                path,
                f"metrics.{m.name}.better",
                f"'{m.better}', but task '{task}' declares {m.name} better when {measure.better}",
            )


def _rule(raw: Any, path: Path, where: str) -> Rule:
    form = "expected { rel, abs, exact, max or min = ..., or skip = true; reason = '...' }"
    if not isinstance(raw, dict):
        raise _fail(path, where, form)
    for key, value in raw.items():
        if key not in _RULE_KEYS:
            raise _fail(path, f"{where}.{key}", f"unknown field; {form}")
        if key in ("exact", "skip") and not isinstance(value, bool):
            raise _fail(path, f"{where}.{key}", f"expected true or false, got {value!r}")
        if key in ("rel", "abs", "max", "min") and (
            not isinstance(value, int | float) or isinstance(value, bool)
        ):
            raise _fail(path, f"{where}.{key}", f"expected a number, got {value!r}")
        if key in ("rel", "abs") and value < 0:
            raise _fail(path, f"{where}.{key}", f"a band is >= 0, got {value!r}")
    if not isinstance(raw.get("reason"), str) or not raw["reason"].strip():
        raise _fail(path, f"{where}.reason", "missing; say why this tolerance (what was measured)")
    rule = Rule(**{_RULE_KEYS[k]: v for k, v in raw.items()})
    if rule.skip and set(raw) - {"skip", "reason"}:
        raise _fail(path, where, "skip = true takes no tolerance")
    if rule.exact and set(raw) & {"rel", "abs"}:
        raise _fail(path, where, "exact = true takes no rel or abs band")
    if not (rule.skip or rule.banded or set(raw) & {"max", "min"}):
        raise _fail(path, where, f"no tolerance given; {form}")
    return rule


def _checks(raw: Any, path: Path, metrics: tuple[Metric, ...], tiers: dict) -> dict:
    """`[check.<tier>]`: one rule per metric of the spec (a new metric must be given one)."""
    if not isinstance(raw, dict):
        raise _fail(path, "check", "expected [check.<tier>] tables of metric = { ... }")
    checks = {}
    for tier, entries in raw.items():
        where = f"check.{tier}"
        if tier not in tiers:
            raise _fail(path, where, f"no such tier in [tiers]; it has: {', '.join(tiers)}")
        if not isinstance(entries, dict):
            raise _fail(path, where, "expected a table of metric = { ... }")
        entries = dict(entries)
        subset = entries.pop("subset", None)
        if subset is not None and not isinstance(subset, str):
            raise _fail(path, f"{where}.subset", "expected a string: glob(s) over cell ids")
        names = {m.name for m in metrics}
        for name in entries:
            if name not in names:
                raise _fail(path, f"{where}.{name}", f"not a metric ({', '.join(sorted(names))})")
        for m in metrics:
            if m.name not in entries:
                raise _fail(
                    path,
                    f"{where}.{m.name}",
                    "metric without a tolerance; add { rel = ..., reason = ... } or"
                    " { skip = true, reason = ... }",
                )
        rules = {n: _rule(v, path, f"{where}.{n}") for n, v in entries.items()}
        checks[tier] = CheckTier(rules=rules, subset=subset)
    return checks


def _plot(raw: Any, path: Path, metrics: set[str], fields: set[str]) -> Plot | None:
    if raw is None:
        return None
    known = [f.name for f in dataclasses.fields(Plot)]
    if not isinstance(raw, dict):
        raise _fail(path, "plot", f"expected a table with x and y; optional: {', '.join(known)}")
    for key in raw:
        if key not in known:
            raise _fail(path, f"plot.{key}", f"unknown field; known: {', '.join(known)}")
    if "x" not in raw or "y" not in raw:
        raise _fail(path, "plot", "missing x or y; add `x = ...` and `y = [metrics]`")
    kind = raw.get("kind", "lines")
    if kind not in PLOT_KINDS:
        raise _fail(path, "plot.kind", f"expected one of {', '.join(PLOT_KINDS)}, got {kind!r}")

    def names(key: str, allowed: set[str], what: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise _fail(path, f"plot.{key}", f"expected a list of names, each {what}")
        for n in value:
            if n not in allowed:
                known = ", ".join(sorted(allowed))
                raise _fail(path, f"plot.{key}", f"'{n}' is not {what} ({known})")
        return tuple(value)

    x_what = "a grid field" if kind == "bars" else "a metric or a grid field"
    x = names("x", fields if kind == "bars" else metrics | fields, x_what)
    if len(x) != 1:
        raise _fail(path, "plot.x", f"expected one name, {x_what}")
    y = names("y", metrics, "a metric")
    if not y:
        raise _fail(path, "plot.y", "expected at least one metric")
    series = names("series", fields, "a grid field")
    panels = names("panels", fields, "a grid field")
    if len({*x, *series, *panels}) != 1 + len(series) + len(panels):
        raise _fail(path, "plot", "x, series and panels must name different fields")
    error = raw.get("error", {})
    if not isinstance(error, dict) or not all(isinstance(v, str) for v in error.values()):
        raise _fail(path, "plot.error", 'expected { y_metric = "metric of its stderr", ... }')
    for key in error:
        if key not in y:
            raise _fail(path, f"plot.error.{key}", f"not one of plot.y ({', '.join(y)})")
    flags = {key: raw.get(key, False) for key in ("log_x", "y_from_zero", "samples")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise _fail(path, f"plot.{key}", f"expected true or false, got {value!r}")
    return Plot(x=x[0], y=y, kind=kind, series=series, panels=panels, error=error, **flags)


def load_spec(path: str | Path) -> TableSpec:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r});"
            " save it as UTF-8"
        ) from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    _finite(data, path)

    unknown = set(data) - _TOP_FIELDS
    if unknown:
        raise _fail(
            path, sorted(unknown)[0], f"unknown field; known: {', '.join(sorted(_TOP_FIELDS))}"
        )
    table_id = _require(data, "id", str, path)
    if not _SAFE_VALUE.fullmatch(table_id):
        raise _fail(
            path,
            "id",
            f"{table_id!r} names result files and folders: use letters,"
            " digits and _ . + = -, not starting with . or -",
        )
    task = _require(data, "task", str, path)
    if task not in TASKS:
        raise _fail(path, "task", f"unknown task '{task}'; known: {', '.join(TASKS)}")
    if table_id != path.stem:
        raise _fail(path, "id", f"'{table_id}' must equal the file name '{path.stem}'")
    paper = _require(data, "paper", dict, path)
    for key in ("arxiv", "table"):
        _require(paper, key, str, path, "paper")
    metrics = _metrics(data.get("metrics"), path)
    _declared(metrics, task, path)
    metric_names = {m.name for m in metrics}
    grid = _grid(data.get("grid"), path, "grid")
    if SEED in grid:
        raise _fail(path, f"grid.{SEED}", "seed replicates go in a tier's grid, not the table's")

    layout = data.get("layout", {})
    for key in set(layout) - {"rows", "columns"}:
        raise _fail(
            path,
            f"layout.{key}",
            "unknown field (a key below [layout] belongs to it; "
            "put top-level keys before the first [table])",
        )
    rows = tuple(layout.get("rows", [k for k in grid if k not in layout.get("columns", [])]))
    columns = tuple(layout.get("columns", []))
    for key in rows + columns:
        if key not in grid:
            raise _fail(path, "layout", f"'{key}' is not a grid field ({', '.join(grid)})")
    if sorted(rows + columns) != sorted(grid):
        raise _fail(
            path, "layout", f"rows + columns must name each grid field once ({', '.join(grid)})"
        )

    published, sources = [], []
    entries = data.get("published", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _fail(path, "published", "expected a list of inline tables {field = value, ...}")
    for i, entry in enumerate(entries):
        source = entry.pop("source", None)
        if source is not None and not isinstance(source, str):
            raise _fail(path, f"published[{i}].source", "expected a string: arXiv id and table")
        where = {k: v for k, v in entry.items() if k in grid}
        values = {k: v for k, v in entry.items() if k not in grid}
        for k, v in where.items():
            if v not in grid[k]:
                raise _fail(path, f"published[{i}].{k}", f"{v!r} is not in grid.{k}")
        for k, v in values.items():
            if k not in metric_names:
                raise _fail(
                    path, f"published[{i}].{k}", "neither a grid field nor a metric; check spelling"
                )
            kind = next(m.kind for m in metrics if m.name == k)
            ok = (isinstance(v, int | float) and not isinstance(v, bool)) or (
                kind == "units" and isinstance(v, str) and re.fullmatch(r"\d+(\+\d+)*", v)
            )
            if not ok:
                form = 'a number or "a+b" active units' if kind == "units" else "a number"
                raise _fail(path, f"published[{i}].{k}", f"expected {form}, got {v!r}")
        published.append((Cell(tuple(where.items())), values))
        if source:
            sources.append((Cell(tuple(where.items())), source))

    defaults = data.get("defaults", {})
    raw_tiers = _require(data, "tiers", dict, path)
    tiers = {}
    for name, settings in raw_tiers.items():
        if name not in TIERS:
            raise _fail(path, f"tiers.{name}", f"unknown tier; use one of {', '.join(TIERS)}")
        if not isinstance(settings, dict):
            raise _fail(path, f"tiers.{name}", "expected a table of settings")
        settings = {**defaults, **settings}
        tier_grid = settings.pop("grid", None)
        departures = settings.pop("departures", [])
        if not isinstance(departures, list) or not all(isinstance(d, str) for d in departures):
            raise _fail(
                path,
                f"tiers.{name}.departures",
                "expected a list of strings, each saying how this tier departs from the paper",
            )
        if tier_grid is not None:
            tier_grid = _grid(tier_grid, path, f"tiers.{name}.grid")
            for key in set(tier_grid) - set(grid) - {SEED}:
                raise _fail(
                    path,
                    f"tiers.{name}.grid.{key}",
                    f"not a field of the table's grid"
                    f" ({', '.join(grid)}); seed replicates are `{SEED}`",
                )
        tiers[name] = Tier(name, settings, tier_grid, tuple(departures))
        where = f"tiers.{name}.grid" if tier_grid else "grid"
        _unique_ids(_product(tier_grid or grid), path, where)

    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _fail(path, "notes", "expected a list of strings")
    ratios = []
    for i, raw in enumerate(data.get("ratios", [])):
        where = f"ratios[{i}]"
        known = {"label", "metric", "over", "under", "under_metric", "target"}
        if (
            not isinstance(raw, dict)
            or set(raw) - known
            or not {"label", "metric", "over"} <= set(raw)
        ):
            raise _fail(
                path, where, "expected label, metric, over; optional: under, under_metric, target"
            )
        ratio = Ratio(**raw)
        for name in (ratio.metric, ratio.under_metric or ratio.metric):
            if name not in metric_names:
                raise _fail(path, f"{where}.metric", f"'{name}' is not a metric")
        if not re.fullmatch(r"(<=|>=) *[0-9.]+", ratio.target or "<= 0"):
            raise _fail(path, f"{where}.target", "expected '<= NUMBER' or '>= NUMBER'")
        ratios.append(ratio)
    plot = _plot(data.get("plot"), path, metric_names, set(grid))
    _axes(data.get("model_arguments", []), task, grid, tiers, path)
    plugins = data.get("models", {})
    if not isinstance(plugins, dict):
        raise _fail(path, "models", 'expected a table { name = "package.module:Constructor" }')
    for name, target in plugins.items():
        _plugin(name, target, path, f"models.{name}")
    derived = _derived(data.get("derived", []), path, published, metric_names)
    return TableSpec(
        id=table_id,
        title=_require(data, "title", str, path),
        task=task,
        paper=paper,
        metrics=metrics,
        grid=grid,
        layout_rows=rows,
        layout_columns=columns,
        published=tuple(published),
        sources=tuple(sources),
        tiers=tiers,
        notes=tuple(notes),
        ratios=tuple(ratios),
        claims=_claims(data.get("claims", []), path, _any_tier(grid, tiers), metric_names),
        plot=plot,
        checks=_checks(data.get("check", {}), path, metrics, tiers),
        derived=derived,
        plugins=tuple(plugins.items()),
        reproduce=_reproduce(data.get("reproduce"), path, metrics, published, grid, tiers),
        path=path,
    )


def _any_tier(grid: dict, tiers: dict[str, Tier]) -> dict[str, list]:
    """Each grid field with the values any tier gives it: a claim may compare cells that only a
    tier's own grid has (e.g. NICE's departures beside the paper's start)."""
    out = {k: list(v) for k, v in grid.items()}
    for tier in tiers.values():
        for k, values in (tier.grid or {}).items():
            out.setdefault(k, [])
            out[k] += [v for v in values if v not in out[k]]
    return out


def _axes(arguments: Any, task: str, grid: dict, tiers: dict[str, Tier], path: Path) -> None:
    """Every grid axis is read by the task or declared a model argument: an axis that is neither
    would make cells that differ in name only."""
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise _fail(path, "model_arguments", 'expected a list of grid axes, e.g. ["k"]')
    own = TASKS[task].fields
    for name in arguments:
        if name not in grid or name in own:
            axes = ", ".join(grid)
            raise _fail(
                path,
                f"model_arguments: {name}",
                f"not a grid axis the model takes (grid"
                f" axes: {axes}; task '{task}' reads {', '.join(own)})",
            )
    for where, axes in [("grid", grid)] + [
        (f"tiers.{t}.grid", v.grid or {}) for t, v in tiers.items()
    ]:
        for axis in axes:
            if axis not in own and axis not in arguments and axis != SEED:
                raise _fail(
                    path,
                    f"{where}.{axis}",
                    f"neither a field task '{task}' reads"
                    f" ({', '.join(own)}) nor in model_arguments; add model_arguments ="
                    f' ["{axis}"] if the model takes it, or drop the axis (one nothing'
                    " reads makes identical cells)",
                )


def _plugin(name: str, target: Any, path: Path, where: str) -> None:
    """A model from outside the repository: a safe row name and a "package.module:Constructor"."""
    if not _SAFE_VALUE.fullmatch(name):
        raise _fail(
            path,
            where,
            "a model's name names result files: use letters, digits and"
            " _ . + = -, not starting with . or -",
        )
    if not isinstance(target, str) or not _PLUGIN_TARGET.fullmatch(target):
        raise _fail(path, where, f"{target!r}: expected 'package.module:Constructor'")


def _derived(raw: Any, path: Path, published: list, metric_names: set) -> tuple[Derived, ...]:
    """`[[derived]]`: metric = via(from, dims) for every published entry matching `where` that
    has `from`; the value joins that entry (in place) and is marked as derived."""
    form = "expected metric, from, via, dims; optional: where = { grid field = value }"
    if not isinstance(raw, list):
        raise _fail(path, "derived", f"expected [[derived]] tables: {form}")
    out = []
    for i, entry in enumerate(raw):
        where = f"derived[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"metric", "from", "via", "dims", "where"}:
            raise _fail(path, where, form)
        for key in ("metric", "from"):
            if entry.get(key) not in metric_names:
                raise _fail(path, f"{where}.{key}", f"{entry.get(key)!r} is not a metric")
        if entry.get("via") not in CONVERSIONS:
            raise _fail(
                path,
                f"{where}.via",
                f"expected one of {', '.join(CONVERSIONS)} (a"
                f" conversion in bench/units.py), got {entry.get('via')!r}",
            )
        dims = entry.get("dims")
        if type(dims) is not int or dims < 1:
            raise _fail(path, f"{where}.dims", f"expected the data's dimensions, got {dims!r}")
        convert = CONVERSIONS[entry["via"]][0]
        found = 0
        for cell, values in published:
            if matches(cell.as_dict(), entry.get("where", {})) and entry["from"] in values:
                if entry["metric"] in values:
                    raise _fail(
                        path,
                        f"{where}.metric",
                        f"the paper gives {entry['metric']}"
                        f" for {cell.id}: publish it or derive it, not both",
                    )
                values[entry["metric"]] = convert(values[entry["from"]], dims)
                out.append(
                    Derived(
                        cell,
                        entry["metric"],
                        entry["from"],
                        entry["via"],
                        dims,
                        values[entry["metric"]],
                    )
                )
                found += 1
        if not found:
            raise _fail(path, f"{where}.where", f"no published entry with {entry['from']} matches")
    return tuple(out)


_TOLERANCE_FORM = "{ abs and/or rel = a number > 0, source = '...', reason = '...' }"
_TOLERANCE_KEYS = {
    "abs": "abs_tol",
    "rel": "rel",
    "source": "source",
    "reason": "reason",
    "where": "where",
}


def _reproduce(
    raw: Any, path: Path, metrics: tuple[Metric, ...], published: list, grid: dict, tiers: dict
) -> tuple[Tolerance, ...]:
    """`[reproduce]`: metric = one band for every cell, or a list of bands each for the cells
    matching its `where` (e.g. one per data set). Each needs the source it was taken from."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _fail(path, "reproduce", f"expected metric = {_TOLERANCE_FORM} under [reproduce]")
    if raw and REPRODUCE_TIER not in tiers:
        raise _fail(
            path,
            "reproduce",
            f"the verdict is for tier `{REPRODUCE_TIER}`, which"
            " [tiers] does not have; add [tiers.full] or drop [reproduce]",
        )
    names = {m.name for m in metrics}
    fields = _any_tier(grid, tiers)
    out = []
    for name, entries in raw.items():
        where = f"reproduce.{name}"
        if name not in names:
            raise _fail(path, where, f"not a metric ({', '.join(sorted(names))})")
        having = [cell for cell, values in published if name in values]
        if not having:
            raise _fail(
                path,
                where,
                f"no published entry gives {name}: a tolerance is for a published number",
            )
        many = isinstance(entries, list)
        if many and not entries:
            raise _fail(path, where, f"an empty list; give {_TOLERANCE_FORM} or a list of them")
        for i, entry in enumerate(entries if many else [entries]):
            at = f"{where}[{i}]" if many else where
            out.append(_tolerance(entry, name, path, at, fields, having))
    return tuple(out)


def _tolerance(
    entry: Any, metric: str, path: Path, at: str, fields: dict, having: list[Cell]
) -> Tolerance:
    if not isinstance(entry, dict):
        raise _fail(path, at, f"expected {_TOLERANCE_FORM}")
    for key, value in entry.items():
        if key not in _TOLERANCE_KEYS:
            raise _fail(
                path,
                f"{at}.{key}",
                f"unknown field; expected {_TOLERANCE_FORM},"
                " optional where = { grid field = value }",
            )
        if key in ("abs", "rel") and (
            not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ):
            raise _fail(path, f"{at}.{key}", f"a tolerance is a number > 0, got {value!r}")
    if not set(entry) & {"abs", "rel"}:
        raise _fail(
            path,
            at,
            "no tolerance given; add abs = ... and/or rel = ... (a fraction"
            " of the published value)",
        )
    for key, what in (
        (
            "source",
            "cite where the tolerance comes from (arXiv id or repository + table, file or"
            " issue), or say that no independent reproduction was found",
        ),
        ("reason", "say why this tolerance (what the reproductions or the paper show)"),
    ):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise _fail(path, f"{at}.{key}", f"missing; {what}")
    cells = entry.get("where", {})
    if not isinstance(cells, dict):
        raise _fail(path, f"{at}.where", "expected { grid field = value }")
    for key, value in cells.items():
        if key not in fields or value not in fields[key]:
            raise _fail(path, f"{at}.where.{key}", f"{value!r} is not in grid.{key}")
    if not any(matches(c.as_dict(), cells) for c in having):
        raise _fail(path, f"{at}.where", f"matches no published entry that gives {metric}")
    return Tolerance(metric=metric, **{_TOLERANCE_KEYS[k]: v for k, v in entry.items()})


def _claims(raw: Any, path: Path, grid: dict, metric_names: set) -> tuple[Claim, ...]:
    if not isinstance(raw, list):
        raise _fail(path, "claims", "expected [[claims]] tables")
    known = {f.name for f in dataclasses.fields(Claim)}
    out = []
    for i, entry in enumerate(raw):
        where = f"claims[{i}]"
        required = {"label", "metric", "expect", "a"}
        if not isinstance(entry, dict) or set(entry) - known or not required <= set(entry):
            raise _fail(
                path, where, "expected label, metric, expect, a; optional: b, where, along, margin"
            )
        claim = Claim(**entry)
        if claim.metric not in metric_names:
            raise _fail(path, f"{where}.metric", f"'{claim.metric}' is not a metric")
        if claim.expect not in CLAIM_EXPECT:
            raise _fail(path, f"{where}.expect", f"expected one of {', '.join(CLAIM_EXPECT)}")
        if (claim.expect == "rising") != bool(claim.along) or (
            claim.along and claim.along not in grid
        ):
            raise _fail(path, f"{where}.along", "expect = 'rising' needs along = a grid field")
        if (claim.expect == "equal") != (claim.margin is not None) or not (
            claim.margin is None
            or (
                isinstance(claim.margin, int | float)
                and not isinstance(claim.margin, bool)
                and claim.margin > 0
            )
        ):
            need = "expect = 'equal' needs margin = a number > 0 (how far apart is a match)"
            raise _fail(path, f"{where}.margin", f"{need}; only it takes one")
        if claim.expect != "rising" and set(claim.a) != set(claim.b):
            raise _fail(path, f"{where}.b", "must set the same grid fields as `a`")
        for side in ("a", "b", "where"):
            for key, value in getattr(claim, side).items():
                values = value if side == "where" else [value]
                if key not in grid or not all(v in grid[key] for v in values):
                    raise _fail(path, f"{where}.{side}.{key}", f"{value!r} is not in grid.{key}")
        out.append(claim)
    return tuple(out)


def registry(spec_dir: Path = SPEC_DIR) -> dict[str, Path]:
    """Table id -> spec file, for every spec shipped with the package."""
    if not spec_dir.is_dir():
        raise SpecError(f"{spec_dir}: no such spec folder; check --specs")
    return {p.stem: p for p in sorted(spec_dir.glob("*.toml"))}


def get_spec(table: str, spec_dir: Path = SPEC_DIR) -> TableSpec:
    paths = registry(spec_dir)
    if table not in paths:
        known = ", ".join(paths) or "none"
        raise SpecError(f"unknown table '{table}'; known tables: {known} (see `bench list`)")
    return load_spec(paths[table])


def register_plugins(spec: TableSpec) -> None:
    """Make the spec's models from outside the repository buildable in this process."""
    import models

    for name, target in spec.plugins:
        try:
            models.register(name, target)
        except models.UnknownModel as e:
            raise SpecError(f"{spec.path}: {e}") from None


def settings_for(cls: type, spec: TableSpec, tier: str) -> Any:
    """Build a task's settings dataclass from a tier's table, naming the field of any mistake."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    raw = spec.settings(tier)
    for key, value in raw.items():
        if key not in names:
            raise _fail(
                spec.path, f"tiers.{tier}.{key}", f"unknown setting; known: {', '.join(names)}"
            )
        if why := why_not(value, str(names[key].type)):  # the annotation's text
            raise _fail(spec.path, f"tiers.{tier}.{key}", why)
    missing = [
        name
        for name, f in names.items()
        if name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        listed = ", ".join(f"'{m}'" for m in missing)
        raise _fail(spec.path, f"tiers.{tier}", f"missing setting {listed}")
    try:
        return cls(**raw)
    except ValueError as e:  # a Settings.__post_init__ found settings that contradict each other
        raise _fail(spec.path, f"tiers.{tier}", str(e)) from None
    except KeyError as e:  # ... or a model name it checks (timing_reference) that is unknown
        raise _fail(spec.path, f"tiers.{tier}", str(e.args[0] if e.args else e)) from None


def check_cells(
    spec: TableSpec, tier: str, preflight: Callable, settings: Any, cells: list[Cell]
) -> None:
    """Ask the task whether it can run each cell (`preflight(cell, settings)`: model known,
    arguments valid, data preparation right for the model) before anything trains; the first
    refusal is one line naming the cell."""
    for cell in cells:
        try:
            preflight(cell.model_params, settings)
        except (ValueError, KeyError, TypeError) as e:
            problem = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise _fail(spec.path, f"grid (tier {tier}, cell {cell.id})", problem) from None
        except Exception as e:  # a constructor that raised anything else (a plugin's, a size < 0)
            problem = f"building model '{cell.as_dict().get('model')}' raised {type(e).__name__}:"
            raise _fail(
                spec.path,
                f"grid (tier {tier}, cell {cell.id})",
                f"{problem} {(str(e).splitlines() or [''])[0]}",
            ) from None
