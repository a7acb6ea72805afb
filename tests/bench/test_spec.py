"""bench.spec: the shipped specs validate; every malformed spec fails with one line naming the file
and the field; cell ids and `--cells` globs."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from bench.spec import (
    SPEC_DIR,
    SpecError,
    check_cells,
    get_spec,
    load_spec,
    registry,
    settings_for,
)
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


@pytest.mark.parametrize("seeds", ["[-1, 0]", "[0.5]", '["a"]', "[0, 0]", "[65536]", "[true]"])
def test_seed_replicates_are_distinct_small_integers(spec_dir, seeds):
    grid = {"dataset": ["mnist"], "layers": [1], "k": [1], "model": ["vae"]}
    path = edit(
        write_spec(spec_dir, grid=grid), 'model = ["vae"] }', f'model = ["vae"], seed = {seeds} }}'
    )
    expect_error(path, "tiers.smoke.grid.seed", "distinct integers from 0 to 65535")


def test_a_tier_grid_field_the_table_lacks_is_refused(spec_dir):
    grid = {"dataset": ["mnist"], "layers": [1], "k": [1], "model": ["vae"], "seeds": [0, 1]}
    path = write_spec(spec_dir, grid=grid)  # a misspelt `seed` would run the cell twice alike
    expect_error(path, "tiers.smoke.grid.seeds", "seed replicates are `seed`")


@pytest.mark.parametrize(
    "claim, problem",
    [
        ('expect = "equal"', "needs margin"),
        ('expect = "equal"\nmargin = 0', "needs margin"),
        ('expect = "lower"\nmargin = 1.0', "only it takes one"),
    ],
)
def test_an_equal_claim_needs_a_margin_and_only_it(spec_dir, claim, problem):
    path = write_spec(spec_dir)
    text = path.read_text() + (
        f'\n[[claims]]\nlabel = "x"\nmetric = "nll"\n{claim}\n'
        'a = { model = "iwae" }\nb = { model = "vae" }\n'
    )
    path.write_text(text)
    expect_error(path, "claims[0].margin", problem)


def test_seed_replicates_belong_in_a_tier_grid(spec_dir):
    path = edit(
        write_spec(spec_dir),
        'model = ["vae", "iwae"]\n',
        'model = ["vae", "iwae"]\nseed = [0, 1]\n',
    )
    expect_error(path, "grid.seed", "tier's grid")


def test_published_value_not_in_the_grid(spec_dir):
    path = edit(write_spec(spec_dir), 'model = "iwae", layers = 1', 'model = "iwae", layers = 3')
    expect_error(path, "published[1].layers", "3")


def test_published_unknown_metric(spec_dir):
    path = edit(write_spec(spec_dir), "k = 1, nll = 86.76", "k = 1, nlll = 86.76")
    expect_error(path, "published[0].nlll")


def test_unknown_tier(spec_dir):
    path = edit(write_spec(spec_dir), "[tiers.small]", "[tiers.huge]")
    expect_error(path, "tiers.huge", "smoke, small, medium, full")


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
    medium = spec.cells("medium")  # replicates: one table cell, two seeds
    assert [c.id for c in medium[:2]] == ["resnet32-cifar10-seed0", "resnet32-cifar10-seed1"]
    assert medium[1].replicate_of.id == "resnet32-cifar10" and "seed" not in medium[1].model_params
    assert len(spec.table_cells("medium")) == 12


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
    [
        ('{ block = "bottleneck", units = 18 }', "needs a `model`"),
        ('"resnet164"', "expected dict"),
        ('{ model = "ghost", units = 1 }', "tiers.full: unknown model 'ghost'"),
    ],
)
def test_a_timing_reference_is_a_cell_with_a_model(tmp_path, reference, problem):
    shipped = (SPEC_DIR / "revnet-memory.toml").read_text()
    path = tmp_path / "revnet-memory.toml"
    path.write_text(
        re.sub(
            r"(?m)^timing_reference = \{.*\}$", f"timing_reference = {reference}", shipped, count=1
        )
    )
    with pytest.raises(SpecError, match=problem) as info:
        settings_for(MemorySettings, load_spec(path), "full")
    assert str(path) in str(info.value)


def test_a_timing_reference_with_a_wrong_argument_is_refused_before_anything_runs(tmp_path):
    shipped = (SPEC_DIR / "revnet-memory.toml").read_text()
    path = tmp_path / "revnet-memory.toml"
    path.write_text(
        re.sub(
            r"(?m)^timing_reference = \{.*\}$",
            'timing_reference = { model = "resnet_cifar", block = "bottleneck", units = 18.5 }',
            shipped,
            count=1,
        )
    )
    spec, task = load_spec(path), get_task("memory")
    settings = settings_for(task.Settings, spec, "full")
    with pytest.raises(SpecError, match="model 'resnet_cifar': units takes int, got 18.5"):
        check_cells(spec, "full", task.preflight, settings, spec.cells("full"))


def test_reading_a_spec_imports_neither_torch_nor_a_task():
    code = (
        "import sys; from bench.spec import get_spec; get_spec('iwae-table');"
        " import bench.render; assert 'torch' not in sys.modules, 'torch';"
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


GOOD_PLOT = """[plot]
x = "k"
y = ["nll", "active_units"]
series = ["model"]
panels = ["dataset", "layers"]
error = { nll = "nll_stderr" }
log_x = true

[grid]"""


def test_a_plot_section_is_read_into_its_figure(spec_dir):
    spec = load_spec(edit(write_spec(spec_dir), "[grid]", GOOD_PLOT))
    plot = spec.plot
    assert (plot.kind, plot.x, plot.y, plot.series, plot.panels) == (
        "lines",
        "k",
        ("nll", "active_units"),
        ("model",),
        ("dataset", "layers"),
    )
    assert plot.error == {"nll": "nll_stderr"} and plot.log_x and not plot.samples
    assert load_spec(write_spec(spec_dir)).plot is None


@pytest.mark.parametrize(
    "old, new, fields",
    [
        ('x = "k"', 'x = "depth"', ("plot.x", "'depth' is not a metric or a grid field")),
        ('x = "k"\n', "", ("plot", "missing x or y")),
        ('y = ["nll", "active_units"]', 'y = ["nll", "model"]', ("plot.y", "'model'")),
        ('y = ["nll", "active_units"]', "y = []", ("plot.y", "at least one metric")),
        ('series = ["model"]', 'series = ["nll"]', ("plot.series", "not a grid field")),
        ('panels = ["dataset", "layers"]', 'panels = ["k"]', ("plot", "different fields")),
        ("log_x = true", 'log_x = "yes"', ("plot.log_x", "true or false")),
        ("log_x = true", "colour = 1", ("plot.colour", "unknown field")),
        ('error = { nll = "nll_stderr" }', 'error = { rec = "rec_se" }', ("plot.error.rec",)),
        ('error = { nll = "nll_stderr" }', "error = { nll = 1 }", ("plot.error",)),
        ('x = "k"', 'kind = "pie"\nx = "k"', ("plot.kind", "lines, bars")),
        ('x = "k"', 'kind = "bars"\nx = "nll"', ("plot.x", "not a grid field")),
    ],
)
def test_a_malformed_plot_section_names_its_field(spec_dir, old, new, fields):
    path = edit(edit(write_spec(spec_dir), "[grid]", GOOD_PLOT), old, new)
    expect_error(path, *fields)


def test_every_shipped_table_declares_a_claim_figure():
    for table in registry():
        assert get_spec(table).plot is not None, table


CHECK = """
[check.smoke]
subset = "mnist-*-vae"
nll = { rel = 1e-3, abs = 0.1, reason = "float noise" }
active_units = { abs = 1, reason = "threshold flips" }
"""


def with_check(spec_dir, text: str = CHECK):
    path = write_spec(spec_dir)
    path.write_text(path.read_text() + text)
    return path


def test_check_tolerances_load_as_rules(spec_dir):
    check = load_spec(with_check(spec_dir)).checks["smoke"]
    assert check.subset == "mnist-*-vae"
    assert (check.rules["nll"].rel, check.rules["nll"].abs_tol) == (1e-3, 0.1)
    assert check.rules["active_units"].reason == "threshold flips"


@pytest.mark.parametrize(
    "old, new, fields",
    [
        (', reason = "float noise"', "", ["check.smoke.nll.reason", "missing"]),
        ('reason = "float noise"', 'reason = ""', ["check.smoke.nll.reason"]),
        ("active_units = { abs = 1", "units = { abs = 1", ["check.smoke.units", "not a metric"]),
        ('active_units = { abs = 1, reason = "threshold flips" }', "", ["without a tolerance"]),
        ("[check.smoke]", "[check.full]", ["check.full", "no such tier"]),
        ("rel = 1e-3", "rel = -1", ["check.smoke.nll.rel", ">= 0"]),
        ("rel = 1e-3", 'rel = "1%"', ["check.smoke.nll.rel", "a number"]),
        ("rel = 1e-3", "margin = 1", ["check.smoke.nll.margin", "unknown field"]),
        ("rel = 1e-3, abs = 0.1,", "skip = true, abs = 0.1,", ["check.smoke.nll", "skip"]),
        ("rel = 1e-3, abs = 0.1,", "exact = true, rel = 1,", ["check.smoke.nll", "exact"]),
        ("rel = 1e-3, abs = 0.1,", "", ["check.smoke.nll", "no tolerance"]),
        ('subset = "mnist-*-vae"', "subset = 3", ["check.smoke.subset"]),
    ],
)
def test_malformed_check_tolerances(spec_dir, old, new, fields):
    path = edit(with_check(spec_dir), old, new)
    expect_error(path, *fields)


def test_shipped_checks_name_a_rule_for_every_metric():
    for table in registry():
        spec = get_spec(table)
        assert "smoke" in spec.checks, table
        for check in spec.checks.values():
            assert set(check.rules) == {m.name for m in spec.metrics}, table


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("lr = 1e-3", "lr = nan", "defaults.lr"),
        ("lr = 1e-3", "lr = inf", "defaults.lr"),
        ("nll = 86.76", "nll = -inf", "published[0].nll"),
        ("n_test = 16", "n_test = nan", "tiers.smoke.n_test"),
    ],
)
def test_numbers_that_are_not_finite_are_refused(spec_dir, old, new, field):
    path = edit(write_spec(spec_dir), old, new)
    expect_error(path, field, "is not a finite number")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_settings_built_in_code_refuse_what_a_spec_cannot_say(value):
    with pytest.raises(ValueError, match="lr must be a positive number"):
        IWAESettings(lr=value)


@pytest.mark.parametrize("ks", ["[1, 5.0, 50]", "[1, 1.5]", "[1, true]"])
def test_a_grid_value_of_the_wrong_kind_for_its_model_is_refused_before_training(spec_dir, ks):
    spec = load_spec(edit(write_spec(spec_dir), "k = [1]", f"k = {ks}"))
    task = get_task(spec.task)
    with pytest.raises(SpecError, match=r"grid \(tier smoke, cell .*\): model '\w+': k takes int"):
        check_cells(
            spec,
            "smoke",
            task.preflight,
            settings_for(task.Settings, spec, "smoke"),
            spec.cells("smoke"),
        )


def test_two_cells_with_one_id_are_refused(spec_dir):
    path = edit(write_spec(spec_dir), "k = [1]", 'k = [1, "k1"]')
    expect_error(path, "grid", "two cells have the id 'mnist-layers1-k1-vae'", "k = 1", "k = 'k1'")


@pytest.mark.parametrize("name", ["..", "-x"])
def test_a_table_id_must_be_a_safe_file_name(spec_dir, name):
    expect_error(write_spec(spec_dir, name=name), ": id:", "names result files and folders")


def test_a_spec_that_is_not_utf8_is_one_line(spec_dir):
    path = write_spec(spec_dir)
    path.write_bytes(path.read_bytes().replace(b"a test spec", b"a t\xe9st spec"))
    expect_error(path, "not UTF-8 text", "save it as UTF-8")


def test_nice_spec_declares_its_departures_ablation_and_derived_number():
    """The small tier crosses both departures (init = data, s_lr = 10) with the paper's start,
    each departure declared; the full tier is the paper's start with the text's Adam; the
    MNIST bits/dim is derived from the published 1980.50 nats, 8 - 1980.50 / (784 ln 2)."""
    spec = get_spec("nice")
    task = get_task(spec.task)
    small = {
        (c.as_dict()["dataset"], c.as_dict()["init"], c.as_dict()["s_lr"])
        for c in spec.cells("small")
    }
    assert small == {
        (d, i, s) for d in ("mnist", "cifar10_lossless") for i in ("data", "zero") for s in (10, 1)
    }
    assert [c.id for c in spec.cells("full")] == [
        "nice-mnist-zero-s_lr1",
        "nice-cifar10_lossless-zero-s_lr1",
    ]
    assert settings_for(task.Settings, spec, "full").adam_beta2 == 0.99
    departures = " ".join(spec.tiers["small"].departures)
    assert "init = data" in departures and "s_lr = 10" in departures
    assert spec.tiers["full"].departures and spec.tiers["smoke"].departures
    for tier in spec.tiers:
        check_cells(
            spec, tier, task.preflight, settings_for(task.Settings, spec, tier), spec.cells(tier)
        )
    mnist = next(c for c in spec.cells("small") if c.as_dict()["dataset"] == "mnist")
    assert spec.published_for(mnist)["bits_per_dim"] == pytest.approx(4.3555, abs=1e-4)
    exact = 8 - 1980.50 / (784 * math.log(2))
    assert spec.published_for(mnist)["bits_per_dim"] == pytest.approx(exact, rel=1e-12)
    assert spec.derived_for(mnist, "bits_per_dim").formula == "8 - loglik / (D ln 2)"
    assert spec.derived_for(mnist, "loglik_continuous") is None  # printed in the paper


DERIVED = """
[[derived]]
metric = "active_units"
from = "nll"
via = "bits_per_dim_of_loglik"
dims = 784
where = { model = "vae" }
"""


@pytest.mark.parametrize(
    "old, new, fields",
    [
        ('via = "bits_per_dim_of_loglik"', 'via = "exp"', ["derived[0].via", "bits_per_dim_of"]),
        ('from = "nll"', 'from = "loglik"', ["derived[0].from", "not a metric"]),
        ("dims = 784", "dims = 0", ["derived[0].dims"]),
        ("dims = 784", "dims = 784\nunit = 1", ["derived[0]", "expected metric, from"]),
        ('metric = "active_units"', 'metric = "nll"', ["derived[0].metric", "not both"]),
        ('where = { model = "vae" }', 'where = { model = "gan" }', ["derived[0].where"]),
    ],
)
def test_malformed_derived_values_name_their_field(spec_dir, old, new, fields):
    path = write_spec(spec_dir)
    edit(path, "[metrics.nll]", DERIVED.replace(old, new) + "\n[metrics.nll]")
    expect_error(path, *fields)


def test_a_derived_value_joins_its_published_entry_only(spec_dir):
    path = write_spec(spec_dir)
    edit(
        path,
        'model = "vae",  layers = 1, k = 1, nll = 86.76, active_units = "19"',
        'model = "vae",  layers = 1, k = 1, nll = 86.76',
    )
    edit(path, "[metrics.nll]", DERIVED + "\n[metrics.nll]")
    spec = load_spec(path)
    vae, iwae = spec.cells("smoke")[0], spec.cells("smoke")[1]
    assert spec.published_for(vae)["active_units"] == pytest.approx(
        8 - 86.76 / (784 * math.log(2)), rel=1e-12
    )
    assert spec.derived_for(vae, "active_units").source == "nll"
    assert "active_units" in spec.published_for(iwae)  # published (as "19"), not derived
    assert spec.derived_for(iwae, "active_units") is None


def test_departures_are_a_list_of_strings(spec_dir):
    assert load_spec(write_spec(spec_dir, departures=["fewer epochs"])).tiers[
        "smoke"
    ].departures == ("fewer epochs",)
    expect_error(write_spec(spec_dir, departures="fewer epochs"), "tiers.smoke.departures")


def test_a_metric_its_task_does_not_report_is_refused(tmp_path):
    text = (SPEC_DIR / "pixelcnn-mnist.toml").read_text()
    path = tmp_path / "pixelcnn-mnist.toml"
    path.write_text(text.replace("[metrics.nll]", "[metrics.nlll]"))
    with pytest.raises(SpecError, match=r"metrics.nlll: task 'likelihood' reports no such metric"):
        load_spec(path)


def test_a_metric_against_its_declared_direction_is_refused(tmp_path):
    text = (SPEC_DIR / "revnet-cifar.toml").read_text()
    path = tmp_path / "revnet-cifar.toml"
    path.write_text(
        text.replace('format = ".2f"\nbetter = "lower"', 'format = ".2f"\nbetter = "higher"', 1)
    )
    with pytest.raises(SpecError, match=r"metrics.error.better: 'higher', but task 'classify'"):
        load_spec(path)


def test_an_axis_no_one_reads_is_refused(tmp_path):
    text = (SPEC_DIR / "revnet-cifar.toml").read_text()
    path = tmp_path / "revnet-cifar.toml"
    axis = 'dataset = ["cifar10", "cifar100"]\n'
    text = text.replace(axis, axis + "width = [1, 2]\n").replace(
        'rows = ["model"]', 'rows = ["model", "width"]'
    )
    path.write_text(text)
    with pytest.raises(
        SpecError,
        match=r"grid.width: neither a field task 'classify' reads"
        r" \(dataset, model\) nor in model_arguments",
    ):
        load_spec(path)
    text = (SPEC_DIR / "iwae-table.toml").read_text()
    path = tmp_path / "iwae-table.toml"
    path.write_text(text.replace('model_arguments = ["layers", "k"]', 'model_arguments = ["k"]'))
    with pytest.raises(SpecError, match=r"grid.layers: neither a field"):
        load_spec(path)
    path.write_text(text.replace('["layers", "k"]', '["layers", "k", "dataset"]'))
    with pytest.raises(SpecError, match=r"model_arguments: dataset: not a grid axis the model"):
        load_spec(path)
