"""Figures are drawn from records alone, nothing is drawn without them, and each figure carries
what its spec declares: a panel per y metric and panel value, a line or bar per series, the
published values exactly as the spec gives them."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bench.budget import gap_series
from bench.plot import (
    claim_figure,
    curves_figure,
    gap_budget_figure,
    outliers,
    plot_curves,
    plot_gap_vs_budget,
    plot_metrics,
    plot_published_vs_measured,
    plot_samples,
    plot_scoreboard_gap,
    scatter_figure,
    scoreboard_gap_figure,
)
from bench.records import Record
from bench.render import parse_units
from bench.spec import get_spec

from .test_budget import write_iwae

PNG = b"\x89PNG"


def record(spec, cell, metrics, history=(), tier="small", seed=0) -> Record:
    return Record(
        table=spec.id,
        tier=tier,
        cell=cell.id,
        params=cell.as_dict(),
        status="ok",
        metrics=metrics,
        history=list(history),
        device="cpu",
        seed=seed,
    )


def by_gid(fig, gid: str):
    """The artists of a figure named `gid` (axes, lines, bars, collections)."""
    return [a for a in fig.findobj(lambda a: a.get_gid() == gid)]


def axes(fig, gid: str):
    (ax,) = [a for a in fig.axes if a.get_gid() == gid]
    return ax


def line(ax, gid: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return list(found.get_xdata()), list(found.get_ydata())


def bar_height(ax, gid: str) -> float:
    (patch,) = [p for p in ax.patches if p.get_gid() == gid]
    return patch.get_height()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def iwae_records(spec):
    return {
        c.id: record(
            spec,
            c,
            {
                "nll": 100.0 + c.as_dict()["k"] / 10,
                "nll_stderr": 0.5,
                "active_units": [20] * c.as_dict()["layers"],
            },
        )
        for c in spec.cells("small")
    }


def test_iwae_claim_figure_shows_nll_and_units_against_k_per_objective():
    spec = get_spec("iwae-table")
    fig = claim_figure(spec, iwae_records(spec))
    assert len(fig.axes) == 2 * 4  # (NLL, active units) x (dataset x layers)
    for y in spec.plot.y:
        for dataset in spec.grid["dataset"]:
            for layers in spec.grid["layers"]:
                ax = axes(fig, f"{y} | {dataset}, layers {layers}")
                assert ax.get_xscale() == "log"
                for model in ("vae", "iwae"):
                    xs, ys = line(ax, f"measured {model}")
                    assert xs == [1, 5, 50]
                    xs, ys = line(ax, f"published {model}")
                    assert xs == [1, 5, 50]
                    where = {"dataset": dataset, "layers": layers, "model": model}
                    expected = [
                        sum(parse_units(v[y])) if y == "active_units" else v[y]
                        for c, v in spec.published
                        if all(c.as_dict()[f] == w for f, w in where.items())
                    ]
                    assert ys == expected
                if y == "nll":  # the spec's error = { nll = "nll_stderr" }
                    assert by_gid(fig, "stderr iwae")
    assert axes(fig, "nll | mnist, layers 1").get_ylabel() == "NLL (nats)"
    assert axes(fig, "nll | mnist, layers 1").get_title() == "mnist, layers 1"


def test_a_series_with_several_records_at_one_x_is_averaged_and_each_shown(tmp_path):
    spec = get_spec("revnet-memory")
    cells = spec.cells("small")
    records = {
        c.id: record(
            spec, c, {"depth": 6 * c.as_dict()["units"] + 2, "saved_mib": 1.0, "step_s": 0.1}
        )
        for c in cells
    }
    one = cells[0]
    records["again"] = record(
        spec,
        one,
        {"depth": 6 * one.as_dict()["units"] + 2, "saved_mib": 3.0, "step_s": 0.1},
        seed=1,
    )
    fig = claim_figure(spec, records)
    ax = axes(fig, "saved_mib | ")
    xs, ys = line(ax, "measured resnet_cifar, basic")
    assert ys[xs.index(6 * one.as_dict()["units"] + 2)] == 2.0
    assert by_gid(fig, "records resnet_cifar, basic")
    assert ax.get_ylim()[0] == 0  # y_from_zero
    assert ax.get_xlabel() == "depth"
    assert plot_metrics(spec, records, tmp_path / "m.png").read_bytes().startswith(PNG)
    assert plot_metrics(spec, {}, tmp_path / "none.png") is None
    no_plot = dataclasses.replace(spec, plot=None)
    assert plot_metrics(no_plot, records, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_revnet_bars_put_each_models_error_beside_the_published_one_with_its_seed_spread():
    spec = get_spec("revnet-cifar")
    cells = spec.cells("small")
    records = {c.id: record(spec, c, {"error": 60.0, "params": 1.0}) for c in cells}
    first = cells[0]
    records["seed1"] = record(spec, first, {"error": 64.0, "params": 1.0}, seed=1)
    fig = claim_figure(spec, records)
    for c in cells:
        model, dataset = c.as_dict()["model"], c.as_dict()["dataset"]
        published = spec.published_for(c)["error"]
        assert bar_height(axes(fig, f"error | {dataset}"), f"published {model}") == published
    ax = axes(fig, "error | cifar10")
    assert bar_height(ax, f"measured {first.as_dict()['model']}") == 62.0  # mean of two seeds
    assert by_gid(fig, f"records {first.as_dict()['model']}")  # a dot per seed
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [c.as_dict()["model"] for c in cells if c.as_dict()["dataset"] == "cifar10"]
    assert axes(fig, "params | cifar10").get_ylabel() == "params (M)"


def test_likelihood_bars_show_the_standard_error_and_unrun_models():
    spec = get_spec("pixelcnn-cifar10")
    cells = spec.cells("small")
    records = {c.id: record(spec, c, {"bits_per_dim": 3.5, "bpd_stderr": 0.02}) for c in cells}
    fig = claim_figure(spec, records)
    ax = axes(fig, "bits_per_dim | ")
    for c in spec.table_cells("small"):  # pixelrnn: published, never run
        model = c.as_dict()["model"]
        assert bar_height(ax, f"published {model}") == spec.published_for(c)["bits_per_dim"]
    assert "not run" in [t.get_text() for t in ax.texts]
    assert by_gid(fig, "stderr pixelcnn")


@pytest.mark.parametrize("table", ["factorised", "pixelcnn-mnist", "pixelvae-mnist", "nice"])
def test_every_likelihood_table_draws_its_claim_and_its_samples(table, tmp_path):
    spec = get_spec(table)
    assert spec.plot.samples
    records = {}
    (tmp_path / "samples").mkdir()
    for c in spec.cells("small"):  # a run writes a grid of samples per cell
        records[c.id] = record(spec, c, {m: 1.0 + i for i, m in enumerate(spec.plot.y)})
        grid = np.random.default_rng(0).random((10, 10, 3))
        plt.imsave(tmp_path / "samples" / f"{spec.id}-small-{c.id}.png", grid)
    path = plot_metrics(spec, records, tmp_path / f"{table}-small.png")
    assert path.read_bytes().startswith(PNG)
    fig = claim_figure(spec, records)
    for c in spec.cells("small"):
        for y in spec.plot.y:
            panel = ", ".join(
                v if isinstance(v := c.as_dict()[f], str) else f"{f} {v}" for f in spec.plot.panels
            )
            ax = axes(fig, f"{y} | {panel}")
            assert (
                bar_height(ax, f"measured {c.as_dict()[spec.plot.x]}") == records[c.id].metrics[y]
            )
    samples = plot_samples(spec, records, tmp_path / f"{table}-small-samples.png")
    assert samples.read_bytes().startswith(PNG)
    assert plot_samples(spec, records, tmp_path / "elsewhere" / "s.png") is None  # no grids there


def test_measured_vs_published_labels_only_outliers(tmp_path):
    spec = get_spec("iwae-table")
    records = iwae_records(spec)
    odd = "mnist-layers1-k5-iwae"
    records[odd].metrics["nll"] = 300.0
    fig = scatter_figure(spec, records)
    ax = axes(fig, "nll")
    assert [t.get_text() for t in ax.texts] == [odd]
    assert len([c for c in ax.collections if (c.get_gid() or "").startswith("point ")]) == 24
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"vae", "iwae", "mnist", "omniglot", "measured = published"} <= set(legend)
    assert outliers([(1.0, 2.0, "a"), (2.0, 3.0, "b"), (3.0, 4.0, "c"), (4.0, 5.0, "d")]) == []


def test_measured_vs_published_and_curves(tmp_path):
    spec = get_spec("iwae-table")
    cells = spec.cells("full")[:3]
    history = [{"epoch": 1, "loss": 120.0}, {"epoch": 2, "loss": 110.0}]
    records = {
        c.id: record(spec, c, {"nll": 100.0 + i, "active_units": [20]}, history)
        for i, c in enumerate(cells)
    }
    for draw, name in ((plot_published_vs_measured, "a.png"), (plot_curves, "b.png")):
        path = draw(spec, records, tmp_path / name)
        assert path.read_bytes().startswith(PNG)
    assert plot_published_vs_measured(spec, {}, tmp_path / "none.png") is None
    assert plot_curves(spec, {}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_gap_vs_budget_figure_puts_each_cell_at_its_images_seen_beside_the_papers(tmp_path):
    spec, results = get_spec("iwae-table"), tmp_path / "results"
    vae, iwae = write_iwae(results, spec)
    path = tmp_path / "tables" / "iwae-table-gap-vs-budget.png"
    assert plot_gap_vs_budget(spec, results, path) == path
    assert path.read_bytes().startswith(PNG)
    fig = gap_budget_figure(gap_series(spec, results))
    ax = axes(fig, "gap | mnist")  # layers does not vary here: one panel per data set
    assert ax.get_xscale() == "log"
    xs, ys = line(ax, f"gap {vae.id}")
    assert xs == [160_000, 960_000] and ys == pytest.approx([26.0, 10.0])
    xs, ys = line(ax, f"gap {iwae.id}")
    assert ys == pytest.approx([24.0, 8.5])
    assert line(ax, "paper 196800000")[0] == [196_800_000] * 2
    assert line(ax, "published")[1] == [0, 0]
    assert "measured − published (nats)" in ax.get_ylabel()
    assert "> 0: worse than the paper" in ax.get_ylabel()
    assert ax.get_xlim()[1] >= 196_800_000


def test_no_gap_figure_from_one_tier(tmp_path):
    spec, results = get_spec("iwae-table"), tmp_path / "results"
    write_iwae(results, spec, tiers=("small",))
    path = tmp_path / "tables" / "iwae-table-gap-vs-budget.png"
    assert plot_gap_vs_budget(spec, results, path) is None and not path.exists()
    assert plot_scoreboard_gap([spec], results, tmp_path / "gap-vs-budget.png") is None


def test_scoreboard_gap_figure_draws_the_median_per_data_set(tmp_path):
    spec, results = get_spec("iwae-table"), tmp_path / "results"
    write_iwae(results, spec)
    path = tmp_path / "tables" / "gap-vs-budget.png"
    assert plot_scoreboard_gap([spec, get_spec("revnet-memory")], results, path) == path
    assert path.read_bytes().startswith(PNG)
    fig = scoreboard_gap_figure([gap_series(spec, results)])
    ax = axes(fig, "gap | iwae-table")
    assert line(ax, "median mnist") == ([160_000, 960_000], pytest.approx([25.0, 9.25]))
    assert line(ax, "paper mnist")[0] == [196_800_000] * 2
    assert ax.get_ylim()[0] == 0


def test_curves_draw_each_epochs_active_units_per_layer_beside_the_loss(tmp_path):
    """A history that logs active units gets a second panel: one line per cell and layer, at
    the logged epochs; a record without them (made earlier) draws its loss alone."""
    spec = get_spec("iwae-table")
    two, one, old = spec.cells("full")[:3]
    logged = [
        {"epoch": e, "loss": 120.0 - e, "active_units": [u, v]}
        for e, u, v in ((1, 90, 4), (2, 70, 6))
    ]
    records = {
        two.id: record(spec, two, {"nll": 100.0}, logged),
        one.id: record(spec, one, {"nll": 101.0}, [{**h, "active_units": [30]} for h in logged]),
        old.id: record(spec, old, {"nll": 102.0}, [{"epoch": 1, "loss": 130.0}]),
    }
    fig = curves_figure(spec, records)
    units = axes(fig, "units")
    assert line(units, f"units {two.id} 1") == ([1, 2], [90, 70])
    assert line(units, f"units {two.id} 2") == ([1, 2], [4, 6])
    assert line(units, f"units {one.id} 1") == ([1, 2], [30, 30])
    assert len(units.get_lines()) == 3  # none for the record without units
    assert len(axes(fig, "loss").get_lines()) == 3
    assert [t.get_text() for t in units.get_legend().get_texts()] == ["layer 1", "layer 2"]
    # Without logged units the figure is the loss panel alone, as before.
    records[two.id].history = records[one.id].history = [{"epoch": 1, "loss": 1.0}]
    assert len(curves_figure(spec, records).axes) == 1
    assert plot_curves(spec, records, tmp_path / "c.png").read_bytes().startswith(PNG)
