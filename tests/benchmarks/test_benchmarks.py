"""benchmarks/ stays runnable (its hot paths at tiny sizes, untimed) and its compare script
fails exactly when a normalised median grows past the limit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def load_compare():
    spec = importlib.util.spec_from_file_location("bench_compare", BENCHMARKS / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_run_tiny_and_untimed():
    code = pytest.main(
        [
            str(BENCHMARKS),
            "-c",
            str(BENCHMARKS / "pytest.ini"),
            "--rootdir",
            str(BENCHMARKS),
            "--bench-tiny",
            "--benchmark-disable",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
    )
    assert code == 0


def write(path: Path, medians: dict[str, float], threads: int = 1) -> Path:
    benchmarks = [
        {"name": n, "extra_info": {"normalised": {"median": m}}} for n, m in medians.items()
    ]
    path.write_text(
        json.dumps({"machine_info": {"bench_threads": threads}, "benchmarks": benchmarks})
    )
    return path


def test_compare_fails_past_the_limit_only(tmp_path, capsys):
    compare = load_compare()
    base = write(tmp_path / "base.json", {"a": 2.0, "b": 10.0})
    same = write(tmp_path / "same.json", {"a": 2.49, "b": 5.0, "c": 1.0}, threads=2)
    slow = write(tmp_path / "slow.json", {"a": 2.0, "b": 12.6})
    fewer = write(tmp_path / "fewer.json", {"a": 2.0})
    assert compare.main([str(base), str(same)]) == 0  # +24.5% and faster pass; new ones listed
    assert compare.main([str(base), str(slow)]) == 1  # +26%
    assert "FAIL (> +25%)" in capsys.readouterr().out
    assert compare.main([str(base), str(slow), "--limit", "30"]) == 0
    assert compare.main([str(base), str(fewer)]) == 1
    assert "FAIL (missing)" in capsys.readouterr().out


def test_compare_refuses_a_file_without_normalised_medians(tmp_path):
    compare = load_compare()
    base = write(tmp_path / "base.json", {"a": 1.0})
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"benchmarks": [{"name": "a", "extra_info": {}}]}))
    with pytest.raises(SystemExit, match="raw.json: no normalised medians"):
        compare.main([str(base), str(raw)])
    with pytest.raises(SystemExit, match="absent.json: cannot read"):
        compare.main([str(base), str(tmp_path / "absent.json")])
