"""bench.records: atomic writes that never leave half a file, and unreadable records reported as
one warning line naming the file, not as a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from bench import records as rec
from bench.errors import UsageError
from bench.records import (
    Record,
    read_perf_records,
    read_record,
    read_records,
    record_path,
    write_record,
)


def record(cell="mnist-layers1-k1-vae", **changes) -> Record:
    fields = dict(
        table="tiny",
        tier="smoke",
        cell=cell,
        params={"dataset": "mnist", "layers": 1, "k": 1, "model": "vae"},
        status="ok",
        metrics={"nll": 90.5, "active_units": [20]},
        seed=3,
    )
    return Record(**{**fields, **changes})


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_then_read_round_trips(tmp_path):
    path = write_record(tmp_path, record())
    assert path == record_path(tmp_path, "tiny", "smoke", "mnist-layers1-k1-vae")
    assert path == tmp_path / "tiny" / "smoke" / "mnist-layers1-k1-vae.json"
    assert read_record(path) == record()
    assert json.loads(path.read_text())["metrics"] == {"nll": 90.5, "active_units": [20]}
    assert files(path.parent) == ["mnist-layers1-k1-vae.json"]  # no temp file left


def test_overwrite_replaces_the_record(tmp_path):
    write_record(tmp_path, record())
    path = write_record(tmp_path, record(metrics={"nll": 80.0}))
    assert read_record(path).metrics == {"nll": 80.0}
    assert files(path.parent) == ["mnist-layers1-k1-vae.json"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_leaves_the_old_record_and_no_temp_file(tmp_path, monkeypatch, failing):
    path = write_record(tmp_path, record())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rec.os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        write_record(tmp_path, record(metrics={"nll": 1.0}))
    assert path.read_bytes() == before
    assert files(path.parent) == ["mnist-layers1-k1-vae.json"]


def test_a_failure_while_serialising_leaves_the_old_record(tmp_path, monkeypatch):
    path = write_record(tmp_path, record())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise TypeError("Object of type Tensor is not JSON serializable")

    monkeypatch.setattr(rec.json, "dumps", boom)
    with pytest.raises(TypeError):
        write_record(tmp_path, record(metrics={"nll": 1.0}))
    assert path.read_bytes() == before
    assert files(path.parent) == ["mnist-layers1-k1-vae.json"]


@pytest.mark.parametrize(
    "text",
    ['{"table": "tiny", "tier": "sm', "[1, 2]", '{"table": "tiny"}', '{"colour": 1}', ""],
    ids=["truncated", "not an object", "fields missing", "unknown field", "empty"],
)
def test_read_records_warns_about_an_unreadable_file_and_skips_it(tmp_path, text):
    good = write_record(tmp_path, record())
    bad = good.with_name("mnist-layers1-k1-iwae.json")
    bad.write_text(text)
    records, warnings = read_records(tmp_path, "tiny", "smoke")
    assert list(records) == ["mnist-layers1-k1-vae"]
    assert records["mnist-layers1-k1-vae"] == record()
    assert len(warnings) == 1
    assert str(bad) in warnings[0]
    assert "\n" not in warnings[0]


def test_read_records_of_a_tier_never_run(tmp_path):
    assert read_records(tmp_path, "tiny", "small") == ({}, [])


def test_records_are_keyed_by_their_cell(tmp_path):
    write_record(tmp_path, record())
    write_record(tmp_path, record(cell="mnist-layers1-k1-iwae", status="failed", reason="NaN"))
    records, warnings = read_records(tmp_path, "tiny", "smoke")
    assert warnings == []
    assert records["mnist-layers1-k1-iwae"].reason == "NaN"
    assert records["mnist-layers1-k1-vae"].status == "ok"


def test_provenance_names_the_commit_of_the_code_not_of_the_working_directory(
    tmp_path, monkeypatch
):
    package = Path(rec.__file__).parent
    head = subprocess.run(
        ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("bench is not installed from a git checkout")
    monkeypatch.chdir(tmp_path)  # e.g. `bench run` started from a scratch folder
    assert rec.provenance()["commit"] == head.stdout.strip()


def test_outputs_do_not_make_the_code_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("results/r.json", "tables/t.md", "models/m.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sub = tmp_path / "models"
    assert not rec.code_changed(sub)
    (tmp_path / "results/r.json").write_text("1\n")
    (tmp_path / "tables/t.md").write_text("1\n")
    assert not rec.code_changed(sub)
    (tmp_path / "models/m.py").write_text("1\n")
    assert rec.code_changed(sub)


def test_written_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        rec.atomic_write_text(tmp_path / "t.md", "x\n")
    finally:
        os.umask(mask)
    assert (tmp_path / "t.md").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "change",
    [
        {"commit": None},
        {"metrics": "garbage"},
        {"status": "good"},
        {"history": [1]},
        {"seed": "3"},
        {"versions": {"torch": 2}},
        {"plugin": {"model": "x"}},
        {"evaluated_from": {"path": "p", "kind": "weights", "sha256": 5}},
    ],
    ids=[
        "commit null",
        "metrics a string",
        "unknown status",
        "history of numbers",
        "seed a str",
        "version a number",
        "plugin without its constructor",
        "evaluated_from sha256 a number",
    ],
)
def test_a_record_with_wrong_types_is_skipped_with_one_warning(tmp_path, change):
    path = write_record(tmp_path, record())
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    records, warnings = read_records(tmp_path, "tiny", "smoke")
    assert records == {}
    (warning,) = warnings
    assert warning.startswith(f"{path}: invalid record (field '{next(iter(change))}'")
    assert "\n" not in warning


@pytest.mark.parametrize("place", ["smoke/zz.json", "small/mnist-layers1-k1-vae.json"])
def test_a_record_at_the_wrong_path_is_not_trusted(tmp_path, place):
    """A record copied under another name or tier must not show up in that table."""
    source = write_record(tmp_path, record())
    copy = tmp_path / "tiny" / place
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(source.read_bytes())
    source.unlink()
    records, warnings = read_records(tmp_path, "tiny", copy.parent.name)
    assert records == {}
    (warning,) = warnings
    assert f"{copy}: invalid record (it is the record of tiny/smoke/mnist-layers1-k1-vae" in warning


def test_an_integer_wall_time_is_a_valid_float(tmp_path):
    path = write_record(tmp_path, record())
    path.write_text(json.dumps({**json.loads(path.read_text()), "wall_s": 3}))
    assert read_record(path).wall_s == 3


def test_cpu_seconds_may_be_null_for_a_record_made_before_they_were_kept(tmp_path):
    path = write_record(tmp_path, record())
    path.write_text(json.dumps({**json.loads(path.read_text()), "cpu_s": None}))
    assert read_record(path).cpu_s is None
    path.write_text(json.dumps({**json.loads(path.read_text()), "cpu_s": "fast"}))
    assert "field 'cpu_s': expected float" in read_records(tmp_path, "tiny", "smoke")[1][0]


def test_a_fifo_or_a_folder_where_a_record_belongs_is_refused_unopened(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: `bench run` and `bench table`
    hung on one."""
    os.mkfifo(write_record(tmp_path, record()).with_name("a-fifo.json"), 0o644)
    (tmp_path / "tiny" / "smoke" / "a-folder.json").mkdir()

    def hung(*_):
        raise TimeoutError("read_records hung")

    before = signal.signal(signal.SIGALRM, hung)  # a hang fails the test, not the suite
    signal.alarm(10)
    try:
        records, warnings = read_records(tmp_path, "tiny", "smoke")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert list(records) == ["mnist-layers1-k1-vae"]
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "a FIFO, not a record; remove it and rerun its cell",
        "a folder, not a record; remove it and rerun its cell",
    ]


def test_untracked_code_makes_the_run_dirty(tmp_path):
    """A new spec or model module that is not committed is code the commit does not contain."""

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("bench/specs/a.toml", "models/m.py", ".gitignore"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("*.pyc\nscratch/\n" if name == ".gitignore" else "0\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    where = tmp_path / "bench"
    for ignored in (
        "models/m.pyc",
        "results/new.json",
        "tables/new.md",
        "scratch/x.py",
        "notes.txt",
    ):
        (tmp_path / ignored).parent.mkdir(exist_ok=True)
        (tmp_path / ignored).write_text("1\n")
    assert not rec.code_changed(where)
    for new in ("bench/specs/new.toml", "models/new.py"):
        (tmp_path / new).write_text("1\n")
        assert rec.code_changed(where), new
        (tmp_path / new).unlink()


def test_the_command_is_recorded_shell_quoted(monkeypatch):
    monkeypatch.setattr(rec.sys, "argv", ["/venv/bin/bench", "run", "t", "--cells", "mnist-*,a b"])
    assert rec.command_line() == "bench run t --cells 'mnist-*,a b'"
    monkeypatch.setattr(rec.sys, "argv", ["/repo/bench/__main__.py", "run", "t"])  # python -m
    assert rec.command_line() == "bench run t"
    assert rec.command_line(["run", "t", "--cells", "a b"]) == "bench run t --cells 'a b'"


def test_provenance_names_torchvision_and_numpy():
    versions = rec.provenance()["versions"]
    assert versions["torchvision"] and versions["numpy"]


def test_a_folder_that_cannot_be_written_is_a_usage_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    rec.writable_folder(tmp_path / "new", "--results")
    assert (tmp_path / "new").is_dir() and files(tmp_path / "new") == []
    monkeypatch.setattr(rec.tempfile, "TemporaryFile", refuse)
    with pytest.raises(
        UsageError,
        match=f"^{tmp_path}: cannot write there .Permission denied.; "
        "fix its permissions or pass --results DIR$",
    ):
        rec.writable_folder(tmp_path, "--results")


@pytest.mark.parametrize(
    "metrics",
    [
        {"active_units": "x"},
        {"nll": "abc"},
        {"nll": True},
        {"active_units": [20, "2"]},
        {"nll": {"mean": 1}},
    ],
)
def test_a_metric_that_is_not_a_measurement_makes_the_record_invalid(tmp_path, metrics):
    path = write_record(tmp_path, record())
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "metrics": {**data["metrics"], **metrics}}))
    records, warnings = read_records(tmp_path, "tiny", "smoke")
    assert records == {}
    (warning,) = warnings
    assert warning.startswith(f"{path}: invalid record (metric '{next(iter(metrics))}': ")
    assert "is not a number or a list of numbers" in warning and "\n" not in warning


def test_null_and_list_metrics_are_measurements(tmp_path):
    write_record(tmp_path, record(metrics={"nll": 1.0, "nll_stderr": None, "au": [1, 2.5]}))
    assert read_records(tmp_path, "tiny", "smoke")[1] == []


def test_perf_records_are_those_with_a_benchmark_and_a_broken_one_is_named(tmp_path):
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "nice.json").write_text('{"benchmark": "nice", "rows": []}')
    (tmp_path / "perf" / "jobs.json").write_text('{"cells": []}')  # benchmarks/jobs_speedup.py
    (tmp_path / "perf" / "list.json").write_text("[1, 2]")
    assert read_perf_records(tmp_path) == ({"nice": {"benchmark": "nice", "rows": []}}, [])
    (tmp_path / "perf" / "cut.json").write_text('{"benchmark": "iw')
    records, warnings = read_perf_records(tmp_path)
    assert list(records) == ["nice"]
    assert len(warnings) == 1 and "cut.json: unreadable perf record" in warnings[0]
    assert read_perf_records(tmp_path, quick=True) == ({}, [])
