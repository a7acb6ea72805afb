"""Hot-path benchmarks (README, 'Benchmarks'): each timing normalised by a one-thread sgemm.

A shared machine runs at a different speed from minute to minute, so raw seconds from two
sessions do not compare. Before every round of a benchmark (and once after the last) the `hot`
fixture times a fixed one-thread float32 matmul with the same timer; each round's time divided
by the mean of its two neighbouring matmuls is the round's normalised time, "how many of those
matmuls the hot path costs". Its median (with min and max) goes into the benchmark's
`extra_info["normalised"]`, which benchmarks/compare.py compares against benchmarks/baseline.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from statistics import median
from typing import Any

import pytest
import torch
from pytest_benchmark.utils import load_timer

SGEMM_N, SGEMM_REPS = 512, 4  # 1.07 GFLOP: about 15 ms at one thread on this machine's cores


def pytest_addoption(parser):
    group = parser.getgroup("dgm-bench")
    group.addoption(
        "--bench-threads",
        type=int,
        default=1,
        help="torch threads for the timed calls (default 1; the calibration is always one thread)",
    )
    group.addoption(
        "--bench-tiny",
        action="store_true",
        help="the unit tests' sizes: checks that the benchmarks run, times nothing worth keeping",
    )


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["loadavg_start"] = config.stash.get(LOAD_START, None)
    machine_info["loadavg_end"] = _loadavg()
    machine_info["torch"] = torch.__version__
    machine_info["bench_threads"] = config.getoption("bench_threads")
    machine_info["bench_tiny"] = config.getoption("bench_tiny")


LOAD_START = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[LOAD_START] = _loadavg()


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


@pytest.fixture(scope="session")
def tiny(request) -> bool:
    return request.config.getoption("bench_tiny")


@pytest.fixture(scope="session")
def sgemm(request) -> Callable[[], float]:
    """Seconds of SGEMM_REPS one-thread SGEMM_N^3 matmuls, by the session's benchmark timer."""
    timer = load_timer(request.config.getoption("benchmark_timer")).target
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(SGEMM_N, SGEMM_N, generator=g), torch.randn(SGEMM_N, SGEMM_N, generator=g)

    def measure() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t0 = timer()
        for _ in range(SGEMM_REPS):
            torch.mm(a, b)
        seconds = timer() - t0
        torch.set_num_threads(threads)
        return seconds

    measure()  # warm-up
    return measure


@pytest.fixture
def hot(benchmark, sgemm, request):
    """hot(fn, **info): time fn with pytest-benchmark, one warm-up round and the rounds of
    --benchmark-min-rounds, each next to a calibration, and store the normalised times."""
    threads = request.config.getoption("bench_threads")

    def run(fn: Callable[[], Any], **info: Any) -> Any:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        calibration: list[float] = []
        rounds = max(request.config.getoption("benchmark_min_rounds"), 5)
        try:
            result = benchmark.pedantic(
                fn, setup=lambda: calibration.append(sgemm()), rounds=rounds, warmup_rounds=1
            )
        finally:
            torch.set_num_threads(previous)
        benchmark.extra_info.update(info, threads=threads, loadavg=_loadavg())
        if benchmark.stats is None:  # --benchmark-disable: fn ran once, untimed
            return result
        times = benchmark.stats.stats.data
        calibration = calibration[-len(times) :] + [sgemm()]
        per_round = [t / ((a + b) / 2) for t, a, b in zip(times, calibration, calibration[1:])]
        benchmark.extra_info["sgemm_s"] = median(calibration)
        benchmark.extra_info["normalised"] = {
            "median": median(per_round),
            "min": min(per_round),
            "max": max(per_round),
            "rounds": len(per_round),
        }
        return result

    return run
