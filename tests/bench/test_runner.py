"""bench.runner and bench.cell: finished cells are skipped, changed settings rerun, a cell another
worker holds is waited for, and a missing data set gives a `skipped` record instead of a crash."""

from __future__ import annotations

import pytest
import torch

from bench import cell, train
from bench.data import DataError
from bench.fingerprint import run_key
from bench.lease import CAMPAIGN_FILE, CampaignChanged, Lease, campaign, lease_path, read_campaign
from bench.records import read_record, read_records, record_path
from bench.runner import UsageError, resolve_device, run_table
from bench.spec import load_spec
from bench.tasks import get_task

from .conftest import IWAE, VAE, model_metrics, options, write_spec


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
        assert len(r.load) == 3 and all(x >= 0 for x in r.load)  # the machine's load beside it
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
    assert model_metrics(again.metrics) == model_metrics(first.metrics)  # same seed, same numbers


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


def test_seed_replicates_run_each_cell_with_the_run_seed_plus_theirs(
    tmp_path, spec_dir, monkeypatch
):
    grid = {"dataset": ["mnist"], "layers": [1], "k": [1], "model": ["vae"], "seed": [0, 1]}
    spec = load_spec(write_spec(spec_dir, grid=grid))
    assert [c.id for c in spec.cells("smoke")] == [f"{VAE}-seed0", f"{VAE}-seed1"]
    task = get_task("likelihood")
    seen = []
    real_run = task.run

    def run(cell, settings, ctx):
        seen.append((cell, ctx.seed))
        return real_run(cell, settings, ctx)

    monkeypatch.setattr(task, "run", run)
    first, second = run_table(spec, options(tmp_path, seed=3), log=quiet)
    plain = {"dataset": "mnist", "layers": 1, "k": 1, "model": "vae"}
    assert seen == [(plain, 3), (plain, 4)]  # the task never sees the replicate field
    assert (first.seed, second.seed) == (3, 4) and first.params == {**plain, "seed": 0}
    assert first.metrics["nll"] != second.metrics["nll"]

    plain_spec = load_spec(write_spec(spec_dir))
    (alone,) = run_table(plain_spec, options(tmp_path / "b", seed=3, cells=VAE), log=quiet)
    assert model_metrics(alone.metrics) == model_metrics(first.metrics)

    table = (tmp_path / "tables" / "tiny-smoke.md").read_text()
    nll = [first.metrics["nll"], second.metrics["nll"]]
    mean, sd = sum(nll) / 2, abs(nll[0] - nll[1]) / 2**0.5
    assert f"{mean:.2f} ± {sd:.2f} (sd, 2 seeds) (86.76," in table
    assert "seed0" not in table


def test_a_failed_record_is_rerun(tmp_path, tiny):
    opts = options(tmp_path, cells=VAE)
    (record,) = run_table(tiny, opts, log=quiet)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    path.write_text(path.read_text().replace('"status": "ok"', '"status": "failed"'))
    lines = []
    (again,) = run_table(tiny, opts, log=lines.append)
    assert again.status == "ok" and "done already" not in lines[0]


def test_a_cell_leased_by_another_worker_comes_last_and_is_waited_for(tmp_path, tiny, monkeypatch):
    opts = options(tmp_path)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    path.parent.mkdir(parents=True)
    other = Lease(lease_path(path), worker="other")
    assert other.acquire()
    waited = []

    def other_finishes(lease_file, **kwargs):  # the other worker gives the cell up
        waited.append(lease_file)
        other.release()

    monkeypatch.setattr(cell, "wait_for", other_finishes)
    lines = []
    records = run_table(tiny, opts, log=lines.append)
    assert [r.cell for r in records] == [IWAE, VAE]  # the free cell first
    assert waited == [lease_path(path)]
    assert any(f"{VAE}: other on " in line and "waiting" in line for line in lines)


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


def test_an_undecodable_data_file_gives_a_data_corrupt_record(tmp_path, tiny, monkeypatch):
    from bench import data

    def truncated(root, **kwargs):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(data.mnist, "load", truncated)
    opts = options(tmp_path, tier="small", data_dir=tmp_path / "data")
    records = run_table(tiny, opts, log=quiet)
    assert [(r.status, r.detail) for r in records] == [("skipped", "data corrupt")] * 2
    assert records[0].reason.startswith(f"data corrupt: {tmp_path / 'data' / 'mnist'}: ")
    assert (opts.tables / "tiny-small.md").read_text().count("not run (data corrupt)") == 4


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


def test_run_key_changes_with_settings_seed_cell_data_and_code():
    key = run_key({"lr": 1e-3}, 0, {"k": 1}, {"a.npz": "00"}, "c0")
    assert key == run_key({"lr": 1e-3}, 0, {"k": 1}, {"a.npz": "00"}, "c0")
    others = {
        run_key({"lr": 1e-4}, 0, {"k": 1}, {"a.npz": "00"}, "c0"),
        run_key({"lr": 1e-3}, 1, {"k": 1}, {"a.npz": "00"}, "c0"),
        run_key({"lr": 1e-3}, 0, {"k": 5}, {"a.npz": "00"}, "c0"),
        run_key({"lr": 1e-3}, 0, {"k": 1}, {"a.npz": "01"}, "c0"),
        run_key({"lr": 1e-3}, 0, {"k": 1}, {"a.npz": "00"}, "c1"),
    }
    assert len(others | {key}) == 6


def fail_with(monkeypatch, spec, error):
    """Make every cell of `spec` raise `error` when it runs."""

    def run(*args):
        raise error

    monkeypatch.setattr(get_task(spec.task), "run", run)


@pytest.mark.parametrize("change", [{"seed": 1}, {"fresh": True}])
def test_a_failing_run_never_replaces_an_ok_record(tmp_path, tiny, monkeypatch, change):
    opts = options(tmp_path, cells=VAE)
    (first,) = run_table(tiny, opts, log=quiet)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    before = path.read_bytes()
    fail_with(monkeypatch, tiny, DataError("MNIST not found: expected /x; pass --data-dir"))
    lines = []
    (record,) = run_table(tiny, options(tmp_path, cells=VAE, **change), log=lines.append)
    assert record.status == "skipped"
    assert path.read_bytes() == before
    assert lines[0] == (
        f"[1/1] {VAE}: skipped: MNIST not found: expected /x; pass --data-dir; kept the ok record"
        f" {path} (seed 0, started {first.started}) instead of replacing it"
    )


def test_a_failed_record_replaces_a_failed_one(tmp_path, tiny, monkeypatch):
    opts = options(tmp_path, cells=VAE)
    fail_with(monkeypatch, tiny, DataError("MNIST not found"))
    run_table(tiny, opts, log=quiet)
    fail_with(monkeypatch, tiny, DataError("checksum mismatch for /x", corrupt=True))
    run_table(tiny, opts, log=quiet)
    on_disk = read_record(record_path(opts.results, "tiny", "smoke", VAE))
    assert on_disk.reason.startswith("checksum mismatch") and on_disk.detail == "data corrupt"
    assert "not run (data corrupt)" in (opts.tables / "tiny-smoke.md").read_text()


def test_a_failed_write_keeps_the_old_record_and_the_checkpoint(tmp_path, tiny, monkeypatch):
    opts = options(tmp_path, cells=VAE)
    run_table(tiny, opts, log=quiet)
    path = record_path(opts.results, "tiny", "smoke", VAE)
    before = path.read_bytes()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cell, "write_record", disk_full)
    lines = []
    (record,) = run_table(tiny, options(tmp_path, cells=VAE, seed=1), log=lines.append)
    (ckpt,) = opts.checkpoints.rglob("*.pt")
    assert lines[0] == (
        f"[1/1] {VAE}: error: cannot write {path} (No space left on device); kept the checkpoint"
        f" {ckpt}, rerun to resume"
    )
    assert record.status == "failed" and path.read_bytes() == before
    monkeypatch.undo()
    (record,) = run_table(tiny, options(tmp_path, cells=VAE, seed=1), log=quiet)
    assert record.status == "ok" and record.resumed and record.segments == 2
    assert read_record(path) == record and not ckpt.exists()
    assert record.cpu_s > 0 and isinstance(read_record(path).cpu_s, float)


def test_no_lease_file_is_left_behind(tmp_path, tiny):
    opts = options(tmp_path, cells=VAE)
    run_table(tiny, opts, log=quiet)
    assert [p.name for p in (opts.results / "tiny" / "smoke").iterdir()] == [f"{VAE}.json"]


def test_a_results_folder_that_is_a_file_is_one_usage_error(tmp_path, tiny):
    (tmp_path / "results").write_text("")
    with pytest.raises(UsageError, match=f"^{tmp_path / 'results'}/tiny/smoke: cannot write"):
        run_table(tiny, options(tmp_path), log=quiet)


def test_a_download_failure_offline_is_a_one_line_skip(tmp_path, tiny, monkeypatch):
    from urllib.error import URLError

    import torchvision

    def offline(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    data = tmp_path / "data"
    opts = options(tmp_path, tier="small", data_dir=data, download=True, cells=VAE)
    (record,) = run_table(tiny, opts, log=quiet)
    assert record.status == "skipped" and record.detail == "data absent"
    assert record.reason == (
        "mnist: --download failed (URLError: <urlopen error [Errno -3] Temporary failure in name"
        f" resolution>); run with network, or place the data set under --data-dir {data} and"
        " rerun without --download"
    )


def test_a_checkpoints_folder_that_is_a_file_is_one_usage_error_before_training(tmp_path, tiny):
    (tmp_path / "checkpoints").write_text("")
    with pytest.raises(UsageError, match=f"^{tmp_path / 'checkpoints'}: cannot write"):
        run_table(tiny, options(tmp_path), log=quiet)
    assert list((tmp_path / "results").rglob("*.json")) == []  # refused before any cell ran


def test_a_checkpoint_that_cannot_be_saved_fails_its_cell_in_one_line(tmp_path, tiny, monkeypatch):
    def disk_full(obj, path):
        path.write_bytes(b"PK half")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 448")

    monkeypatch.setattr(torch, "save", disk_full)
    lines = []
    records = run_table(tiny, options(tmp_path), log=lines.append)
    assert [r.status for r in records] == ["failed", "failed"]  # and the run moved on
    folder = tmp_path / "checkpoints" / "tiny" / "smoke"
    assert records[0].reason.startswith(f"{folder}/{VAE}.") and "cannot save (RuntimeError" in (
        records[0].reason
    )
    assert "\n" not in records[0].reason and list(folder.iterdir()) == []


def test_a_cell_finished_by_another_worker_just_before_our_lease_is_not_retrained(
    tmp_path, tiny, monkeypatch
):
    opts = options(tmp_path, cells=VAE)
    run_table(tiny, opts, log=quiet)
    finished, looks = cell._finished, []

    def too_early_then_finished(*args):  # the first look precedes the other worker's record
        looks.append(args)
        return len(looks) > 1 and finished(*args)

    monkeypatch.setattr(cell, "_finished", too_early_then_finished)
    lines = []
    assert run_table(tiny, opts, log=lines.append) == []
    assert "done already" in lines[0] and len(looks) == 3
    assert not lease_path(record_path(opts.results, "tiny", "smoke", VAE)).exists()


def test_a_model_that_raises_while_training_fails_its_cell_in_one_line(tmp_path, tiny, monkeypatch):
    from models.iwae import IWAE

    def broken(self, x):
        raise RuntimeError("boom in forward\nsecond line")

    monkeypatch.setattr(IWAE, "forward", broken)
    lines = []
    records = run_table(tiny, options(tmp_path), log=lines.append)
    assert [r.status for r in records] == ["failed", "failed"]  # and the run moved on
    reason = records[0].reason
    assert reason.startswith("RuntimeError at ") and reason.endswith(": boom in forward"), reason
    assert "test_runner.py:" in reason  # the line that raised, outside torch and the stdlib
    assert read_record(record_path(tmp_path / "results", "tiny", "smoke", VAE)).reason == reason


def test_a_test_nll_that_is_not_finite_fails_its_cell_instead_of_an_ok_nan(
    tmp_path, tiny, monkeypatch
):
    from models.iwae import IWAE

    monkeypatch.setattr(IWAE, "nll", lambda self, x, **kw: torch.full((len(x),), float("nan")))
    (record,) = run_table(tiny, options(tmp_path, cells=VAE), log=quiet)
    assert record.status == "failed" and record.metrics == {}
    assert record.reason.startswith("test NLL is nan for ") and "model's nll is not finite" in (
        record.reason
    )


def _during_the_first_cell(monkeypatch, act):
    """Run `act` while the first cell trains (between its lease and its record)."""
    real, calls = cell._run_cell, []

    def run_cell(*args, **kwargs):
        done = real(*args, **kwargs)
        if not calls:
            act()
        calls.append(1)
        return done

    monkeypatch.setattr(cell, "_run_cell", run_cell)
    return calls


def test_a_campaign_file_removed_during_a_run_is_written_again_and_nothing_retrains(
    tmp_path, tiny, monkeypatch
):
    opts = options(tmp_path)
    started = campaign(opts.results)
    trained = _during_the_first_cell(monkeypatch, (opts.results / CAMPAIGN_FILE).unlink)
    lines = []
    assert len(run_table(tiny, opts, log=lines.append)) == 2
    assert any("was removed during this run; written again with its campaign" in x for x in lines)
    assert read_campaign(opts.results) == started
    records, _ = read_records(opts.results, "tiny", "smoke")
    assert {r.settings["_campaign"] for r in records.values()} == {started}
    assert run_table(tiny, opts, log=quiet) == [] and len(trained) == 2  # each trained once


def test_a_campaign_changed_during_a_run_stops_it_and_the_rerun_resumes_the_cell(
    tmp_path, tiny, monkeypatch
):
    opts = options(tmp_path)
    campaign(opts.results)
    (opts.results / CAMPAIGN_FILE).unlink()

    def another():
        (opts.results / CAMPAIGN_FILE).write_text("feedfacefeedface created by hand\n")

    trained = _during_the_first_cell(monkeypatch, another)
    changed = "the campaign changed during this run .* to feedfacefeedface.*: stopped; the cells'"
    with pytest.raises(CampaignChanged, match=changed + " checkpoints are kept"):
        run_table(tiny, opts, log=quiet)
    assert read_records(opts.results, "tiny", "smoke")[0] == {}  # nothing in either campaign
    first, second = run_table(tiny, opts, log=quiet)
    assert {first.settings["_campaign"], second.settings["_campaign"]} == {"feedfacefeedface"}
    assert first.resumed and first.segments == 2 and not second.resumed
    assert len(trained) == 3  # the first cell's rerun only scored its finished checkpoint


def test_a_run_stopped_while_scoring_resumes_the_test_pass_bit_for_bit(
    tmp_path, spec_dir, monkeypatch
):
    """S6: a task preempted during the test pass (hours at the full tier) scored it all again."""
    spec = load_spec(write_spec(spec_dir, nll_batch=4))  # 4 batches of the 16 test images
    (whole,) = run_table(spec, options(tmp_path / "a", cells=VAE), log=quiet)
    monkeypatch.setattr(train, "EVAL_SAVE_S", 0.0)
    real_save, saves = train.EvalResume.save, []

    def killed_after_two_batches(self, parts, done, total, batch):
        real_save(self, parts, done, total, batch)
        saves.append(done)
        if done == 8:
            raise KeyboardInterrupt  # as a preempted task dies

    monkeypatch.setattr(train.EvalResume, "save", killed_after_two_batches)
    opts = options(tmp_path / "b", cells=VAE)
    with pytest.raises(KeyboardInterrupt):
        run_table(spec, opts, log=quiet)
    (point,) = opts.checkpoints.rglob("*.eval.pt")
    monkeypatch.setattr(train.EvalResume, "save", real_save)
    told, real_progress = [], train.EvalProgress.__call__

    def progress(self, done):
        told.append(done)
        real_progress(self, done)

    monkeypatch.setattr(train.EvalProgress, "__call__", progress)
    (resumed,) = run_table(spec, opts, log=quiet)
    assert saves == [4, 8] and told == [0, 12, 16]  # only the last two batches scored again
    assert model_metrics(resumed.metrics) == model_metrics(whole.metrics)
    assert resumed.segments == 2 and not point.exists()


def test_a_folder_where_a_record_belongs_is_refused_before_anything_trains(tmp_path, tiny):
    path = record_path(tmp_path / "results", "tiny", "smoke", IWAE)
    path.mkdir(parents=True)
    with pytest.raises(UsageError, match=f"^{path}: a folder where the cell's record belongs;"):
        run_table(tiny, options(tmp_path), log=quiet)
    assert not (tmp_path / "checkpoints").exists() or not any(
        (tmp_path / "checkpoints").rglob("*.pt")
    )
