"""`bench perf` in quick mode on tiny sizes: the structure of its records and table, a missing
peer as a row that says so, and each peer computing our step (float64, tiny sizes; skipped with
a one-line reason where the peer is not installed). No timed assertions: the machine is shared."""

import builtins
import json

import pytest
import torch

from bench import cli
from bench.perf import PEERS, flows, reversible, run_perf
from bench.perf.render import render
from bench.perf.timing import Settings, Timing, interleave, ratio, row
from bench.records import read_perf_records

pytestmark = pytest.mark.filterwarnings("ignore")


def test_interleave_and_ratio_structure():
    calls = []
    t = interleave(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        Settings(rounds=3, min_sample_s=0.0),
    )
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]  # after one calibration call each
    assert len(t["a"].wall) == len(t["a"].cpu) == 3
    r = ratio(Timing([2.0, 4.0, 3.0], [1.0, 1.0, 1.0]), Timing([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]))
    assert r["wall"] == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
    assert r["cpu"]["median"] == 0.5


def test_each_round_records_its_load_and_rounds_above_the_cores_are_flagged(monkeypatch):
    loads = iter([[1.0, 0, 0], [9.0, 0, 0], [1.5, 0, 0]])
    monkeypatch.setattr("bench.perf.timing.load_average", lambda: next(loads))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    t = interleave({"a": lambda: None, "b": lambda: None}, Settings(rounds=3, min_sample_s=0.0))
    assert t["a"].load == t["b"].load == [1.0, 9.0, 1.5]  # one reading per round, shared
    r = row("case", t["a"], t["b"], "b")
    assert r["load_1min"] == {
        "median": 1.5,
        "min": 1.0,
        "max": 9.0,
        "n": 3,
        "cores": 2,
        "rounds_over_cores": 1,
    }
    sgemm = {"before": {"median": 1.0}, "after": {"median": 1.0}}
    record = dict(benchmark="nice", rows=[r], versions={}, quick=True, cpu_count=2, device="cpu")
    record |= dict(sgemm_gflops=sgemm, loadavg={"before": [], "after": []}, wall_s=1, cpu_s=1)
    record |= dict(commit="0" * 40, dirty=False, command="bench perf", started="now")
    assert "load 1.50 (1.00–9.00), **1/3 rounds at load > 2 cores**" in render({"nice": record})


def _peer(name):
    return pytest.importorskip(
        name, reason=f"peer not installed: {name}; pip install -e '.[peers]'"
    )


@pytest.mark.parametrize("peer", ["revlib", "memcnn"])
def test_reversible_peer_computes_our_step_in_float64(peer):
    """The timed peer stacks are our blocks with our weights: output and F/G gradients equal in
    float64, and the check fails once one weight differs."""
    _peer(peer)
    z = reversible.sizes(Settings(tiny=True))
    nets, missing = reversible.stacks(z)
    assert peer not in missing
    x = torch.randn(z["batch"], z["channels"], z["hw"], z["hw"])
    diffs = reversible.agreement(nets, peer, x)
    assert max(diffs["output"], diffs["param_grads"]) < reversible.AGREE
    if peer == "revlib":  # MemCNN doubles the gradient of a leaf input (reported in its row)
        assert diffs["input_grad"] < reversible.AGREE
    with torch.no_grad():
        next(reversible.residuals(peer, nets[peer])[-1].parameters()).add_(1e-3)
    assert reversible.agreement(nets, peer, x)["param_grads"] > reversible.AGREE


def test_zuko_nice_is_our_nice_in_float64():
    """zuko's NICE with our weights, scaling and prior: log p(x) and every gradient equal in
    float64; a changed s breaks the check."""
    _peer("zuko")
    z = flows.sizes(Settings(tiny=True))
    nets, missing = flows.models(z)
    assert not missing
    x = torch.rand(z["batch"], *z["shape"])
    assert max(flows.agreement(nets, x).values()) < flows.AGREE
    assert nets["zuko"]().log_prob(x.flatten(1)).shape == (z["batch"],)
    with torch.no_grad():
        nets["ours"].s[0] += 1e-3  # agreement() resets s to one random value in both...
        nets["ours"].couplings[0].m[0].bias[0] += 1e-3  # ...but not the couplings
    assert flows.agreement(nets, x)["loglik"] > flows.AGREE


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
@pytest.mark.parametrize(
    "only", ["iwae-train", "iwae-nll", "reversible", "revnet", "pixelcnn", "nice"]
)
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
    text = render(read_perf_records(tmp_path, quick=True)[0])
    assert "shared machine" in text and "quick mode" in text


@pytest.mark.slow
def test_missing_peer_is_a_row_not_an_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_peers(name, *args, **kwargs):
        if name.split(".")[0] in PEERS:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peers)
    monkeypatch.setattr("importlib.import_module", _guarded(no_peers))
    for only in ("iwae-train", "reversible", "nice"):
        run_perf(tmp_path, quick=True, only=only, tiny=True)
    records, _ = read_perf_records(tmp_path, quick=True)
    expected = ("iwae-train", "pythae"), ("reversible", "memcnn"), ("reversible", "revlib")
    for name, peer in (*expected, ("nice", "zuko")):
        missing = [r for r in records[name]["rows"] if r.get("missing") and r["peer"] == peer]
        assert missing and all(r["note"].startswith("peer not installed: ") for r in missing)
    assert "peer not installed: pythae" in render(records)


def _guarded(no_peers):
    import importlib

    real = importlib.import_module

    def import_module(name, package=None):
        if name.split(".")[0] in PEERS:
            no_peers(name)
        return real(name, package)

    return import_module


def test_cli_rejects_an_unknown_benchmark(capsys):
    assert cli.main(["perf", "--only", "nope"]) == 2
    assert "not a benchmark" in capsys.readouterr().err


def test_render_only_times_nothing_and_renders_the_records(tmp_path, capsys):
    argv = ["--results", str(tmp_path), "perf", "--quick", "--render-only"]
    assert cli.main(argv) == 2 and "no `bench perf` records" in capsys.readouterr().err
    (path,) = run_perf(tmp_path, quick=True, only="nice", tiny=True)
    before = path.read_bytes()
    assert cli.main(argv) == 0
    assert path.read_bytes() == before and list(path.parent.iterdir()) == [path]
    assert "nice" in (tmp_path / "tables" / "perf-quick.md").read_text()
    assert cli.main([*argv, "--only", "nice"]) == 2 and "drop --only" in capsys.readouterr().err
