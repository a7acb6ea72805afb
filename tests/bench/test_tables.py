"""Every shipped table runs its smoke tier end to end through the CLI, offline, its rendered
table carries every published number beside a measured one, and `bench check` finds every metric
within its tolerance of the committed reference records (CI's smoke regression check)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.records import RESULTS_DIR
from bench.render import fmt_value
from bench.spec import get_spec, registry


@pytest.fixture
def all_cores():
    torch.set_num_threads(os.cpu_count() or 1)


@pytest.mark.slow
@pytest.mark.parametrize("table", sorted(registry()))
def test_smoke_tier_runs_renders_and_matches_its_references(table, tmp_path, all_cores, capsys):
    # `bench check` trains into --work (results/, tables/, checkpoints/ there) and compares with
    # the committed records; a table without them yet says "no reference" and passes.
    references = Path(__file__).parents[2] / RESULTS_DIR
    code = main(
        ["--results", str(references), "check", table, "--tier", "smoke", "--work", str(tmp_path)]
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err

    spec = get_spec(table)
    cells = spec.cells("smoke")
    records = [
        json.loads((tmp_path / "results" / table / "smoke" / f"{c.id}.json").read_text())
        for c in cells
    ]
    assert all(r["status"] == "ok" for r in records)
    for r in records:
        assert r["commit"] and r["command"] and r["wall_s"] > 0 and r["versions"]["torch"]
        assert r["data"]["source"]

    markdown = (tmp_path / "tables" / f"{table}-smoke.md").read_text()
    for _, values in spec.published:
        for name, value in values.items():
            metric = next(m for m in spec.metrics if m.name == name)
            assert fmt_value(metric, value) in markdown
    assert f"arXiv {spec.paper['arxiv']}" in markdown
    for m in spec.metrics:  # every metric was measured in at least one smoke cell
        assert any(r["metrics"].get(m.name) is not None for r in records), m.name


def test_invert_writes_a_figure_of_an_exact_round_trip(tmp_path, capsys):
    out = tmp_path / "invert.png"
    code = main(
        ["invert", "--model", "irevnet_cifar", "--dataset", "cifar10", "-n", "2", "--out", str(out)]
    )
    assert code == 0
    assert out.stat().st_size > 10_000
    error = float(capsys.readouterr().out.rsplit("=", 1)[1])
    assert error < 1e-4


def test_invert_refuses_a_model_without_an_inverse(capsys):
    assert main(["invert", "--model", "resnet32", "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no inverse" in err
