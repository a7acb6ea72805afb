"""Golden test: the committed tables are what the committed records render to, byte for byte.

Re-rendered from results/ into a temporary folder through the CLI, as a user would:

- every `tables/<table>-<tier>.md` (`bench table`, one per table and tier with records);
- the scoreboard `tables/README.md` (`bench summary`), whose links need the figures present;
- the figures of one table, `bench plot factorised --tier small` (its bar chart of the claim,
  measured vs published and the sample grids side by side: about a second).

Not covered, since no record of results/<table>/<tier>/ makes them: `plan-*.md` (`bench plan`),
`rehearsal-*.md` (`bench run --rehearse`), `perf.md` and `perf.png` (`bench perf`),
`invert-*.png` (`bench invert`), the PixelCNN++ noise files (tools/pixelcnnpp_noise.py), the
sample grids in `tables/samples/` (written while a cell trains) and the other tables' figures
(seconds each to draw).

A change that is not meant to move a table must leave this passing; one that is meant to moves
them with `bench table`, `bench summary` and `bench plot`, and commits the result with it.
"""

from __future__ import annotations

import contextlib
import difflib
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
    stem = "-".join(FIGURES)
    return sorted(p.name for p in COMMITTED.glob(f"{stem}*.png"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A tables folder rendered from the committed records. The other figures, which `bench
    summary` links to when they exist, are copied; so are the sample grids `bench plot` reads."""
    out = tmp_path_factory.mktemp("tables")
    drawn = set(figure_names())
    for png in COMMITTED.glob("*.png"):
        if png.name not in drawn:
            shutil.copy(png, out / png.name)
    shutil.copytree(COMMITTED / "samples", out / "samples")
    shutil.copy(COMMITTED / "perf.md", out / "perf.md")
    # Relative --results, from the checkout's root: each table's header names that folder.
    with contextlib.chdir(ROOT):
        for table, tier in tiers_with_records():
            assert main(["--tables", str(out), "table", table, "--tier", tier]) == 0, table
        table, tier = FIGURES
        assert main(["--tables", str(out), "plot", table, "--tier", tier]) == 0
        assert main(["--tables", str(out), "summary"]) == 0
    return out


def test_every_committed_table_has_records_and_every_tier_with_records_a_table():
    assert committed_tables() == sorted(f"{t}-{tier}.md" for t, tier in tiers_with_records())


@pytest.mark.parametrize("name", [*committed_tables(), "README.md"])
def test_a_committed_table_is_what_its_records_render_to(rendered, name):
    ours, theirs = (rendered / name).read_text(), (COMMITTED / name).read_text()
    diff = difflib.unified_diff(theirs.splitlines(), ours.splitlines(), "committed", "rendered")
    assert ours == theirs, "\n".join(list(diff)[:40])


def drawn_by(png: Path) -> str:
    """The version of matplotlib that drew a PNG, from the 'Software' text chunk it writes."""
    found = re.search(r"version\s*([\w.]+)", Image.open(png).info.get("Software", ""))
    return found.group(1) if found else "unknown"


@pytest.mark.parametrize("name", figure_names())
def test_a_committed_figure_is_what_its_records_draw(rendered, name):
    """Byte for byte where this matplotlib drew the committed figure; pixel for pixel where
    another did. The bytes hold the encoder's compression (Pillow's zlib) besides the drawing,
    and another matplotlib lays text out differently: a figure drawn by another version is not
    this code's regression, so it is skipped with the command that redraws it."""
    ours, theirs = rendered / name, COMMITTED / name
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
