"""Table specs: TOML files in bench/specs/, loaded and validated into frozen dataclasses.

A spec is data, not code: which cells to run (the grid), how to train them per tier, and what the
paper published. Every validation error is one line naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import TASKS  # the registry only: no task (and so no torch) is imported here

SPEC_DIR = Path(__file__).parent / "specs"
TIERS = ("smoke", "small", "full")
_TOP_FIELDS = {
    "id", "title", "task", "paper", "notes", "metrics", "grid", "layout", "published",
    "ratios", "plot", "defaults", "tiers",
}  # fmt: skip
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


@dataclass(frozen=True)
class Ratio:
    """A claim checked as a ratio of one metric between two cells of the same run."""

    label: str
    metric: str
    over: dict[str, Any]
    under: dict[str, Any] | None = None  # default: the same cell as `over`
    under_metric: str | None = None  # default: `metric`
    target: str = ""  # e.g. "<= 0.15"


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
    plot: dict[str, Any] = field(default_factory=dict)  # x, y (metrics), series (grid fields)
    path: Path = field(default=Path(), compare=False)

    def cells(self, tier: str) -> list[Cell]:
        return _product(self.tiers[tier].grid or self.grid)

    def table_cells(self, tier: str) -> list[Cell]:
        """The paper's cells, then any extra cells this tier runs (e.g. a CIFAR stand-in)."""
        return list(dict.fromkeys(_product(self.grid) + self.cells(tier)))

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
        grid[key] = tuple(values)
    return grid


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


def load_spec(path: str | Path) -> TableSpec:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None

    unknown = set(data) - _TOP_FIELDS
    if unknown:
        raise _fail(
            path, sorted(unknown)[0], f"unknown field; known: {', '.join(sorted(_TOP_FIELDS))}"
        )
    table_id = _require(data, "id", str, path)
    task = _require(data, "task", str, path)
    if task not in TASKS:
        raise _fail(path, "task", f"unknown task '{task}'; known: {', '.join(TASKS)}")
    if table_id != path.stem:
        raise _fail(path, "id", f"'{table_id}' must equal the file name '{path.stem}'")
    paper = _require(data, "paper", dict, path)
    for key in ("arxiv", "table"):
        _require(paper, key, str, path, "paper")
    metrics = _metrics(data.get("metrics"), path)
    metric_names = {m.name for m in metrics}
    grid = _grid(data.get("grid"), path, "grid")

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
        if tier_grid is not None:
            tier_grid = _grid(tier_grid, path, f"tiers.{name}.grid")
        tiers[name] = Tier(name, settings, tier_grid)

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
    plot = data.get("plot", {})
    for key, value in plot.items():
        names = value if isinstance(value, list) else [value]
        known = metric_names if key in ("x", "y") else set(grid) if key == "series" else None
        if known is None or not all(n in known for n in names):
            raise _fail(
                path, f"plot.{key}", "expected x = metric, y = [metrics], series = [fields]"
            )
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
        plot=plot,
        path=path,
    )


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


def settings_for(cls: type, spec: TableSpec, tier: str) -> Any:
    """Build a task's settings dataclass from a tier's table, naming the field of any mistake."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    raw = spec.settings(tier)
    for key, value in raw.items():
        if key not in names:
            raise _fail(
                spec.path, f"tiers.{tier}.{key}", f"unknown setting; known: {', '.join(names)}"
            )
        kind = str(names[key].type)
        expected = _TYPES.get(kind.split("[")[0].split(" |")[0])
        ok = (
            expected is None
            or (value is None and "None" in kind)
            or (
                isinstance(value, expected)
                and not (isinstance(value, bool) and expected is not bool)
            )
        )
        if not ok:
            raise _fail(spec.path, f"tiers.{tier}.{key}", f"expected {kind}, got {value!r}")
    try:
        return cls(**raw)
    except TypeError as e:
        missing = str(e).split("argument")[-1].strip(": ")
        raise _fail(spec.path, f"tiers.{tier}", f"missing setting {missing}") from None
    except ValueError as e:  # a Settings.__post_init__ found settings that contradict each other
        raise _fail(spec.path, f"tiers.{tier}", str(e)) from None


def check_cells(spec: TableSpec, tier: str, task: Any, settings: Any, cells: list[Cell]) -> None:
    """Ask the task whether it can run each cell (model known, arguments valid, data preparation
    right for the model) before anything trains; the first refusal is one line naming the cell."""
    for cell in cells:
        try:
            task.preflight(cell.as_dict(), settings)
        except (ValueError, KeyError, TypeError) as e:
            problem = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise _fail(spec.path, f"grid (tier {tier}, cell {cell.id})", problem) from None


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict}
