"""`bench run --jobs 2` against `--jobs 1` on 8 cells of 20 s or more: wall-time ratio, CPU time,
and whether every cell's numbers are identical (they must be, at one thread per cell).

    python benchmarks/jobs_speedup.py --data-dir ../shared/data [--out results/perf/jobs.json]

The cells are the IWAE table's Omniglot k = 1 and k = 5 cells (8 of them) with the small tier cut
to 6 epochs and a k = 1000 bound, so that the whole comparison takes minutes; run it on a quiet
machine (it prints the load average before and after). Both runs start from empty folders.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELLS = "omniglot-*-k1-*,omniglot-*-k5-*"
SMALL = """[tiers.small]
stages = 1
epochs_per_stage = [6]
batch_size = 100
n_train = 10000
n_test = 500
nll_k = 1000
nll_chunk = 100
au_samples = 100
"""
MACHINE = {"images_per_s", "sample_s", "sample_s_naive", "peak_mib"}  # not the model's numbers


def write_spec(folder: Path) -> None:
    text = (ROOT / "bench/specs/iwae-table.toml").read_text()
    text = re.sub(r"^\[tiers\.small\].*?(?=^\[)", SMALL + "\n", text, count=1, flags=re.S | re.M)
    (folder / "iwae-table.toml").write_text(text)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(jobs: int, work: Path, data_dir: Path) -> dict:
    results = work / f"jobs{jobs}"
    command = [
        sys.executable,
        "-m",
        "bench",
        "--specs",
        str(work),
        "--results",
        str(results),
        "--tables",
        str(results / "tables"),
        "run",
        "iwae-table",
        "--tier",
        "small",
        "--cells",
        CELLS,
        "--data-dir",
        str(data_dir),
        "--jobs",
        str(jobs),
        "--threads-per-cell",
        "1",
        "--checkpoints",
        str(results / "ckpt"),
    ]
    load, cpu0, t0 = os.getloadavg()[0], children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0:
        sys.exit(f"jobs {jobs} failed:\n{done.stderr[-3000:]}")
    numbers = {}
    for path in sorted((results / "iwae-table" / "small").glob("*.json")):
        record = json.loads(path.read_text())
        numbers[record["cell"]] = {
            "metrics": {k: v for k, v in record["metrics"].items() if k not in MACHINE},
            "losses": [h["loss"] for h in record["history"]],
            "wall_s": record["wall_s"],
        }
    return {
        "jobs": jobs,
        "wall_s": wall,
        "cpu_s": cpu,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "cells": numbers,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=ROOT / "results/perf/jobs.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_spec(work)
        serial = run(1, work, args.data_dir.resolve())
        parallel = run(2, work, args.data_dir.resolve())
    same = all(
        serial["cells"][c]["metrics"] == parallel["cells"][c]["metrics"]
        and serial["cells"][c]["losses"] == parallel["cells"][c]["losses"]
        for c in serial["cells"]
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    status = ["git", "status", "--porcelain", "--", "bench", "models"]
    dirty = bool(subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout.strip())
    report = {
        "command": " ".join(["python", *sys.argv]),
        "commit": commit,
        "dirty": dirty,
        "cells": len(serial["cells"]),
        "ratio_wall": serial["wall_s"] / parallel["wall_s"],
        "identical_numbers": same,
        "serial": serial,
        "parallel": parallel,
        "cores": len(os.sched_getaffinity(0)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    cell_s = [c["wall_s"] for c in serial["cells"].values()]
    print(
        f"{len(cell_s)} cells of {min(cell_s):.0f}-{max(cell_s):.0f} s: --jobs 1"
        f" {serial['wall_s']:.0f} s wall ({serial['cpu_s']:.0f} s CPU, load"
        f" {serial['load_before']:.1f}), --jobs 2 {parallel['wall_s']:.0f} s wall"
        f" ({parallel['cpu_s']:.0f} s CPU, load {parallel['load_before']:.1f}): ratio"
        f" {report['ratio_wall']:.2f}; numbers identical: {same}; {args.out}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
