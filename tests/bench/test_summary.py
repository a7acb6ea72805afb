"""bench.summary: the scoreboard counts a tier's runs, its |Δ| against the published numbers and
its claims' verdicts from records alone, names their commits and links the rendered files; it
imports no torch."""

from __future__ import annotations

import subprocess
import sys

from bench import cli
from bench.records import Record, write_record
from bench.summary import render_summary

from .conftest import write_spec
from .test_render import markdown_rows

CLAIM = """
[[claims]]
label = "IWAE's NLL is below the VAE's"
metric = "nll"
expect = "lower"
a = { model = "iwae" }
b = { model = "vae" }
"""


def tiny_results(tmp_path, tier="small"):
    """The shrunk IWAE spec with a claim, two records of `tier`, a leftover record of a cell the
    grid no longer has, and the table and figure `bench table` / `bench plot` would have
    written."""
    specs, results, tables = tmp_path / "specs", tmp_path / "results", tmp_path / "tables"
    path = write_spec(specs)
    path.write_text(path.read_text().replace("[metrics.nll]", CLAIM + "\n[metrics.nll]"))
    data = {"sha256": {"x": "0"}, "n_test": 3, "notes": ""}
    for cell, model, nll, per_image, commit in [
        ("mnist-layers1-k1-vae", "vae", 90.0, [89.0, 90.0, 91.0], "aaaaaaaa11"),
        ("mnist-layers1-k1-iwae", "iwae", 88.0, [87.2, 87.9, 88.9], "bbbbbbbb22"),
        ("mnist-layers1-k5-vae", "vae", 500.0, [500.0, 500.0, 500.0], "cccccccc33"),
    ]:
        write_record(
            results,
            Record(
                table="tiny",
                tier=tier,
                cell=cell,
                params={"model": model},
                status="ok",
                metrics={"nll": nll, "nll_per_image": per_image},
                data=data,
                commit=commit,
                started="2026-12-0" + commit[-1] + "T10:00:00+00:00",
            ),
        )
    tables.mkdir()
    for name in (f"tiny-{tier}.md", f"tiny-{tier}.png", f"tiny-{tier}-unrelated.png"):
        (tables / name).write_text("")
    return specs, results, tables


def test_one_row_per_tier_from_records_only(tmp_path):
    specs, results, tables = tiny_results(tmp_path)
    smoke, small = markdown_rows(render_summary(results, specs, tables))
    assert (small["table"], small["tier"], small["cells run"]) == ("tiny", "small", "2 / 2")
    # |90 - 86.76| = 3.24 and |88 - 86.76| = 1.24: median 2.24; the leftover k = 5 cell is not
    # in the grid, so neither its 500 nats nor its commit count.
    assert small["off the published number: median / worst"] == "NLL (nats): 2.24 / 3.24 (2 cells)"
    assert small["claims: holds / inconclusive / does not hold"] == "1 / 0 / 0"
    assert small["what it can decide"] == "1 of 1 claim comparisons decided at a CPU budget"
    assert small["records: commit; date"] == "aaaaaaaa (1), bbbbbbbb (1); 2026-12-01 – 2026-12-02"
    assert small["table and figures"] == "[table](tiny-small.md), [figure](tiny-small.png)"
    assert (smoke["cells run"], smoke["records: commit; date"]) == ("0 / 2", "—")


def test_the_smoke_tier_is_pipeline_only_with_no_distance_or_verdict(tmp_path):
    specs, results, tables = tiny_results(tmp_path, tier="smoke")
    smoke, small = markdown_rows(render_summary(results, specs, tables))
    assert smoke["cells run"] == "2 / 2"
    assert smoke["off the published number: median / worst"] == "pipeline only: no distance shown"
    assert smoke["claims: holds / inconclusive / does not hold"] == "pipeline only: not judged"
    assert smoke["what it can decide"].startswith("nothing about the paper")
    assert small["claims: holds / inconclusive / does not hold"] == "not run (1)"
    assert small["what it can decide"] == "not run"


def test_bench_summary_writes_tables_readme(tmp_path, capsys):
    specs, results, tables = tiny_results(tmp_path)
    argv = ["--specs", str(specs), "--results", str(results), "--tables", str(tables), "summary"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tables / "README.md")
    assert (tables / "README.md").read_text() == render_summary(results, specs, tables)


def test_the_summary_imports_no_torch(tmp_path):
    specs, results, tables = tiny_results(tmp_path)
    code = (
        "import sys; from pathlib import Path; from bench.summary import write_summary;"
        f" write_summary(Path({str(results)!r}), Path({str(specs)!r}), Path({str(tables)!r}));"
        " assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| tiny " in (tables / "README.md").read_text()


def test_the_perf_line_counts_bench_perf_records_only(tmp_path):
    """benchmarks/jobs_speedup.py keeps its `jobs*.json` beside `bench perf`'s records; they
    have no "benchmark" and are not counted (nor read by `bench perf`'s renderer)."""
    specs, results, tables = tiny_results(tmp_path)
    (results / "perf").mkdir()
    (results / "perf" / "nice.json").write_text(
        '{"benchmark": "nice", "rows": [], "commit": "dddddddd44", "started": "2026-12-03T10:00"}'
    )
    (results / "perf" / "jobs.json").write_text('{"commit": "eeeeeeee55", "cells": []}')
    line = render_summary(results, specs, tables).splitlines()[-1]
    assert "1 benchmarks at dddddddd, 2026-12-03" in line and "eeeeeeee" not in line
