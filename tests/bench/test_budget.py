"""bench.budget: images seen by the training loop's rule, the paper's budget from the spec's full
tier on the full training set, and measured - published per headline cell and tier, from
synthetic records; the smoke tier and cells without a published number are left out."""

from __future__ import annotations

import pytest

from bench.budget import (
    Budget,
    gap_series,
    headline_metric,
    median_abs_gap,
    paper_budget,
    ratio_text,
    record_budget,
)
from bench.records import Record, write_record
from bench.spec import Cell, get_spec

IWAE_SMALL = {
    "stages": 4,
    "epochs_per_stage": [4, 4, 4, 4],
    "batch_size": 100,
    "n_train": 10000,
    "_key": "x",
    "gone_setting": 1,
}
IWAE_MEDIUM = {**IWAE_SMALL, "n_train": None}


def record(spec, cell: Cell, tier: str, metrics: dict, n_train: int, settings: dict, **kw):
    return Record(
        table=spec.id,
        tier=tier,
        cell=cell.id,
        params=cell.as_dict(),
        status="ok",
        metrics=metrics,
        data={"n_train": n_train},
        settings=settings,
        **kw,
    )


def cell(spec, **where) -> Cell:
    (found,) = [c for c in spec.table_cells("small") if c.matches(where)]
    return found


def test_images_seen_follow_the_training_loop():
    assert Budget(10_000, 16, 100).images == 160_000
    assert Budget(10_050, 2, 100).images == 20_100  # the last, partial batch counts its images
    assert Budget(192, 1, 32, max_steps_per_epoch=2).images == 64  # capped: 2 steps of 32
    assert Budget(100, 3, 32, max_steps_per_epoch=10).images == 300  # a cap above the epoch


def test_a_records_budget_from_its_data_and_resolved_settings():
    iwae, revnet = get_spec("iwae-table"), get_spec("revnet-cifar")
    c = cell(iwae, dataset="mnist", layers=1, k=1, model="vae")
    # Settings the class no longer has (and reuse keys) are dropped, not an error.
    assert record_budget(iwae, record(iwae, c, "small", {}, 10_000, IWAE_SMALL)).images == 160_000
    three_stages = {"stages": 3, "batch_size": 20}  # 1 + 3 + 9 epochs, the paper's rule
    assert record_budget(iwae, record(iwae, c, "small", {}, 1000, three_stages)).epochs == 13
    r = cell(revnet, model="resnet32", dataset="cifar10")
    trained = {"epochs": 3, "batch_size": 100}
    assert record_budget(revnet, record(revnet, r, "small", {}, 5000, trained)).images == 15_000
    untrained = {**trained, "train": False}
    assert record_budget(revnet, record(revnet, r, "small", {}, 5000, untrained)) is None
    assert record_budget(revnet, record(revnet, r, "small", {}, None, trained)) is None


def test_the_papers_budget_is_the_full_tier_on_the_full_training_set(tiny):
    iwae = get_spec("iwae-table")
    mnist = paper_budget(iwae, cell(iwae, dataset="mnist", layers=2, k=50, model="iwae"))
    assert (mnist.epochs, mnist.per_epoch, mnist.images) == (3280, 60_000, 196_800_000)
    omniglot = paper_budget(iwae, cell(iwae, dataset="omniglot", layers=1, k=1, model="vae"))
    assert omniglot.images == 24_345 * 3280
    revnet = get_spec("revnet-cifar")
    assert paper_budget(revnet, cell(revnet, model="revnet38", dataset="cifar10")).images == (
        50_000 * 160
    )
    nice = get_spec("nice")
    (mnist_cell,) = [c for c in nice.table_cells("small") if c.id == "nice-mnist-data-s_lr10"]
    assert paper_budget(nice, mnist_cell).images == 60_000 * 1500  # a departure row: same budget
    assert paper_budget(tiny, tiny.table_cells("smoke")[0]) is None  # no full tier


def test_the_headline_metric_is_the_claim_figures_first_with_a_published_value():
    assert headline_metric(get_spec("iwae-table")).name == "nll"
    assert headline_metric(get_spec("nice")).name == "loglik_continuous"
    assert headline_metric(get_spec("revnet-cifar")).name == "error"
    assert headline_metric(get_spec("pixelcnn-cifar10")).name == "bits_per_dim"


def write_iwae(results, spec, tiers=("small", "medium")):
    """Two MNIST cells at `tiers` (small, medium) and a smoke record of one of them."""
    vae = cell(spec, dataset="mnist", layers=1, k=1, model="vae")  # published 86.76
    iwae = cell(spec, dataset="mnist", layers=1, k=50, model="iwae")  # published 84.78
    nll = {
        ("small", vae): 112.76,
        ("small", iwae): 108.78,
        ("medium", vae): 96.76,
        ("medium", iwae): 93.28,
        ("smoke", vae): 300.0,
    }
    settings = {"small": IWAE_SMALL, "medium": IWAE_MEDIUM, "smoke": {"batch_size": 32}}
    n_train = {"small": 10_000, "medium": 60_000, "smoke": 256}
    for (tier, c), v in nll.items():
        if tier in tiers or tier == "smoke":
            metrics = {"nll": v, "nll_stderr": 0.5}
            write_record(results, record(spec, c, tier, metrics, n_train[tier], settings[tier]))
    return vae, iwae


def test_gap_series_per_cell_and_tier(tmp_path):
    spec = get_spec("iwae-table")
    vae, iwae = write_iwae(tmp_path, spec)
    gaps = gap_series(spec, tmp_path)
    assert gaps.metric.name == "nll" and gaps.tiers == ("small", "medium") and gaps.drawable
    by_cell = {s.cell: s for s in gaps.series}
    assert set(by_cell) == {vae, iwae}  # cells without a record are left out
    s = by_cell[vae]
    assert s.published == 86.76 and s.paper.images == 196_800_000
    assert [p.tier for p in s.points] == ["small", "medium"]  # smoke left out
    assert [p.images for p in s.points] == [160_000, 960_000]
    assert [p.gap for p in s.points] == pytest.approx([26.0, 10.0])
    assert [p.gap for p in by_cell[iwae].points] == pytest.approx([24.0, 8.5])
    assert s.points[0].stderr == 0.5 and s.points[0].gaps == pytest.approx((26.0,))
    assert median_abs_gap(gaps, "mnist") == [
        ("small", 160_000, pytest.approx(25.0), 2),
        ("medium", 960_000, pytest.approx(9.25), 2),
    ]
    assert median_abs_gap(gaps, "omniglot") == []


def test_one_tier_is_not_drawable_and_a_table_that_trains_nothing_has_no_series(tmp_path):
    spec = get_spec("iwae-table")
    write_iwae(tmp_path, spec, tiers=("small",))
    gaps = gap_series(spec, tmp_path)
    assert gaps.tiers == ("small",) and not gaps.drawable
    assert gap_series(get_spec("revnet-memory"), tmp_path) is None


def test_seeds_pool_into_their_mean_each_kept(tmp_path):
    spec = get_spec("revnet-cifar")
    trained = {"epochs": 3, "batch_size": 100}
    errors = [24.0, 26.0, 25.0, 27.0, 23.0]  # published 7.14
    for c in spec.cells("medium"):
        if c.as_dict()["model"] == "resnet32":
            metrics = {"error": errors[c.as_dict()["seed"]]}
            write_record(tmp_path, record(spec, c, "medium", metrics, 50_000, trained))
    (s,) = gap_series(spec, tmp_path).series
    (p,) = s.points
    assert s.cell == cell(spec, model="resnet32", dataset="cifar10")
    assert p.images == 150_000 and p.stderr is None
    assert p.gap == pytest.approx(25.0 - 7.14)
    assert p.gaps == pytest.approx(tuple(e - 7.14 for e in errors))


def test_ratio_text():
    assert ratio_text(160_000, 196_800_000) == "1/1,230"
    assert ratio_text(1_000, 4_000) == "1/4"
    assert ratio_text(3_000, 2_000) == "x1.5"


def test_cells_without_a_published_number_are_left_out(tmp_path):
    spec = get_spec("nice")  # the paper publishes MNIST's log-likelihood, not lossless CIFAR-10's
    settings = {"epochs_per_stage": [1], "batch_size": 100}
    for c in spec.cells("small"):
        n_train = 60_000 if c.as_dict()["dataset"] == "mnist" else 10_000
        metrics = {"loglik_continuous": 1500.0}
        write_record(tmp_path, record(spec, c, "small", metrics, n_train, settings))
    gaps = gap_series(spec, tmp_path)
    assert {s.cell.as_dict()["dataset"] for s in gaps.series} == {"mnist"}
    assert len(gaps.series) == 4  # init x s_lr
    assert all(s.points[0].gap == pytest.approx(1500.0 - 1980.50) for s in gaps.series)
