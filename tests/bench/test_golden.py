"""Golden test: the committed tables are what the committed records render to, byte for byte.

Re-rendered from results/ into a temporary folder through the CLI, as a user would:

- every `tables/<table>-<tier>.md` (`bench table`, one per table and tier with records);
- the scoreboard `tables/README.md` (`bench summary`), whose links need the figures present;
- the figures of one table, all that `bench plot factorised --tier small` draws (the bar chart
  of its claim, measured vs published, the sample grids side by side: about a second).

Not covered, since no record of results/<table>/<tier>/ makes them: `plan-*.md` (`bench plan`),
`rehearsal-*.md` (`bench run --rehearse`), `perf.md` and `perf.png` (`bench perf`),
`invert-*.png` (`bench invert`), the PixelCNN++ noise files (tools/pixelcnnpp_noise.py), the
sample grids in `tables/samples/` (written while a cell trains), the other tables' figures
(seconds each to draw) and `gap-vs-budget.png` (`python -m bench.plot`).

A change that is not meant to move a table must leave this passing; one that is meant to moves
them with `bench table`, `bench summary` and `bench plot`, and commits the result with it.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.records import RESULTS_DIR, TABLES_DIR
from bench.spec import get_spec, registry

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / TABLES_DIR
# Made by other commands than `bench table` and `bench summary` (see the docstring).
OTHERS = ("plan-*.md", "rehearsal-*.md", "perf.md")
FIGURES = ("factorised", "small")


def tiers_with_records() -> list[tuple[str, str]]:
    return [
        (table, tier)
        for table in sorted(registry())
        for tier in get_spec(table).tiers
        if (ROOT / RESULTS_DIR / table / tier).is_dir()
    ]


def committed_tables() -> list[str]:
    others = {p.name for pattern in OTHERS for p in COMMITTED.glob(pattern)}
    return sorted(p.name for p in COMMITTED.glob("*.md") if p.name not in others | {"README.md"})


def figure_names() -> list[str]:
    """The committed figures of FIGURES' table and tier, its tier-spanning ones included."""
    table, tier = FIGURES
    names = {p.name for p in COMMITTED.glob(f"{table}-{tier}*.png")}
    return sorted(names | {p.name for p in COMMITTED.glob(f"{table}-gap-*.png")})


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, list[str]]:
    """A tables folder rendered from the committed records, and the figures `bench plot` drew
    there. The other figures, which `bench summary` links to when they exist, are copied; so are
    the sample grids `bench plot` reads."""
    out = tmp_path_factory.mktemp("tables")
    redrawn = set(figure_names())
    for png in COMMITTED.glob("*.png"):
        if png.name not in redrawn:
            shutil.copy(png, out / png.name)
    shutil.copytree(COMMITTED / "samples", out / "samples")
    shutil.copy(COMMITTED / "perf.md", out / "perf.md")
    # Relative --results, from the checkout's root: each table's header names that folder.
    with contextlib.chdir(ROOT):
        for table, tier in tiers_with_records():
            assert main(["--tables", str(out), "table", table, "--tier", tier]) == 0, table
        table, tier = FIGURES
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["--tables", str(out), "plot", table, "--tier", tier]) == 0
        assert main(["--tables", str(out), "summary"]) == 0
    return out, sorted(Path(line).name for line in printed.getvalue().split())


def test_every_committed_table_has_records_and_every_tier_with_records_a_table():
    assert committed_tables() == sorted(f"{t}-{tier}.md" for t, tier in tiers_with_records())


@pytest.mark.parametrize("name", [*committed_tables(), "README.md"])
def test_a_committed_table_is_what_its_records_render_to(rendered, name):
    ours, theirs = (rendered[0] / name).read_text(), (COMMITTED / name).read_text()
    diff = difflib.unified_diff(theirs.splitlines(), ours.splitlines(), "committed", "rendered")
    assert ours == theirs, "\n".join(list(diff)[:40])


def drawn_by(png: Path) -> str:
    """The version of matplotlib that drew a PNG, from the 'Software' text chunk it writes."""
    found = re.search(r"version\s*([\w.]+)", Image.open(png).info.get("Software", ""))
    return found.group(1) if found else "unknown"


def test_the_figures_drawn_are_the_committed_ones(rendered):
    _, drawn = rendered
    assert drawn == figure_names()


@pytest.mark.parametrize("name", figure_names())
def test_a_committed_figure_is_what_its_records_draw(rendered, name):
    """Where this version of matplotlib drew the committed figure: byte for byte, else pixel for
    pixel (the bytes also hold the encoder's compression, Pillow's zlib, which another machine
    may do differently). Where another version drew it: skipped, naming the command that redraws
    it, since each version lays text out its own way, which is no regression of this code."""
    ours, theirs = rendered[0] / name, COMMITTED / name
    if drawn_by(ours) != drawn_by(theirs):
        pytest.skip(
            f"{name} was drawn by matplotlib {drawn_by(theirs)}, this is {drawn_by(ours)}:"
            f" `bench plot {' --tier '.join(FIGURES)}` redraws it"
        )
    if ours.read_bytes() == theirs.read_bytes():
        return
    a, b = (np.asarray(Image.open(p).convert("RGBA")) for p in (ours, theirs))
    assert a.shape == b.shape, f"{name}: {a.shape} drawn, {b.shape} committed"
    differ = np.any(a != b, axis=-1)
    assert not differ.any(), f"{name}: {int(differ.sum())} pixels differ"
