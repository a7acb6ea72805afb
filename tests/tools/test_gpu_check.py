"""tools/gpu-check: what it runs (the CPU dry run) and its memory report, without a GPU."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

from bench.records import Record, write_record

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu-check"


def _module():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_dry_run_lists_a_cuda_check_of_every_smoke_tier():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = "$ bench check iwae-table --tier smoke --device cuda --work <scratch>/iwae-table"
    assert expected in lines
    assert sum(line.startswith("$ bench check") for line in lines) == 9  # all have [check.smoke]
    plans = [line for line in lines if line.startswith("$ bench plan")]
    rehearsals = [line for line in lines if "--rehearse --cells" in line]
    assert len(plans) == len(rehearsals) == 8  # every table with a full tier (not factorised)
    assert "$ bench plan iwae-table --tier full --device cuda" in plans[1]
    # i-RevNet's rehearsal is its largest cell by the committed plan's step peak
    assert (
        "bench run irevnet-imagenet --tier full --rehearse --cells irevnet_a-imagenet"
        in (rehearsals[0])
    )


def test_unknown_tables_are_one_line():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--tables", "nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr == "error: no table with [check.smoke]: nope\n"


def test_the_memory_report_puts_nvml_beside_torch(tmp_path):
    record = Record(
        table="nice",
        tier="smoke",
        cell="nice-mnist",
        params={},
        status="ok",
        device="cuda: NVIDIA H200",
        memory={"cuda_peak_bytes": 100 * 2**20, "nvml_process_bytes": 612 * 2**20},
    )
    write_record(tmp_path / "results", record)
    (line,) = _module().memory_lines(tmp_path, "nice")
    assert line.split() == ["nice-mnist", "100.0", "612.0", "6.12", "cuda:", "NVIDIA", "H200"]
