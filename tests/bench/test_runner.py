"""bench.runner: finished cells are skipped, changed settings rerun, concurrent runs do not
clobber a cell, and a missing data set gives a `skipped` record instead of a crash."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.records import read_record, read_records, record_path
from bench.runner import UsageError, resolve_device, run_key, run_table
from bench.spec import load_spec

from .conftest import IWAE, VAE, options, write_spec


def quiet(line):
    pass


def test_a_run_writes_one_record_per_cell_and_the_table(tmp_path, tiny):
    opts = options(tmp_path)
    lines = []
    records = run_table(tiny, opts, log=lines.append)
    assert [(r.cell, r.status) for r in records] == [(VAE, "ok"), (IWAE, "ok")]
    for r in records:
        on_disk = read_record(record_path(opts.results, "tiny", "smoke", r.cell))
        assert on_disk == r
        assert set(r.metrics) >= {"nll", "active_units"}
        assert r.data["source"].startswith("committed smoke sample")
        assert r.settings["nll_k"] == 4 and r.settings["_key"]
        assert r.memory["saved_bytes"] > 0
        assert [h["epoch"] for h in r.history] == [1, 2]
        assert r.deterministic.startswith("cpu")
    table = (opts.tables / "tiny-smoke.md").read_text()
    assert "not run" not in table
    assert f"{records[0].metrics['nll']:.2f}" in table
    assert lines[-1] == f"table: {opts.tables / 'tiny-smoke.md'}"
    assert not list(opts.checkpoints.rglob("*.pt"))  # finished cells leave no checkpoint


def test_finished_cells_are_skipped_and_fresh_reruns_them(tmp_path, tiny):
    opts = options(tmp_path, cells=VAE)
    (first,) = run_table(tiny, opts, log=quiet)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    before = path.read_bytes()

    lines = []
    assert run_table(tiny, opts, log=lines.append) == []
    assert lines[0] == f"[1/1] {VAE}: done already ({path}); --fresh reruns it"
    assert path.read_bytes() == before

    (again,) = run_table(tiny, options(tmp_path, cells=VAE, fresh=True), log=quiet)
    assert again.started >= first.started
    assert again.metrics == first.metrics  # same seed, same numbers


def test_a_changed_setting_or_seed_reruns_the_cell(tmp_path, spec_dir):
    opts = options(tmp_path, cells=VAE)
    (first,) = run_table(load_spec(write_spec(spec_dir)), opts, log=quiet)

    changed = load_spec(write_spec(spec_dir, nll_k=5))
    lines = []
    (second,) = run_table(changed, opts, log=lines.append)
    assert "done already" not in lines[0]
    assert second.settings["nll_k"] == 5 and second.metrics["nll_k"] == 5
    assert second.settings["_key"] != first.settings["_key"]

    (third,) = run_table(changed, options(tmp_path, cells=VAE, seed=1), log=quiet)
    assert third.seed == 1 and third.metrics["nll"] != second.metrics["nll"]


def test_a_failed_record_is_rerun(tmp_path, tiny):
    opts = options(tmp_path, cells=VAE)
    (record,) = run_table(tiny, opts, log=quiet)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    path.write_text(path.read_text().replace('"status": "ok"', '"status": "failed"'))
    lines = []
    (again,) = run_table(tiny, opts, log=lines.append)
    assert again.status == "ok" and "done already" not in lines[0]


def test_a_cell_locked_by_another_run_is_left_alone(tmp_path, tiny):
    opts = options(tmp_path)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    path.parent.mkdir(parents=True)
    lock = path.with_name(f".{path.name}.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, filelock; l = filelock.FileLock(sys.argv[1]); "
         "l.acquire(); print('held', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        lines = []
        records = run_table(tiny, opts, log=lines.append)
    finally:
        holder.communicate("")
    assert f"[1/2] {VAE}: skipped, another `bench run` is running it" in lines
    assert [r.cell for r in records] == [IWAE]
    assert not path.exists()
    # Once the other run is gone, the cell runs.
    assert [r.cell for r in run_table(tiny, opts, log=quiet)] == [VAE]


def test_a_missing_data_set_gives_a_skipped_record(tmp_path, tiny):
    empty = tmp_path / "no-data"
    empty.mkdir()
    opts = options(tmp_path, tier="small", data_dir=empty)
    lines = []
    records = run_table(tiny, opts, log=lines.append)
    assert [r.status for r in records] == ["skipped", "skipped"]
    reason = records[0].reason
    assert reason.startswith("MNIST not found") and str(empty) in reason
    assert f"[1/2] {VAE}: skipped: {reason}" in lines
    on_disk, _ = read_records(opts.results, "tiny", "small")
    assert on_disk[VAE].status == "skipped" and on_disk[VAE].metrics == {}
    table = (opts.tables / "tiny-small.md").read_text()
    assert table.count("not run (data absent)") == 4  # two cells x two metrics
    assert f"- `{VAE}`: skipped: {reason}" in table


def test_unknown_tier_and_cells_matching_nothing(tmp_path, tiny):
    with pytest.raises(UsageError, match="table 'tiny' has no tier 'full'; it has: smoke, small"):
        run_table(tiny, options(tmp_path, tier="full"), log=quiet)
    with pytest.raises(
        UsageError, match=f"--cells 'omniglot-\\*' matches no cell of tiny; cells: {VAE}"
    ):
        run_table(tiny, options(tmp_path, cells="omniglot-*"), log=quiet)
    assert not (tmp_path / "results").exists()


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="expected cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="PyTorch sees no CUDA GPU"):
            resolve_device("cuda")


def test_run_key_changes_with_settings_seed_and_cell():
    key = run_key({"lr": 1e-3}, 0, {"k": 1})
    assert key == run_key({"lr": 1e-3}, 0, {"k": 1})
    assert len({key, run_key({"lr": 1e-4}, 0, {"k": 1}), run_key({"lr": 1e-3}, 1, {"k": 1}),
                run_key({"lr": 1e-3}, 0, {"k": 5})}) == 4  # fmt: skip
