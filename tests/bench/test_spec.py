"""bench.spec: the shipped specs validate; every malformed spec fails with one line naming the file
and the field; cell ids and `--cells` globs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.spec import SPEC_DIR, SpecError, get_spec, load_spec, registry, settings_for
from bench.tasks import get_task
from bench.tasks.likelihood import Settings as IWAESettings  # the IWAE table's task
from bench.tasks.memory import Settings as MemorySettings

from .conftest import write_spec


def test_shipped_specs_load_and_every_tier_builds_its_settings():
    paths = registry()
    assert {"iwae-table", "revnet-cifar"} <= set(paths)
    for table, path in paths.items():
        spec = load_spec(path)
        assert spec.id == table
        task = get_task(spec.task)
        assert spec.tiers, table
        for tier in spec.tiers:
            settings = settings_for(task.Settings, spec, tier)
            assert isinstance(settings, task.Settings)
            assert spec.cells(tier), (table, tier)


def test_iwae_spec_has_the_papers_grid_and_every_published_cell():
    spec = get_spec("iwae-table")
    assert len(spec.cells("full")) == 2 * 2 * 3 * 2
    assert len(spec.published) == 24
    assert {spec.published_for(c)["nll"] for c in spec.cells("full")} >= {82.90, 108.11}
    # The full tier is the paper's schedule: 8 stages of 3^i epochs, batch 20, k = 5000.
    full = settings_for(IWAESettings, spec, "full")
    assert (full.stages, full.epochs_per_stage, full.batch_size, full.nll_k) == (8, None, 20, 5000)


def expect_error(path, *fields: str) -> str:
    """load_spec(path) + settings_for must fail with one line naming the file and `fields`."""
    with pytest.raises(SpecError) as info:
        spec = load_spec(path)
        settings_for(IWAESettings, spec, "smoke")
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for field in fields:
        assert field in message, message
    return message


def edit(path, old: str, new: str):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def test_the_test_spec_itself_is_valid(spec_dir):
    spec = load_spec(write_spec(spec_dir))
    assert settings_for(IWAESettings, spec, "smoke").nll_k == 4


def test_invalid_toml(spec_dir):
    path = edit(write_spec(spec_dir), 'title = "tiny IWAE table"', "title = tiny IWAE table")
    expect_error(path, "not valid TOML", "line 3")


def test_unknown_top_level_field(spec_dir):
    path = edit(write_spec(spec_dir), 'task = "likelihood"', 'task = "likelihood"\ncolour = "blue"')
    expect_error(path, "colour", "unknown field")


def test_id_must_equal_the_file_name(spec_dir):
    path = edit(write_spec(spec_dir), 'id = "tiny"', 'id = "tiny-table"')
    expect_error(path, ": id:", "tiny-table")


def test_missing_paper_arxiv(spec_dir):
    path = edit(write_spec(spec_dir), 'arxiv = "1509.00519", ', "")
    expect_error(path, "paper.arxiv", "missing")


def test_grid_value_not_a_list(spec_dir):
    path = edit(write_spec(spec_dir), "k = [1]", "k = 1")
    expect_error(path, "grid.k", "list")


def test_published_value_not_in_the_grid(spec_dir):
    path = edit(write_spec(spec_dir), 'model = "iwae", layers = 1', 'model = "iwae", layers = 3')
    expect_error(path, "published[1].layers", "3")


def test_published_unknown_metric(spec_dir):
    path = edit(write_spec(spec_dir), "k = 1, nll = 86.76", "k = 1, nlll = 86.76")
    expect_error(path, "published[0].nlll")


def test_unknown_tier(spec_dir):
    path = edit(write_spec(spec_dir), "[tiers.small]", "[tiers.medium]")
    expect_error(path, "tiers.medium", "smoke, small, full")


def test_unknown_tier_setting(spec_dir):
    path = write_spec(spec_dir, learning_rate=0.1)
    expect_error(path, "tiers.smoke.learning_rate", "unknown setting")


@pytest.mark.parametrize(
    "setting, value",
    [("batch_size", 3.5), ("batch_size", "16"), ("batch_size", True), ("lr", "fast")],
)
def test_wrong_setting_type(spec_dir, setting, value):
    path = write_spec(spec_dir, **{setting: value})
    expect_error(path, f"tiers.smoke.{setting}", "expected")


def test_setting_types_that_are_fine(spec_dir):
    # An int where a float is expected, and None-able settings, are accepted.
    spec = load_spec(write_spec(spec_dir, lr=1, epochs_per_stage=[2]))
    assert settings_for(IWAESettings, spec, "smoke").lr == 1


def test_layout_naming_a_non_grid_field(spec_dir):
    path = edit(write_spec(spec_dir), 'columns = ["model"]', 'columns = ["objective"]')
    expect_error(path, "layout", "objective", "not a grid field")


def test_key_accidentally_under_layout(spec_dir):
    # `notes = ...` written after [layout] belongs to that table in TOML.
    path = edit(write_spec(spec_dir), 'notes = ["a test spec"]\n', "")
    path = edit(path, 'columns = ["model"]', 'columns = ["model"]\nnotes = ["a test spec"]')
    expect_error(path, "layout.notes", "put top-level keys before the first [table]")


def test_cell_ids_follow_the_grid_order():
    spec = get_spec("iwae-table")
    ids = [c.id for c in spec.cells("smoke")]
    assert ids[:3] == ["mnist-layers1-k1-vae", "mnist-layers1-k1-iwae", "mnist-layers1-k5-vae"]
    assert ids[-1] == "omniglot-layers2-k50-iwae"
    assert len(set(ids)) == 24


def test_cells_glob_selection():
    spec = get_spec("iwae-table")
    assert [c.id for c in spec.select("smoke", "mnist-*-k50-*")] == [
        "mnist-layers1-k50-vae",
        "mnist-layers1-k50-iwae",
        "mnist-layers2-k50-vae",
        "mnist-layers2-k50-iwae",
    ]
    picked = spec.select("smoke", "omniglot-layers2-k5-iwae, mnist-layers1-k1-*")
    assert [c.id for c in picked] == [
        "mnist-layers1-k1-vae",
        "mnist-layers1-k1-iwae",
        "omniglot-layers2-k5-iwae",
    ]
    assert spec.select("smoke", "cifar*") == []
    assert len(spec.select("smoke", None)) == 24
    # Globs match whole ids: "mnist" alone is no prefix match.
    assert spec.select("smoke", "mnist") == []


def test_a_tier_grid_replaces_the_papers_grid():
    spec = get_spec("revnet-cifar")
    assert [c.as_dict()["dataset"] for c in spec.cells("smoke")] == ["cifar10"] * 6
    assert len(spec.cells("full")) == 12
    assert spec.cells("smoke")[0].id == "resnet32-cifar10"


def test_unknown_table_lists_the_known_tables(spec_dir):
    write_spec(spec_dir, name="tiny")
    write_spec(spec_dir, name="other")
    with pytest.raises(SpecError, match=r"unknown table 'nope'; known tables: other, tiny"):
        get_spec("nope", spec_dir)
    with pytest.raises(SpecError, match="iwae-table"):
        get_spec("nope", SPEC_DIR)


def test_unknown_task(spec_dir):
    path = edit(write_spec(spec_dir), 'task = "likelihood"', 'task = "gan"')
    expect_error(path, "task", "'gan'", "likelihood")


@pytest.mark.parametrize(
    "layout",
    [
        'rows = ["dataset", "layers"]\ncolumns = ["model"]',
        'rows = ["dataset", "layers", "k", "model"]\ncolumns = ["model"]',
    ],
    ids=["grid field left out", "grid field twice"],
)
def test_layout_must_place_every_grid_field_once(spec_dir, layout):
    # Otherwise two cells would land in one table cell and one of them would silently vanish.
    path = edit(
        write_spec(spec_dir), 'rows = ["dataset", "layers", "k"]\ncolumns = ["model"]', layout
    )
    expect_error(path, "layout")


@pytest.mark.parametrize(
    "reference, problem",
    [('{ block = "bottleneck", units = 18 }', "needs a `model`"), ('"resnet164"', "expected dict")],
)
def test_a_timing_reference_is_a_cell_with_a_model(tmp_path, reference, problem):
    shipped = (SPEC_DIR / "revnet-memory.toml").read_text()
    path = tmp_path / "revnet-memory.toml"
    path.write_text(re.sub(r"(?m)^timing_reference = \{.*\}$", f"timing_reference = {reference}",
                           shipped, count=1))  # fmt: skip
    with pytest.raises(SpecError, match=problem) as info:
        settings_for(MemorySettings, load_spec(path), "full")
    assert str(path) in str(info.value)


def test_reading_a_spec_imports_neither_torch_nor_a_task():
    code = (
        "import sys; from bench.spec import get_spec; get_spec('iwae-table');"
        " assert 'torch' not in sys.modules, 'torch';"
        " assert 'bench.tasks.likelihood' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("value", ["../../ESCAPED", "/tmp/ABSOLUTE", ".hidden", "a b"])
def test_grid_values_that_are_not_file_names_are_refused(spec_dir, value):
    path = write_spec(spec_dir)
    path.write_text(path.read_text().replace('dataset = ["mnist"]', f'dataset = ["{value}"]'))
    with pytest.raises(SpecError, match="cannot be part of a cell id") as error:
        load_spec(path)
    assert "grid.dataset" in str(error.value)


@pytest.mark.parametrize(
    "value, problem", [('"eighty"', "expected a number"), ("true", "expected a number")]
)
def test_published_values_must_be_numbers(spec_dir, value, problem):
    path = write_spec(spec_dir)
    path.write_text(path.read_text().replace("nll = 86.76", f"nll = {value}", 1))
    with pytest.raises(SpecError, match=problem):
        load_spec(path)


def test_published_active_units_take_the_a_plus_b_form(spec_dir):
    path = write_spec(spec_dir)
    path.write_text(path.read_text().replace('active_units = "19"', 'active_units = "16+x"', 1))
    with pytest.raises(SpecError, match='"a\\+b" active units'):
        load_spec(path)


@pytest.mark.parametrize(
    "setting, value, problem",
    [
        ("batch_size", 0, "batch_size must be a positive number"),
        ("batch_size", -5, "batch_size must be a positive number"),
        ("stages", 0, "stages must be a positive number"),
        ("nll_k", 0, "nll_k must be a positive number"),
        ("n_train", 0, "n_train must be a positive number"),
        ("epochs_per_stage", [-1], "non-negative integers"),
        ("prep", "gaussian", "prep must be one of"),
        ("data", "cloud", "data must be 'real'"),
    ],
)
def test_setting_values_are_checked_when_the_spec_is_read(spec_dir, setting, value, problem):
    spec = load_spec(write_spec(spec_dir, **{setting: value}))
    with pytest.raises(SpecError, match=problem) as error:
        settings_for(IWAESettings, spec, "smoke")
    assert str(spec.path) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_spec_folder_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="no such spec folder"):
        registry(tmp_path / "nope")
