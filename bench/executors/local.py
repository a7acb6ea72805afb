"""Cells on this machine: one after another in this process, or in a pool of worker processes
(`--jobs N`).

The pool is `concurrent.futures.ProcessPoolExecutor` with the *spawn* start method: the
standard library's pool, and spawn because a forked child would inherit torch's thread pool and
OpenMP state from a parent that already imported torch. Each worker runs `cell.execute(job)`,
the same function the serial loop calls, at a fixed thread count, so a cell's numbers do not
depend on how many cells run beside it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..cell import CellJob, Outcome, RunOptions, execute, others_first
from ..errors import UsageError


def run(jobs: list[CellJob], opts: RunOptions, log=print) -> list[Outcome]:
    """The local executor: serially with --jobs 1, else in a pool of --jobs workers."""
    if opts.jobs == 1:
        return run_serial(jobs, log)
    return run_local(jobs, opts.jobs, opts.device, log)


def run_serial(jobs: list[CellJob], log=print) -> list[Outcome]:
    """Each job in this process, one after another (every rank alike under torchrun)."""
    return others_first(jobs, lambda batch: [(j, execute(j, log)) for j in batch])


def _init_worker(gpus) -> None:
    """Each worker: one GPU of its own (if any), line progress instead of bars, and a SIGTERM
    that unwinds (releasing the cell's lease) like Ctrl-C does."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    os.environ["DGM_BENCH_BARS"] = "0"
    signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _visible_gpus(device: str, jobs: int) -> list[str] | None:
    if not device.startswith("cuda"):
        return None
    if device != "cuda":
        raise UsageError(
            f"--device {device} --jobs {jobs}: each worker gets a GPU of its own; pass"
            " --device cuda (and CUDA_VISIBLE_DEVICES to choose them)"
        )
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        ids = [g for g in listed.split(",") if g.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    if len(ids) < jobs:
        raise UsageError(
            f"--jobs {jobs} --device {device}: one GPU per worker, but {len(ids)} are visible;"
            f" pass --jobs {max(len(ids), 1)}"
        )
    return ids[:jobs]


def run_local(jobs: list[CellJob], workers: int, device: str, log=print) -> list[Outcome]:
    """Every job in a pool of `workers` processes; cells another process holds come last, and
    are then waited for (or taken over when their holder's lease expires)."""
    workers = max(1, min(workers, len(jobs)))  # never more processes than cells
    context = multiprocessing.get_context("spawn")
    gpus = _visible_gpus(device, workers)
    queue = None
    if gpus is not None:
        queue = context.Queue()
        for gpu in gpus:
            queue.put(gpu)
    threads = jobs[0].threads if jobs else None
    log(f"{len(jobs)} cells, {workers} at once ({threads} threads each)")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(queue,)
    )
    try:
        outcomes = others_first(jobs, lambda batch: _run_in(pool, batch))
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()  # each worker releases its lease as it unwinds
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes


def _run_in(pool, jobs: list[CellJob]) -> list[tuple[CellJob, Outcome]]:
    """Each job with its outcome, as the workers finish them; a worker's unexpected error ends
    the run, as it would serially."""
    futures = {pool.submit(execute, job): job for job in jobs}
    return [(futures[f], f.result()) for f in as_completed(futures)]
