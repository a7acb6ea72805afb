"""bench plan: the arithmetic of predictions, extrapolation and totals, a plan of a real smoke
tier, and the comparison with what ran."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from bench import plan as P
from bench.cli import main
from bench.records import Record, write_record


def test_line_through_extrapolates_and_never_falls():
    assert P.line_through((1, 2.0), (2, 3.0), 10) == pytest.approx(11.0)
    assert P.line_through((1, 3.0), (2, 2.0), 10) == 2.0  # noise: never below the last size


def test_a_unit_over_the_budget_is_extrapolated_from_two_smaller_sizes_and_says_so():
    calls = []

    def make(size):
        def fn():
            calls.append(size)
            time.sleep(0.002 * size)

        return fn

    opts = P.PlanOptions(unit_budget_s=0.02, min_total_s=0.0)
    timed = P.calibrate(make, 256, torch.device("cpu"), opts)
    assert timed.how.startswith("extrapolated from sizes") and not timed.measured
    assert 256 not in calls and timed.size == 256
    assert timed.seconds > 0.002 * 16  # far more than any measured size
    fits = P.calibrate(
        make, 4, torch.device("cpu"), P.PlanOptions(unit_budget_s=10, min_total_s=0.0)
    )
    assert fits.measured and 4 in calls


def _plan(cell, steps=100, step_s=0.5, flops=1e12, other=10.0, how="measured"):
    return P.CellPlan(
        cell=cell,
        schedule={"epochs": 1, "steps": steps, "batch": 10},
        params=5,
        phases={"train": steps * step_s, "eval": other},
        units={
            "train step": {"seconds": step_s, "low": step_s, "high": step_s, "how": how},
            "test NLL": {"seconds": 1.0, "low": 1.0, "high": 1.0, "how": "measured"},
        },
        flops={"train_step": flops, "eval_unit": 2e12},
        memory={"saved_mib": 1.0, "peak_mib": 2.0, "checkpoint_mib": 3.0},
    )


def test_totals_count_core_hours_at_the_threads_and_name_the_longest_cell():
    plans = [_plan("a"), _plan("b", steps=7200), P.CellPlan("c", {}, 0, {}, {}, {}, {}, error="x")]
    t = P.totals(plans, "cpu", threads=2)
    assert t["cells"] == 3 and t["failed"] == 1
    assert t["hours"] == pytest.approx((60 + 3610) / 3600)
    assert t["device_hours"] == pytest.approx(2 * t["hours"]) and t["unit"] == "core-hours"
    assert t["longest"]["cell"] == "b"
    assert P.totals(plans, "cuda", threads=2)["unit"] == "GPU-hours"


def test_an_assumed_rate_prices_compute_from_flops_and_is_labelled_as_assumed():
    plan = P._assumed(_plan("a", steps=100, flops=2e12), tflops=4.0)
    assert plan.phases["train"] == pytest.approx(100 * 0.5)  # 2e12 / 4e12 s a step
    assert plan.phases["eval"] == pytest.approx(10.0 * 0.5)  # 2e12 / 4e12 s a unit, 10 units
    assert plan.units["train step"]["how"] == "assumed 4 TFLOP/s" and plan.estimated
    assert any("assumed" in n for n in plan.notes)
    assert not _plan("b").estimated


def test_a_committed_plan_is_repriced_from_its_flops_without_calibrating(tmp_path, capsys):
    measured = {
        "table": "t",
        "tier": "full",
        "device": "cpu: AMD EPYC, 1 threads",
        "threads": 1,
        "assume_tflops": None,
        "matmul_tflops": 0.1,
        "created": "2026-12-01T00:00:00+00:00",
        "plan_s": 5.0,
        "command": "bench plan t --tier full",
        "commit": "0123456789",
        "dirty": False,
        "versions": {"torch": "2.14.1"},
        "cells": [P._as_dict(_plan("a", steps=100, flops=2e12))],
    }
    measured["cells"][0]["matmul_fraction"] = 0.5
    record = P.reprice(measured, 4.0, "bench plan t --reprice --assume-tflops 4")
    (cell,) = record["cells"]
    assert cell["phases"]["train"] == pytest.approx(50.0) and cell["estimated"]
    assert cell["matmul_fraction"] is None  # a fraction of this CPU's rate says nothing there
    assert record["totals"]["device_hours"] == pytest.approx(55.0 / 3600)
    assert record["totals"]["unit"] == "device-hours at the assumed rate"
    assert record["commit"] == "0123456789" and record["repriced"]["from"] == "full.cpu.json"
    json_path, md = P.write_plan(record, tmp_path / "results", tmp_path / "tables")
    assert json_path.name == "full.assumed-4tflops.json"
    assert "repriced at an assumed 4 TFLOP/s (not measured)" in md.read_text()
    assert main(["plan", "iwae-table", "--reprice", "--results", str(tmp_path / "x")]) == 2
    assert "--reprice needs --assume-tflops" in capsys.readouterr().err
    args = ["plan", "iwae-table", "--reprice", "--assume-tflops", "4", "--results", str(tmp_path)]
    assert main(args) == 2
    assert "no committed plan to reprice" in capsys.readouterr().err


def test_the_comparison_with_records_and_its_band():
    record = {
        "table": "t",
        "tier": "small",
        "cells": [P._as_dict(_plan("a", steps=100)), P._as_dict(_plan("b", steps=100))],
    }
    ran = {
        "a": Record("t", "small", "a", {}, "ok", wall_s=60.0),
        "b": Record("t", "small", "b", {}, "ok", wall_s=30.0),
    }
    rows = P.compare(record, ran)
    assert [round(r["ratio"], 3) for r in rows] == [1.0, 2.0]
    assert P.within(rows) == (1, 2)
    assert P.within([{"ratio": 1.25}, {"ratio": 0.74}]) == (1, 2)
    assert P.threads_of("cpu: AMD EPYC, 1 threads") == 1
    assert P.threads_of("cuda: NVIDIA H100") is None


def test_a_record_with_cpu_time_is_also_compared_at_its_threads_whatever_the_load():
    record = {"table": "t", "tier": "small", "cells": [P._as_dict(_plan(c)) for c in "abc"]}
    two = "cpu: AMD EPYC, 2 threads"
    ran = {  # each plan predicts 60 s
        "a": Record("t", "small", "a", {}, "ok", wall_s=150.0, cpu_s=62.0, load=[3.9, 3, 2]),
        "b": Record("t", "small", "b", {}, "ok", wall_s=70.0, cpu_s=100.0, device=two),
        "c": Record("t", "small", "c", {}, "ok", wall_s=60.0),  # made before cpu_s was kept
    }
    rows = P.compare(record, ran)
    assert [r["recorded_busy_s"] for r in rows] == [62.0, 50.0, None]
    assert rows[0]["recorded_load"] == [3.9, 3, 2]
    assert P.within(rows) == (2, 3) and P.within(rows, key="busy_ratio") == (2, 2)
    text = P.render_accuracy(rows, [{"command": "bench plan", "commit": "abcdef1234"}], {})
    assert "Predicted over CPU seconds / threads ('ratio to CPU'): 2 of 2 (100%)" in text
    assert "the same cells' wall times, at the load they ran at: 1 of 2." in text


def _timed(tier, cell, epochs, n_train=1000):
    history = [{"epoch": i, "seconds": s} for i, s in enumerate(epochs)]
    data, settings = {"n_train": n_train}, {"batch_size": 10}
    return Record(
        "t", tier, cell, {"model": "m"}, "ok", data=data, settings=settings, history=history
    )


def test_a_record_whose_identical_epochs_disagree_is_named_unsteady(tmp_path):
    for record in [
        _timed("small", "steady", [10.0]),
        _timed("medium", "steady", [11.0, 12.0]),  # same work as small's epoch: 11.5 / 10
        _timed("medium", "wobbly", [10.0, 14.0]),  # 1.4x between two identical epochs
        _timed("small", "loaded", [20.0]),
        _timed("medium", "loaded", [10.0, 10.0]),  # small's epoch took 2x the same work
        _timed("small", "other-work", [20.0], n_train=2000),
        _timed("medium", "other-work", [10.0]),  # not the same work: no cross-tier ratio
    ]:
        write_record(tmp_path, record)
    cells = ["small steady", "medium steady", "medium wobbly", "small loaded", "small other-work"]
    one = {"table": "t", "ratio": 1.0, "predicted_s": 1.0, "recorded_s": 1.0}
    rows = [{**one, "tier": c.split()[0], "cell": c.split()[1]} for c in cells]
    found = P.timing_evidence(tmp_path, rows)
    steady = found["t", "small", "steady"]
    assert steady["spread"] is None and not steady["unsteady"]
    assert steady["other_tier"] == pytest.approx(10 / 11.5)
    assert found["t", "medium", "steady"]["spread"] == pytest.approx(12 / 11)
    assert found["t", "medium", "wobbly"]["unsteady"] and found["t", "small", "loaded"]["unsteady"]
    assert found["t", "small", "other-work"]["other_tier"] is None
    rows[3]["ratio"] = 0.5  # the loaded record is the one miss
    text = P.render_accuracy(rows, [{"command": "bench plan", "commit": "abcdef1234"}], found)
    assert "1 of the 1 cells outside +-25% come from records whose own identical epochs" in text
    assert "Over the 3 cells whose records are steady by both measures, 3 (100%)" in text


def test_a_runs_speed_factor_is_the_median_of_its_cells_and_needs_three_of_them():
    def row(cell, ratio, commit):
        one = {"table": "t", "tier": "small", "predicted_s": ratio, "recorded_s": 1.0}
        return {**one, "cell": cell, "ratio": ratio, "recorded_commit": commit}

    rows = [row("a", 0.5, "c1"), row("b", 0.6, "c1"), row("c", 0.4, "c1"), row("d", 2.0, "c2")]
    factors = P.run_factors(rows)
    assert factors == {("t", "small", "c1"): 0.5}  # c2 has one cell: no factor
    text = P.render_accuracy(rows, [{"command": "bench plan", "commit": "abcdef1234"}], {})
    assert "0 of 4 cells (0%) within +-25%" in text
    assert "Divided by it, 3 of those runs' 3 cells (100%) are within +-25%" in text


def test_where_the_time_goes_groups_the_phases_and_weights_the_matmul_fraction(tmp_path):
    a, b = _plan("a", steps=100, step_s=0.5), _plan("b", steps=300, step_s=0.5)
    a.phases["sample"] = 40.0  # a: 50 s training, 10 s evaluation, 40 s sampling
    a.matmul_fraction, b.matmul_fraction = 0.2, 0.6
    failed = P.CellPlan("c", {}, 0, {}, {}, {}, {}, error="x")
    record = {"table": "t", "commit": "abcdef12", "cells": [P._as_dict(p) for p in (a, b, failed)]}
    got = P.shares(record)
    assert got["cells"] == 2 and got["hours"] == pytest.approx(260 / 3600)
    assert got["training"] == pytest.approx(200 / 260) and got["sampling"] == pytest.approx(
        40 / 260
    )
    assert got["evaluation"] == pytest.approx(20 / 260) and got["probes"] == 0
    assert got["train_of_matmul"] == pytest.approx((50 * 0.2 + 150 * 0.6) / 200)
    record["cells"][0]["phases"]["new phase"] = 1.0
    with pytest.raises(ValueError, match="new phase"):
        P.shares(record)  # a phase no group names fails loudly, not as a missing share
    del record["cells"][0]["phases"]["new phase"]
    path = tmp_path / "plans" / "t" / "medium.cpu.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    row = P.render_shares(tmp_path, "medium").splitlines()[-1]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells == ["t", "2", "4 min", "76.9%", "7.7%", "15.4%", "0.0%", "0.0%", "50%"]


def test_a_plan_of_a_real_tier_writes_its_record_and_table(tmp_path, tiny):
    opts = P.PlanOptions(tier="smoke", cells="*-vae", min_total_s=0.05, command="bench plan")
    record = P.plan_table(tiny, opts, log=lambda *_: None)
    (cell,) = record["cells"]
    assert not cell["error"], cell["error"]
    assert cell["schedule"]["steps"] == 2 * 2  # 2 epochs, max_steps_per_epoch 2
    assert cell["params"] > 0 and cell["flops"]["train_step"] > 0
    assert cell["phases"]["train"] == pytest.approx(4 * cell["units"]["train step"]["seconds"])
    assert 0 < cell["matmul_fraction"] < 5
    assert record["totals"]["cells"] == 1 and record["commit"]
    json_path, md = P.write_plan(record, tmp_path / "results", tmp_path / "tables")
    assert json_path.name == "smoke.cpu.json" and md.name == "plan-tiny-smoke.md"
    assert "mnist-layers1-k1-vae" in md.read_text()


def test_planning_one_tier_against_records_keeps_the_other_tiers_rows(tmp_path, tiny, monkeypatch):
    results, tables = tmp_path / "results", tmp_path / "tables"
    older = {"table": "tiny", "tier": "medium", "cell": "c", "predicted_s": 1, "recorded_s": 1}
    path = results / "plans" / "accuracy" / "tiny.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"rows": [{**older, "ratio": 1.0}]}))
    for cell in ("mnist-layers1-k1-vae", "mnist-layers1-k1-iwae"):
        write_record(results, Record("tiny", "small", cell, {}, "ok", wall_s=90.0, cpu_s=61.0))

    def planned(spec, opts, log):  # no calibration: every cell predicted at 60 s
        cells = [P._as_dict(_plan(c)) for c in opts.cells.split(",")]
        return {"table": spec.id, "tier": opts.tier, "cells": cells}

    monkeypatch.setattr(P, "plan_table", planned)
    monkeypatch.setattr(P, "write_plan", lambda *args: None)
    md = P.plan_accuracy([tiny], results, tables, None, "bench plan", lambda *_: None, ("small",))
    rows = json.loads(path.read_text())["rows"]
    assert [(r["tier"], r["cell"]) for r in rows] == [
        ("medium", "c"),
        ("small", "mnist-layers1-k1-iwae"),
        ("small", "mnist-layers1-k1-vae"),
    ]
    assert rows[1]["busy_ratio"] == pytest.approx(60 / 61)
    assert "Predicted over CPU seconds / threads ('ratio to CPU'): 2 of 2 (100%)" in md.read_text()


def test_plan_refuses_bad_requests_in_one_line(capsys):
    assert main(["plan"]) == 2
    assert "give one table or --all" in capsys.readouterr().err
    assert main(["plan", "iwae-table", "--assume-tflops", "-1"]) == 2
    assert "--assume-tflops" in capsys.readouterr().err
    assert main(["plan", "--render-only"]) == 2
    assert "--render-only goes with --against-records" in capsys.readouterr().err


def test_slurm_takes_time_and_memory_from_the_plan_with_a_margin_and_a_cap():
    record = {
        "device": "cuda: H100",
        "commit": "abcdef12",
        "cells": [
            {
                **P._as_dict(_plan("a", steps=100)),
                "memory": {"peak_mib": 1000.0, "checkpoint_mib": 12.0},
            },
            {
                **P._as_dict(_plan("b", steps=10_000)),
                "memory": {"peak_mib": 10.0, "checkpoint_mib": 1.0},
            },
        ],
    }
    sized = P.slurm_resources(record, ["a", "b"], max_time_min=None)
    assert sized.time_min == math.ceil((10_000 * 0.5 + 10) * 1.5 / 60)
    assert sized.mem_gb == math.ceil((1000 + 24 + P.BASE_MIB) * 1.5 / 1024)
    capped = P.slurm_resources(record, ["a", "b"], max_time_min=60)
    assert capped.time_min == 60 and "requeues" in capped.lines[-1] and "(b)" in capped.lines[-1]
    assert P.slurm_resources(record, ["a"], max_time_min=60).time_min == math.ceil(60 * 1.5 / 60)
    assert P.slurm_resources(None, ["a"], None).time_min is None


def test_a_cell_whose_work_between_checkpoints_outlasts_the_limit_is_warned_about():
    cell = P._as_dict(_plan("x", steps=10_000))  # 5,000 s of training, then 10 s of evaluation
    cell["schedule"]["epochs"] = 10  # 500 s of training between checkpoints
    record = {"cells": [cell]}
    assert P.segment_s(cell, 1) == 510 and P.segment_s(cell, 2) == 1010
    assert P.segment_s(cell, 99) == 5010  # never more than the whole schedule
    assert P.checkpoint_warnings(record, ["x"], time_min=10) == []  # 600 s - 90 s before USR2
    (line,) = P.checkpoint_warnings(record, ["x"], time_min=9)
    assert line.startswith("warning: 1 cell(s) cannot reach their next checkpoint within")
    assert "(x: 8.5 min of training between checkpoints, or of the last stretch and" in line
    assert "the evaluation, against 7.5 min before the USR2)" in line
    assert line.endswith("each time-out would redo that work: pass --time-min 15 or more")
    (line,) = P.checkpoint_warnings(record, ["x"], time_min=10, checkpoint_every=2)
    assert line.endswith("or more or a smaller --checkpoint-every")
    assert P.checkpoint_warnings(record, ["other"], time_min=3) == []
    assert P.checkpoint_warnings(None, ["x"], time_min=3) == []


def test_seed_replicates_are_planned_without_passing_the_seed_to_the_model(tmp_path, spec_dir):
    from bench.spec import load_spec

    from .conftest import write_spec

    path = write_spec(spec_dir)
    grid = 'grid = { dataset = ["mnist"], layers = [1], k = [1], model = ["vae"], seed = [0, 1] }'
    path.write_text(path.read_text().replace("[tiers.smoke]\n", f"[tiers.smoke]\n{grid}\n"))
    opts = P.PlanOptions(tier="smoke", min_total_s=0.0)
    record = P.plan_table(load_spec(path), opts, log=lambda *_: None)
    assert [c["error"] for c in record["cells"]] == ["", ""]


@pytest.mark.parametrize(
    "table, cell",
    [("revnet-cifar", "resnet32-cifar10"), ("revnet-memory", "revnet_cifar-basic-units1")],
)
def test_a_classifier_and_a_memory_cell_are_planned(table, cell):
    from bench.spec import get_spec

    opts = P.PlanOptions(tier="smoke", cells=cell, min_total_s=0.0, unit_budget_s=5.0)
    (plan,) = P.plan_table(get_spec(table), opts, log=lambda *_: None)["cells"]
    assert not plan["error"], plan["error"]
    assert plan["phases"]["train" if table == "revnet-cifar" else "timed steps"] > 0
    assert plan["units"]["train step"]["seconds"] > 0 and plan["memory"]["saved_mib"] > 0


class _Sampler(torch.nn.Module):
    """nll in about a millisecond; sample in `seconds` whatever the size."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def nll(self, x):
        time.sleep(0.001)
        return x.flatten(1).sum(1)

    def sample(self, n, generator=None):
        time.sleep(self.seconds)
        return torch.zeros(n, 3, 32, 32)


@pytest.mark.parametrize(("seconds", "how"), [(0.01, "measured"), (3.0, "upper bound")])
def test_a_sampler_is_priced_per_sub_pixel_only_when_it_is_that_slow(seconds, how):
    """A factorised model on 8-bit CIFAR-10 was priced at one forward per sub-pixel (65 s for a
    sampler that takes a millisecond): only a sampler that does not end within 20 forwards'
    time is."""
    units = {}
    s = type("S", (), {"samples": 16})()
    opts = P.PlanOptions(tier="small", unit_budget_s=1.0)
    got = P._sampling(
        _Sampler(seconds), s, torch.device("cpu"), opts, units, False, torch.zeros(1, 3, 32, 32)
    )
    assert units["sample"]["how"].startswith(how)
    assert (got < 1.0) if how == "measured" else got > 3 * 32 * 32 * 16 * 0.001
