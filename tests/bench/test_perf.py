"""`bench perf` in quick mode on tiny sizes: the structure of its records and table, and a
missing peer as a row that says so. No timed assertions: the machine is shared."""

import builtins
import json

import pytest

from bench import cli
from bench.perf import read_perf_records, run_perf
from bench.perf.render import render
from bench.perf.runner import Settings, Timing, interleave, ratio

pytestmark = pytest.mark.filterwarnings("ignore")


def test_interleave_and_ratio_structure():
    calls = []
    t = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                   Settings(rounds=3, min_sample_s=0.0))  # fmt: skip
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]  # after one calibration call each
    assert len(t["a"].wall) == len(t["a"].cpu) == 3
    r = ratio(Timing([2.0, 4.0, 3.0], [1.0, 1.0, 1.0]), Timing([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]))
    assert r["wall"] == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
    assert r["cpu"]["median"] == 0.5


def _check_rows(rows):
    for r in rows:
        assert r["case"] and r["peer"]
        if r.get("missing"):
            continue
        assert r["ours"]["cpu_s"] > 0 and r["ours"]["wall_s"] > 0
        if "speedup" in r:
            for clock in ("wall", "cpu"):
                s = r["speedup"][clock]
                assert s["min"] <= s["median"] <= s["max"] and s["n"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("only", ["iwae-train", "iwae-nll", "reversible", "revnet", "pixelcnn"])
def test_quick_tiny_run_writes_records(tmp_path, only):
    paths = run_perf(tmp_path, quick=True, only=only, tiny=True)
    assert [p.name for p in paths] == [f"{only}.json"]
    assert paths[0].parent.name == "perf-quick"  # never over the committed results/perf/
    assert not (tmp_path / "perf").exists()
    record = json.loads(paths[0].read_text())
    for key in ("commit", "versions", "device", "command", "loadavg", "sgemm_gflops", "started"):
        assert key in record
    assert record["quick"] and record["rows"]
    _check_rows(record["rows"])
    text = render(read_perf_records(tmp_path, quick=True))
    assert "shared machine" in text and "quick mode" in text


@pytest.mark.slow
def test_missing_peer_is_a_row_not_an_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_peers(name, *args, **kwargs):
        if name.split(".")[0] in ("pythae", "memcnn"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peers)
    monkeypatch.setattr("importlib.import_module", _guarded(no_peers))
    for only in ("iwae-train", "reversible"):
        run_perf(tmp_path, quick=True, only=only, tiny=True)
    records = read_perf_records(tmp_path, quick=True)
    for name, peer in (("iwae-train", "pythae"), ("reversible", "memcnn")):
        missing = [r for r in records[name]["rows"] if r.get("missing") and r["peer"] == peer]
        assert missing and all(r["note"].startswith("peer not installed: ") for r in missing)
    assert "peer not installed: pythae" in render(records)


def _guarded(no_peers):
    import importlib

    real = importlib.import_module

    def import_module(name, package=None):
        if name.split(".")[0] in ("pythae", "memcnn"):
            no_peers(name)
        return real(name, package)

    return import_module


def test_cli_rejects_an_unknown_benchmark(capsys):
    assert cli.main(["perf", "--only", "nope"]) == 2
    assert "not a benchmark" in capsys.readouterr().err
