"""`bench run --rehearse`: every cell of a tier at its exact configuration through the whole
pipeline, for a bounded amount of work, before a cluster is paid for.

Each cell runs in two fresh processes: the first trains one epoch of the rehearsal's schedule
(bench.tasks.settings.rehearsal: two steps an epoch, every learning-rate stage visited), writes
its checkpoint and stops as if killed; the second resumes from that checkpoint, finishes the
schedule, scores a few test images and draws one sample. The cell passes when its record is ok
and, where it trains, was resumed across two processes. The records are marked as rehearsals
and kept in a scratch folder (never results); the report (per cell: passed or the one-line
failure, seconds per step, peak memory, checkpoint size, evaluation seconds) is
tables/rehearsal-<table>-<tier>.md, with its JSON under results/rehearsals/.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .records import (
    RecordError,
    atomic_write_text,
    device_name,
    provenance,
    read_record,
    record_path,
)
from .spec import TableSpec
from .tasks.settings import REHEARSAL_SAMPLE_S

SCRATCH = Path("rehearsals")
STOPPED = 3  # the exit status of a run stopped by --stop-after-epochs


@dataclass
class Rehearsal:
    cell: str
    passed: bool
    failure: str = ""
    step_s: float | None = None
    peak_rss_mib: float | None = None  # the larger of the two processes' peak resident sets
    checkpoint_mib: float | None = None
    other_s: float | None = None  # setup, evaluation and sampling: wall time less training
    wall_s: float = 0.0  # both processes, start to end
    segments: int = 0
    on_sample: bool = False
    batch: int | None = None  # the tier's batch size
    images: int | None = None  # training images the rehearsal had: a sample can hold fewer
    ran: bool = True  # False: the cell could not start here (its data set is absent)
    sample_bounded_s: float | None = None  # the sampler ran this long and was stopped there


PEAK = "rehearsal-peak-rss-kib"  # the line a worker prints at exit: its own peak resident set
# `python -m bench`, printing at exit the worker's peak resident set and its children's (KiB on
# Linux): the driver's RUSAGE_CHILDREN is the largest child so far, not this one's.
WORKER = (
    "import atexit, resource, runpy, sys\n"
    "def peak():\n"
    "    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)\n"
    f"    print('{PEAK}', max(resource.getrusage(w).ru_maxrss for w in who), file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "runpy.run_module('bench', run_name='__main__', alter_sys=True)\n"
)


def _peak_mib(stderr: str) -> float | None:
    """The worker's own peak resident set in MiB, from its exit line (None: killed first)."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(PEAK + " "):
            return int(line.split()[1]) / 1024
    return None


def available_bytes() -> int:
    """MemAvailable (Linux), else the physical memory: what a rehearsal may take on a CPU."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _limited(limit: int | None):
    """A child's data-segment limit: a step that does not fit fails with PyTorch's one-line
    allocation error instead of waking the kernel's OOM killer, which may kill anything."""
    if limit is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _run(args: list[str], log, limit: int | None = None) -> tuple[int, str, float | None]:
    """Run one worker: its exit status, its last error line and its own peak RSS (MiB)."""
    env = {**os.environ, "DGM_BENCH_BARS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        preexec_fn=_limited(limit),
    )
    for line in out.stdout.splitlines():
        log(f"    {line}")
    stderr = [line for line in out.stderr.splitlines() if not line.startswith(PEAK + " ")]
    errors = [line for line in stderr if line.startswith("error")]
    tail = errors[-1] if errors else ([line for line in stderr if line.strip()] or [""])[-1]
    return out.returncode, tail, _peak_mib(out.stderr)


def _skipped(scratch: Path, table: str, tier: str, cell: str) -> str:
    """Why the worker did not start the cell ('' if it did): a data set that is neither here
    nor committed as a sample (CIFAR-100)."""
    try:
        record = read_record(record_path(scratch, table, tier, cell))
    except (RecordError, OSError):
        return ""
    if record.status != "skipped":
        return ""
    if "sample" in record.reason:
        return f"not run: {record.reason}"
    return f"not run: {record.reason} (and no committed sample)"


def _failure(code: int, tail: str, limit: int | None = None) -> str:
    if code in (-9, 137):
        return "killed (SIGKILL: out of memory?)"
    return _out_of_memory(tail, limit) or tail[:300] or f"exit status {code}"


def _out_of_memory(reason: str, limit: int | None) -> str:
    """A failure that is the memory limit, said as such ('' for any other failure)."""
    if limit is None or "can't allocate memory" not in reason:
        return ""
    asked = reason.split("you tried to allocate ")[-1].split(" bytes")[0]
    more = f" (one allocation of {int(asked) / 2**30:.1f} GiB)" if asked.isdigit() else ""
    return f"does not fit: over the {limit / 2**30:.1f} GiB of memory available here{more}"


def rehearse_cell(
    spec: TableSpec,
    tier: str,
    cell: str,
    common: list[str],
    scratch: Path,
    trains: bool,
    log,
    real: bool = True,
    limit: int | None = None,
) -> Rehearsal:
    """Rehearse one cell in two processes (one where the task does not train), each held to
    `limit` bytes of data segment (None: no limit)."""
    base = [
        "run",
        spec.id,
        "--tier",
        tier,
        "--cells",
        cell,
        "--rehearse-worker",
        "--results",
        str(scratch),
        "--checkpoints",
        str(scratch / "checkpoints"),
        "--tables",
        str(scratch / "tables"),
        *common,
    ]
    t0 = time.perf_counter()
    ckpt_mib, first_peak = None, None
    if trains:
        code, tail, first_peak = _run([*base, "--fresh", "--stop-after-epochs", "1"], log, limit)
        if code != STOPPED and (skipped := _skipped(scratch, spec.id, tier, cell)):
            return Rehearsal(cell, False, skipped, wall_s=time.perf_counter() - t0, ran=False)
        if code != STOPPED:
            return Rehearsal(
                cell,
                False,
                "first process: " + _failure(code, tail, limit),
                wall_s=time.perf_counter() - t0,
            )
        ckpts = sorted((scratch / "checkpoints" / spec.id / tier).glob(f"{cell}.*.pt"))
        if not ckpts:
            return Rehearsal(
                cell,
                False,
                "first process stopped without a checkpoint",
                wall_s=time.perf_counter() - t0,
            )
        ckpt_mib = ckpts[-1].stat().st_size / 2**20
        second = base
    else:
        second = [*base, "--fresh"]
    code, tail, peak = _run(second, log, limit)
    wall = time.perf_counter() - t0
    try:
        record = read_record(record_path(scratch, spec.id, tier, cell))
    except (RecordError, OSError):
        failure = _failure(code, tail, limit)
        return Rehearsal(cell, False, "second process: " + failure, wall_s=wall)
    train_s = sum(h.get("seconds", 0.0) for h in record.history)
    steps = record.settings.get("max_steps_per_epoch") or 0
    result = Rehearsal(
        cell,
        passed=record.status == "ok" and record.rehearsal,
        wall_s=wall,
        step_s=train_s / (steps * len(record.history)) if steps and record.history else None,
        peak_rss_mib=max((p for p in (first_peak, peak) if p is not None), default=None),
        checkpoint_mib=ckpt_mib,
        other_s=record.wall_s - train_s,
        segments=record.segments,
        on_sample=real and record.settings.get("data") == "sample",
        batch=record.settings.get("batch_size"),
        images=record.data.get("n_train"),
        sample_bounded_s=record.metrics.get("sample_bounded_s"),
    )
    if record.status != "ok":
        result.failure = _out_of_memory(record.reason, limit) or f"{record.status}: {record.reason}"
    elif trains and not (record.resumed and record.segments == 2):
        result.passed = False
        result.failure = f"not resumed from the checkpoint ({record.segments} segments)"
    return result


def rehearse_table(
    spec: TableSpec,
    tier: str,
    cells: list[str],
    common: list[str],
    scratch: Path,
    trains: bool,
    log=print,
    real: bool = True,
    limit: int | None = None,
) -> list[Rehearsal]:
    out = []
    for i, cell in enumerate(cells, 1):
        log(f"[{i}/{len(cells)}] {cell}: rehearsing")
        r = rehearse_cell(spec, tier, cell, common, scratch, trains, log, real, limit)
        log(
            f"[{i}/{len(cells)}] {cell}: "
            + ("passed" if r.passed else r.failure if not r.ran else f"FAILED: {r.failure}")
            + f" ({r.wall_s:.0f} s)"
        )
        out.append(r)
    return out


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _on_sample(r: dict) -> str:
    """'(sample)', and the batch the sample allowed where it holds fewer images than a batch."""
    if not r["on_sample"]:
        return ""
    batch, images = r.get("batch"), r.get("images")
    if batch and images and images < batch:
        return f" (sample: batches of {images}, not {batch})"
    return " (sample)"


def _verdict(r: dict) -> str:
    if not r.get("ran", True):
        return r["failure"]
    if not r["passed"]:
        return f"FAILED: {r['failure']}"
    bounded = r.get("sample_bounded_s")
    return "passed" + (f" (sampler stopped at its {bounded:.0f} s bound)" if bounded else "")


def render_report(report: dict) -> str:
    from tabulate import tabulate

    per_cell = report.get("peak_rss") == "per cell"

    rows = [
        [
            r["cell"],
            _verdict(r),
            _num(r["step_s"], ".3g"),
            _num(r["peak_rss_mib"], ",.0f"),
            _num(r["checkpoint_mib"], ".1f"),
            _num(r["other_s"], ".1f"),
            f"{r['wall_s']:.0f}" + _on_sample(r),
        ]
        for r in report["cells"]
    ]
    passed = sum(r["passed"] for r in report["cells"])
    unrun = sum(not r.get("ran", True) for r in report["cells"])
    failed = len(rows) - passed - unrun
    lines = [
        f"# Rehearsal: {report['table']}, {report['tier']} tier",
        "",
        f"{passed} of {len(rows)} cells passed"
        + (f", {failed} failed" if failed else "")
        + (f", {unrun} not run (data absent here)" if unrun else "")
        + ": built at the tier's exact configuration, trained"
        " two steps an epoch through every learning-rate stage, checkpointed, stopped, resumed in"
        " a fresh process, scored on a few test images and sampled once"
        + (
            f", the sampler given at most {report['sample_budget_s']:.0f} s"
            if report.get("sample_budget_s")
            else ""
        )
        + " (bench/rehearse.py).",
        "",
        tabulate(
            rows,
            headers=[
                "cell",
                "rehearsal",
                "s/step",
                "peak RSS MiB" + ("" if per_cell else " (running max)"),
                "checkpoint MiB",
                "setup + eval s",
                "wall s",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "s/step: the rehearsal's training steps (the first steps of a run, warm-up included)."
        + (
            " Peak RSS: the larger of the two processes' peak resident sets."
            if per_cell
            else " Peak RSS (a report made before the workers reported their own): the largest"
            " resident set of any worker of this rehearsal so far, so an upper bound of each"
            " cell's own, exact for a cell larger than every cell before it."
        )
        + " '(sample)': the data set"
        " is not on this machine, so the exact models ran on the committed sample; where it holds"
        " fewer images than a batch, every step's batch is the sample's size, so such a line shows"
        " that the model builds, trains, checkpoints, resumes and scores, not that the tier's batch"
        " fits."
        + (
            f" Each process was held to {report['memory_limit_gib']:.1f} GiB of data segment"
            " (the memory available when the rehearsal started), so a step that does not fit"
            " fails with its allocation instead of the kernel's OOM killer (unless other processes"
            " take that memory meanwhile: the limit is each process's own)."
            if report.get("memory_limit_gib")
            else ""
        ),
        "",
        f"Made by `{report['command']}` at {report['commit'][:8]}"
        f"{' (uncommitted changes)' if report['dirty'] else ''} on {report['device']}, torch"
        f" {report['versions']['torch']}, {report['created']}.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    spec: TableSpec,
    tier: str,
    results: list[Rehearsal],
    command: str,
    device,
    results_dir: Path,
    tables: Path,
    limit: int | None = None,
) -> Path:
    from dataclasses import asdict
    from datetime import UTC, datetime

    report = {
        "table": spec.id,
        "tier": tier,
        "command": command,
        "device": device_name(device),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **provenance(),
        "memory_limit_gib": None if limit is None else limit / 2**30,
        "peak_rss": "per cell",  # each worker's own (earlier reports: the running maximum)
        "sample_budget_s": REHEARSAL_SAMPLE_S,
        "cells": [asdict(r) for r in results],
    }
    atomic_write_text(
        results_dir / "rehearsals" / spec.id / f"{tier}.json", json.dumps(report, indent=1) + "\n"
    )
    path = tables / f"rehearsal-{spec.id}-{tier}.md"
    atomic_write_text(path, render_report(report))
    return path
