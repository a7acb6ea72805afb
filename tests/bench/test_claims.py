"""bench.claims: paired differences, verdicts at two standard errors, and claims in the spec."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.claims import compare, difference, verdict
from bench.records import Record
from bench.spec import SpecError, get_spec, load_spec
from bench.tasks import TASKS

from .conftest import write_spec


def record(cell: str, params: dict, **metrics) -> Record:
    data = {"sha256": {"x": "0"}, "n_test": 4, "notes": ""}
    return Record(
        table="iwae-table",
        tier="small",
        cell=cell,
        params=params,
        status="ok",
        metrics=metrics,
        data=data,
    )


NLL = TASKS["likelihood"].measure("nll")


def test_a_metric_without_declared_per_image_values_is_not_paired():
    a = record("a", {}, nll=11.0, nll_stderr=0.3, nll_per_image=[1.0, 2.0])
    b = record("b", {}, nll=12.0, nll_stderr=0.4, nll_per_image=[1.5, 2.5])
    undeclared = TASKS["likelihood"].measure("sample_s")  # no standard error, no per-image values
    assert difference(a, b, "nll", undeclared) == (-1.0, None, False)


def test_a_paired_difference_uses_the_per_image_differences():
    a = record("a", {}, nll=11.0, nll_stderr=5.0, nll_per_image=[1.0, 11.0, 21.0, 11.0])
    b = record("b", {}, nll=12.0, nll_stderr=5.0, nll_per_image=[2.0, 12.5, 22.0, 11.5])
    diff, se, paired = difference(a, b, "nll", NLL)
    d = [-1.0, -1.5, -1.0, -0.5]
    mean = sum(d) / 4
    assert paired and diff == pytest.approx(mean)
    expected_se = math.sqrt(sum((x - mean) ** 2 for x in d) / 3 / 4)
    assert se == pytest.approx(expected_se)
    assert verdict("lower", diff, se) == "holds"  # unpaired (se 7.1) it would be inconclusive
    assert verdict("lower", diff, math.hypot(5.0, 5.0)) == "inconclusive"


def test_different_test_images_are_not_paired():
    a = record("a", {}, nll=11.0, nll_stderr=0.3, nll_per_image=[1.0, 2.0])
    b = record("b", {}, nll=12.0, nll_stderr=0.4, nll_per_image=[1.5, 2.5])
    b.data = {**b.data, "n_test": 5}
    diff, se, paired = difference(a, b, "nll", NLL)
    assert not paired and diff == -1.0 and se == pytest.approx(0.5)


@pytest.mark.parametrize(
    "expect, diff, se, result",
    [
        ("lower", -1.0, 0.4, "holds"),
        ("lower", -0.5, 0.4, "inconclusive"),
        ("lower", 1.0, 0.4, "does not hold"),
        ("higher", 1.0, 0.4, "holds"),
        ("higher", -1.0, 0.4, "does not hold"),
        ("lower", -1.0, None, "holds"),
        ("lower", 0.0, None, "does not hold"),
        ("not lower", 0.0, None, "holds"),
        ("not lower", -1.0, None, "does not hold"),
        ("not lower", -0.5, 0.4, "inconclusive"),
    ],
)
def test_verdicts(expect, diff, se, result):
    assert verdict(expect, diff, se) == result


@pytest.mark.parametrize(
    "diff, se, result",
    [
        (0.2, 0.1, "holds"),
        (-0.5, 0.4, "inconclusive"),
        (3.0, 0.4, "does not hold"),
        (0.0, None, "inconclusive"),
    ],
)
def test_a_match_holds_when_the_whole_interval_lies_within_the_margin(diff, se, result):
    assert verdict("equal", diff, se, margin=1.0) == result


def test_the_iwae_claims_pair_twin_cells_and_say_when_a_cell_was_not_run():
    spec = get_spec("iwae-table")
    nll, au, _ = spec.claims
    cell = "mnist-layers1-k5"
    records = {
        f"{cell}-iwae": record(f"{cell}-iwae", {}, nll=90.0, active_units=[30]),
        f"{cell}-vae": record(f"{cell}-vae", {}, nll=91.0, active_units=[20]),
    }
    found = compare(spec, "small", records, nll)
    assert len(found) == 8  # 2 data sets x 2 layer counts x k in (5, 50)
    first = next(c for c in found if c.group == "dataset mnist, layers 1, k 5")
    assert (first.a, first.b, first.diff, first.verdict) == (90.0, 91.0, -1.0, "holds")
    assert sum(c.verdict == "not run" for c in found) == 7
    (au_first, *_) = compare(spec, "small", records, au)
    assert au_first.verdict == "holds" and au_first.diff == 10.0


def test_rising_along_k():
    spec = get_spec("iwae-table")
    rising = spec.claims[2]
    units = {1: [20], 5: [25], 50: [24]}
    records = {
        f"mnist-layers1-k{k}-iwae": record(f"mnist-layers1-k{k}-iwae", {}, active_units=u)
        for k, u in units.items()
    }
    found = compare(spec, "small", records, rising)
    mnist = next(c for c in found if c.group.startswith("dataset mnist, layers 1"))
    assert mnist.verdict == "does not hold" and "20 -> 25 -> 24" in mnist.group
    records["mnist-layers1-k50-iwae"].metrics["active_units"] = [26]
    mnist = next(c for c in compare(spec, "small", records, rising) if "layers 1" in c.group)
    assert mnist.verdict == "holds"


def test_a_claim_may_compare_values_only_a_tier_grid_has():
    """NICE's ablations compare the small tier's departures (init = data) with the paper's
    start, though the paper's grid has init = zero only."""
    spec = get_spec("nice")
    both = next(c for c in spec.claims if set(c.a) == {"init", "s_lr"})
    records = {}
    for init, s_lr, per_image in [("data", 10, [1.0, 2.0, 3.0]), ("zero", 1, [2.0, 4.0, 5.0])]:
        cell = f"nice-mnist-{init}-s_lr{s_lr}"
        params = {"model": "nice", "dataset": "mnist", "init": init, "s_lr": s_lr}
        nll = sum(per_image) / 3
        records[cell] = record(cell, params, nll=nll, nll_stderr=0.5, nll_per_image=per_image)
    mnist = next(c for c in compare(spec, "small", records, both) if "mnist" in c.group)
    assert mnist.paired and mnist.diff == pytest.approx(-5 / 3) and mnist.verdict == "holds"


@pytest.mark.parametrize(
    "claim, problem",
    [
        (
            '{ label = "x", metric = "bogus", expect = "lower", a = { model = "iwae" },'
            ' b = { model = "vae" } }',
            "'bogus' is not a metric",
        ),
        (
            '{ label = "x", metric = "nll", expect = "smaller", a = { model = "iwae" },'
            ' b = { model = "vae" } }',
            "expected one of",
        ),
        (
            '{ label = "x", metric = "nll", expect = "rising", a = { model = "iwae" } }',
            "needs along",
        ),
        (
            '{ label = "x", metric = "nll", expect = "lower", a = { model = "gan" },'
            ' b = { model = "vae" } }',
            "'gan' is not in grid.model",
        ),
    ],
)
def test_malformed_claims_are_one_line_spec_errors(spec_dir, claim, problem):
    path = write_spec(spec_dir)
    path.write_text(path.read_text().replace("notes = [", f"claims = [{claim}]\nnotes = [", 1))
    with pytest.raises(SpecError, match=problem) as error:
        load_spec(path)
    assert str(path) in str(error.value) and "claims[0]" in str(error.value)


def replicate_records(errors: dict) -> dict:
    records = {}
    for (model, seed), error in errors.items():
        cell = f"{model}-cifar10-seed{seed}"
        params = {"model": model, "dataset": "cifar10", "seed": seed}
        records[cell] = record(cell, params, error=error)
    return records


def test_seed_replicates_compare_their_means_with_the_seed_spread():
    spec = get_spec("revnet-cifar")  # claims[0]: RevNet-38 matches ResNet-32 within 1 point
    claim = spec.claims[0]
    resnet = {("resnet32", 0): 30.0, ("resnet32", 1): 32.0}  # mean 31, se 1
    records = replicate_records({**resnet, ("revnet38", 0): 31.0, ("revnet38", 1): 33.5})
    (c,) = compare(spec, "medium", records, claim)
    assert (c.a, c.b, c.seeds, c.paired) == (32.25, 31.0, (2, 2), False)
    assert c.diff == pytest.approx(1.25) and c.se == pytest.approx(math.hypot(1.25, 1.0))
    assert c.verdict == "inconclusive"  # two seeds: t = 4.7 at 1.9 degrees of freedom

    records = replicate_records({**resnet, ("revnet38", 0): 41.0, ("revnet38", 1): 42.0})
    (c,) = compare(spec, "medium", records, claim)
    assert c.diff == pytest.approx(10.5) and c.verdict == "does not hold"

    tight = {
        ("resnet32", 0): 30.0,
        ("resnet32", 1): 30.2,
        ("revnet38", 0): 30.1,
        ("revnet38", 1): 30.3,
    }
    records = replicate_records(tight)
    (c,) = compare(spec, "medium", records, claim)
    assert c.verdict == "holds"  # 0.1 + 4.30 x 0.14 < 1

    for cell, extra in (("resnet32-cifar10", {}), ("resnet32-cifar10-seed7", {"seed": 7})):
        params = {"model": "resnet32", "dataset": "cifar10", **extra}
        records[cell] = record(cell, params, error=90.0)
    (c,) = compare(spec, "medium", records, claim)
    assert c.b == pytest.approx(30.1)  # records of seeds or cells the grid lacks are left out

    del records["revnet38-cifar10-seed1"]  # one seed: a mean, but no spread to judge it by
    (c,) = compare(spec, "medium", records, claim)
    assert c.se is None and c.seeds == (1, 2) and c.verdict == "inconclusive"

    same = replicate_records(
        {("resnet32", 0): 30.0, ("resnet32", 1): 30.0, ("revnet38", 0): 33.0, ("revnet38", 1): 33.0}
    )
    (c,) = compare(spec, "medium", same, claim)
    assert c.verdict == "inconclusive"  # seeds that agree exactly: too few to measure a spread


def test_a_directional_claim_over_seeds_needs_a_spread_on_both_sides(spec_dir):
    spec = get_spec("revnet-cifar")
    lower = replace(spec.claims[0], expect="lower", margin=None)
    records = replicate_records(
        {("resnet32", 0): 30.0, ("resnet32", 1): 36.0, ("revnet38", 0): 32.9}
    )
    (c,) = compare(spec, "medium", records, lower)
    assert c.diff == pytest.approx(-0.1) and c.verdict == "inconclusive"  # not the sign alone
