"""`bench perf`: our hot paths timed against their peers in one process (README, 'Performance').

One record per benchmark under results/perf/<benchmark>.json, with the provenance of the
likelihood tables' records (commit, versions, device, command) plus the machine's load and
sgemm rate during the run; tables/perf.md and tables/perf.png are rendered from those records.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import os
import time
import warnings
from pathlib import Path

from ..records import atomic_write_text, command_line, perf_folder, provenance
from .timing import Settings, load_average, sgemm_gflops

BENCHMARKS = {  # name -> the module that measures it
    "iwae-train": "iwae",
    "iwae-nll": "iwae",
    "reversible": "reversible",
    "revnet": "reversible",
    "pixelcnn": "pixelcnn",
    "nice": "flows",
}
PEERS = ("pythae", "memcnn", "revlib", "zuko")


def peer_versions() -> dict[str, str]:
    out = {}
    for name in PEERS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_perf(
    results: Path,
    quick: bool = False,
    only: str | None = None,
    tiny: bool = False,
    command: str | None = None,
) -> list[Path]:
    """Run the benchmarks (all, or `only` one) on one thread and write their records."""
    import torch

    if only is not None and only not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {only!r}; one of {', '.join(BENCHMARKS)}")
    torch.set_num_threads(1)  # the ratios are per core; the other core is someone else's
    s = Settings.make(quick, tiny)
    base = {**provenance(), "command": command or command_line(), "quick": quick, "threads": 1}
    base["versions"].update(peer_versions())
    base["device"] = _device()
    paths = []
    modules = dict.fromkeys(BENCHMARKS[n] for n in ([only] if only else BENCHMARKS))
    for module_name in modules:
        module = importlib.import_module(f".{module_name}", __name__)
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        load_before, sgemm_before = load_average(), sgemm_gflops(rounds=1 if quick else 5)
        w0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peers' deprecation warnings, once per call
            measured = {
                name: bench(s, sgemm_before["median"])
                for name, bench in module.BENCHES.items()
                if only in (None, name)
            }
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        sgemm_after = sgemm_gflops(rounds=1 if quick else 5)
        for name, rows in measured.items():
            record = {
                "benchmark": name,
                "rows": rows,
                "sgemm_gflops": {"before": sgemm_before, "after": sgemm_after},
                "loadavg": {"before": load_before, "after": load_average()},
                "cpu_count": _cpu_count(),
                "started": started,
                "wall_s": wall,
                "cpu_s": cpu,
                **base,
            }
            path = results / perf_folder(quick) / f"{name}.json"
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            paths.append(path)
    return paths


def _device() -> str:
    import torch

    from ..records import device_name

    return device_name(torch.device("cpu"))


def _cpu_count() -> int:
    return os.cpu_count() or 0
