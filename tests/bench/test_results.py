"""bench.results: a metric value as one number, a cell's replicates pooled, and the DataFrame a
notebook loads (one row per table cell, the grid whole)."""

from __future__ import annotations

import math
import statistics

import pytest

from bench.records import Record, write_record
from bench.results import Measured, load, measured, number, pooled, rows

from .conftest import VAE


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        (3, 3.0),
        ("2.5", 2.5),
        ([16, 5], 21.0),
        ("16+5", 21.0),
        ("19", 19.0),
        ("text", None),
        ("1+x", None),
        ("-3", -3.0),
    ],
)
def test_a_metric_value_as_one_number(given, expected):
    assert number(given) == expected


def _ok(cell, nll, seed=0, **changes):
    params = {"dataset": "mnist", "layers": 1, "k": 1, "model": cell.rsplit("-", 1)[1]}
    metrics = {"nll": nll, "nll_stderr": 0.5, "active_units": [20]}
    return Record("tiny", "smoke", cell, params, "ok", metrics=metrics, seed=seed, **changes)


def test_replicates_pool_to_a_mean_sd_and_standard_error_and_failures_count_nowhere():
    runs = [_ok(VAE, 90.0), _ok(VAE, 92.0, seed=1), _ok(VAE, 97.0, seed=2)]
    failed = Record("tiny", "smoke", VAE, {}, "failed", metrics={"nll": 1.0})
    got = measured([*runs, failed], "nll", planned=4)
    assert (got.n, got.planned, got.mean) == (3, 4, 93.0)
    assert got.sd == pytest.approx(statistics.stdev([90.0, 92.0, 97.0]))
    assert got.se == pytest.approx(got.sd / math.sqrt(3))
    assert pooled(runs, "nll") == (got.mean, got.se)
    assert measured([_ok(VAE, 90.0)], "nll").se is None and Measured().mean is None
    assert measured(runs, "active_units").mean == 20.0


def test_the_frame_has_a_row_per_table_cell_with_settings_metrics_errors_and_provenance(
    tmp_path, tiny, spec_dir
):
    write_record(tmp_path, _ok(VAE, 90.25, wall_s=12.0, commit="abc", device="cpu: x, 1 threads"))
    vae, iwae = rows(tiny, "smoke", {VAE: _ok(VAE, 90.25, wall_s=12.0, commit="abc")})
    assert (vae["model"], vae["nll"], vae["nll_se"]) == ("vae", 90.25, 0.5)
    assert vae["nll_published"] == 86.76 and vae["active_units_published"] == 19.0
    assert (vae["active_units"], vae["active_units_se"]) == (20.0, None)
    assert (vae["status"], vae["runs"], vae["seeds"], vae["commits"]) == ("ok", 1, [0], ["abc"])
    assert (iwae["status"], iwae["nll"], iwae["runs"], iwae["wall_s"]) == ("not run", None, 0, None)
    df = load("tiny", "smoke", results=tmp_path, specs=spec_dir)
    assert list(df["model"]) == ["vae", "iwae"] and df.loc[0, "nll"] == 90.25
    assert math.isnan(df.loc[1, "nll"]) and df.loc[0, "devices"] == ["cpu: x, 1 threads"]
    assert {"dataset", "layers", "k", "nll_se", "evaluated", "planned"} <= set(df.columns)
