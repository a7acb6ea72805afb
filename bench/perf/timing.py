"""Interleaved timing against peers: the logic every `bench perf` benchmark shares.

This machine is shared, so a time measured minutes apart from its comparison is noise. Each
benchmark therefore times its contenders in one process, one after another within every round
(A, B, A, B, ...), and reports the median over rounds of the per-round ratio, with its min and
max, for wall time and for the process's CPU time (the tighter one when other processes compete
for the cores). Compute-bound steps are also given as a fraction of the sgemm rate measured in
the same run, from their FLOPs (torch.utils.flop_counter).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import torch


@dataclass
class Settings:
    """How long to measure: `quick` is one short round for CI, not numbers to quote."""

    quick: bool = False
    rounds: int = 7
    min_sample_s: float = 0.05  # calls per sample are raised until a sample takes this long
    tiny: bool = False  # the unit tests' sizes

    @classmethod
    def make(cls, quick: bool, tiny: bool = False) -> Settings:
        if quick:
            return cls(quick=True, rounds=1, min_sample_s=0.0, tiny=tiny)
        return cls(tiny=tiny)


@dataclass
class Timing:
    """Seconds per call of one contender, one sample per round, and the 1-minute load average at
    the end of each round (the same for every contender of one `interleave`)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        return {"wall_s": median(self.wall), "cpu_s": median(self.cpu)}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio(a: Timing, b: Timing) -> dict[str, dict[str, float]]:
    """a / b round by round (the two were timed next to each other), for wall and CPU time."""
    return {
        "wall": spread([x / y for x, y in zip(a.wall, b.wall, strict=True)]),
        "cpu": spread([x / y for x, y in zip(a.cpu, b.cpu, strict=True)]),
    }


def _calls_for(fn: Callable[[], Any], min_s: float) -> int:
    """Calls per sample so that one sample lasts at least `min_s` of CPU time."""
    t0 = time.process_time()
    fn()
    one = max(time.process_time() - t0, 1e-6)
    return max(1, int(min_s / one + 0.999))


def interleave(fns: dict[str, Callable[[], Any]], s: Settings) -> dict[str, Timing]:
    """Time each callable once per round, in turn; the first call of each is a warm-up."""
    calls = {name: _calls_for(fn, s.min_sample_s) for name, fn in fns.items()}
    out = {name: Timing() for name in fns}
    for r in range(s.rounds):
        names = list(fns) if r % 2 == 0 else list(reversed(fns))  # no contender always first
        for name in names:
            n = calls[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fns[name]()
            out[name].wall.append((time.perf_counter() - w0) / n)
            out[name].cpu.append((time.process_time() - c0) / n)
        load = load_average()
        for timing in out.values():
            timing.load.extend(load[:1])
    return out


def load_of_rounds(load: list[float]) -> dict[str, Any]:
    """The 1-minute load over a comparison's rounds, and how many rounds ran at a load above the
    core count: there the contenders waited for a core, and even CPU time is inflated by the
    cache and frequency effects of the other jobs."""
    cores = os.cpu_count() or 1
    return {**spread(load), "cores": cores, "rounds_over_cores": sum(v > cores for v in load)}


def flops_of(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def sgemm_gflops(n: int = 1024, rounds: int = 5) -> dict[str, float]:
    """This machine's float32 matmul rate now, in GFLOP/s of CPU time (median, min, max)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(rounds):
        c0 = time.process_time()
        for _ in range(3):
            a @ b
        rates.append(3 * 2 * n**3 / max(time.process_time() - c0, 1e-9) / 1e9)
    return spread(rates)


def row(
    case: str,
    ours: Timing,
    peer: Timing | None,
    peer_name: str,
    *,
    items: int = 1,
    flops: int | None = None,
    sgemm: float | None = None,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One table row: ours against one peer. `items` per call turn seconds into items/s;
    `flops` per call give the fraction of the sgemm rate that our CPU time reaches."""
    out: dict[str, Any] = {"case": case, "peer": peer_name, "ours": ours.medians(), "note": note}
    out["ours"]["items_per_s_cpu"] = items / out["ours"]["cpu_s"]
    if peer is not None:
        out["peer_s"] = peer.medians()
        out["peer_s"]["items_per_s_cpu"] = items / out["peer_s"]["cpu_s"]
        # peer time / our time: > 1 means we are faster
        out["speedup"] = ratio(peer, ours)
    if ours.load:
        out["load_1min"] = load_of_rounds(ours.load)
    if flops is not None and sgemm:
        out["flops"] = flops
        out["sgemm_fraction"] = flops / out["ours"]["cpu_s"] / (sgemm * 1e9)
    out.update(extra)
    return out


def missing_row(case: str, peer_name: str, why: str) -> dict[str, Any]:
    """The row of a comparison that could not run: the table says why instead of a number."""
    return {"case": case, "peer": peer_name, "note": why, "missing": True}


def peer_import(name: str):
    """The peer package, or raise PeerMissing saying how to get it."""
    import importlib

    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or a peer that breaks on import with this torch
        raise PeerMissing(
            f"peer not installed: {name} ({type(e).__name__}: {e}); pip install -e '.[peers]'"
        ) from None


class PeerMissing(Exception):
    """A peer package that is not importable here; its message becomes the table's note."""


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
