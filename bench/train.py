"""The one training loop every task uses: seeded batches, checkpoints, resume, progress, NaN stop.

Resuming is exact on the CPU: the batch order of an epoch is a function of (seed, epoch), and the
checkpoint written at the end of each epoch holds the model, optimizer and every RNG state, so a
killed run continues as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from .errors import CheckpointError, Stopped


class NonFiniteLoss(Exception):
    """A NaN/inf training loss; `epoch` and `step` count from 0, the message from 1."""

    def __init__(self, epoch: int, step: int, last_finite: float | None):
        self.epoch, self.step, self.last_finite = epoch, step, last_finite
        super().__init__(
            f"loss became NaN/inf at epoch {epoch + 1}, step {step + 1} "
            f"(last finite loss {last_finite}); lower the learning rate or check the data"
        )


class NonFiniteMetric(Exception):
    """A NaN/inf test score (a model whose nll is NaN at evaluation): the cell fails rather than
    record a measurement that is not a number."""


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def epoch_batches(
    data: Dataset, batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[tuple[torch.Tensor, ...]]:
    """The batches of one epoch, in an order fixed by (seed, epoch); under DDP each rank gets its
    slice of every global batch, so the global batch is the same as in a single process."""
    rank, size = world()
    n = len(data)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if isinstance(data, TensorDataset):
        for idx in order.split(batch_size):
            idx = idx[rank::size]
            yield tuple(t[idx] for t in data.tensors)
        return
    loader = DataLoader(data, batch_size=batch_size, sampler=order.tolist(), num_workers=0)
    for batch in loader:
        yield tuple(t[rank::size] for t in batch)


def save_atomic(obj, path: Path) -> None:
    """torch.save via a temp file and a rename: a killed run leaves the old file or none, and a
    failed save (disk full, a file-size limit, a folder that is a file) leaves no temp file and
    is a one-line CheckpointError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError):  # torch.save's write errors are RuntimeErrors
            raise CheckpointError(
                f"{path}: cannot save ({type(e).__name__}: {why(e)}); free some space or pass"
                " --checkpoints DIR"
            ) from None
        raise


@dataclass
class Checkpoint:
    """A cell's resume point; it also carries the wall and CPU time of every process that trained
    the cell (keyed by a per-process token, so loading twice in one process counts it once). CPU
    time is what the work cost whatever else the machine ran; wall time adds the waiting."""

    path: Path | None
    every: int = 1  # epochs between checkpoints
    started: float = field(default_factory=time.perf_counter, repr=False)
    token: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)
    earlier: dict[str, float] = field(default_factory=dict, repr=False)  # token -> wall seconds
    cpu_started: float = field(default_factory=time.process_time, repr=False)
    cpu_earlier: dict[str, float] = field(default_factory=dict, repr=False)  # token -> CPU seconds
    resumed_at: int = 0  # epochs done when this process loaded it
    # Told the training step, epoch and phase as they advance (the runner's lease heartbeat).
    on_progress: Callable[..., None] | None = field(default=None, repr=False)
    stop_after: int | None = None  # epochs, then raise Stopped (a rehearsal's kill and resume)
    # Told each epoch's history entry and the steps of an epoch, on rank 0 (bench.curves).
    on_epoch: Callable[[dict, int], None] | None = field(default=None, repr=False)

    def wall_s(self) -> float:
        """Seconds spent on the cell by earlier processes (up to their last save) and this one."""
        return sum(self.earlier.values()) + time.perf_counter() - self.started

    def cpu_s(self) -> float:
        """CPU seconds (all threads of the process) spent on the cell, counted like `wall_s`."""
        return sum(self.cpu_earlier.values()) + time.process_time() - self.cpu_started

    @property
    def segments(self) -> int:
        return len(self.earlier) + 1

    def progress(self, **fields) -> None:
        if self.on_progress is not None:
            self.on_progress(**fields)

    def save(self, epoch: int, model, optimizer, history: list[dict]) -> None:
        if self.path is None or world()[0] != 0:
            return
        _, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # NumPy's state is (name, key, position, has_gauss, cached_gaussian): all of it.
            "rng_numpy": torch.from_numpy(np_key.astype(np.int64)),
            "rng_numpy_rest": [int(np_pos), int(np_has_gauss), float(np_gauss)],
            "rng_python": torch.tensor(random.getstate()[1], dtype=torch.int64),
            "rng_python_gauss": random.getstate()[2],
            "segments": {**self.earlier, self.token: time.perf_counter() - self.started},
            "cpu_segments": {
                **self.cpu_earlier,
                self.token: time.process_time() - self.cpu_started,
            },
        }
        save_atomic(state, self.path)

    def load(self, model, optimizer) -> tuple[int, list[dict]]:
        """Restore the last checkpoint, if any; returns (epochs done, history)."""
        if self.path is None or not self.path.exists():
            return 0, []
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng_torch"])
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            np_key = state["rng_numpy"].numpy().astype(np.uint32)
            np.random.set_state(("MT19937", np_key, *state["rng_numpy_rest"]))
            random.setstate((3, tuple(state["rng_python"].tolist()), state["rng_python_gauss"]))
        except Exception as e:
            raise CheckpointError(
                f"{self.path}: cannot resume ({type(e).__name__}: {why(e)}); "
                "delete it or rerun with --fresh"
            ) from None
        self.earlier = {k: v for k, v in state.get("segments", {}).items() if k != self.token}
        self.cpu_earlier = {
            k: v for k, v in state.get("cpu_segments", {}).items() if k != self.token
        }
        self.resumed_at = state["epoch"]
        return state["epoch"], state["history"]

    def remove(self) -> None:
        if self.path is not None and world()[0] == 0:
            self.path.unlink(missing_ok=True)
            self.eval_path.unlink(missing_ok=True)

    @property
    def eval_path(self) -> Path:
        """Where the test pass after training keeps its resume point (EvalResume)."""
        assert self.path is not None
        return self.path.with_suffix(".eval.pt")


def why(error: BaseException) -> str:
    """The gist of a load or save error in one line. For a weights-only refusal: the global the
    file asked for (refused: nothing from the file ran), never torch's advice to load it with
    weights_only=False, which would run that code."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "weights_only" in text or "Weights only load failed" in text:
        refused = re.search(r"GLOBAL ([\w.]+)", text)
        if refused:
            return f"holds Python objects: refused the global {refused.group(1)} it asks for"
        detail = re.search(r"WeightsUnpickler error: \s*(\S[^\n]*)", text)
        return "holds Python objects, not only tensors" + (
            f": {detail.group(1).strip()}" if detail else ""
        )
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (text.splitlines() or [""])[0]


def _progress_line(job: Fit, epoch: int, step: int, step0: int, t0: float, loss: float) -> None:
    """Where a cell is, once a minute, when no progress bar is drawn (workers, logs, non-TTY)."""
    total = job.epochs * job.steps_per_epoch
    eta = (time.perf_counter() - t0) / max(step - step0, 1) * (total - step)
    print(
        f"  {job.desc}: step {step}/{total} (epoch {epoch + 1}/{job.epochs}) loss {loss:.4g},"
        f" ETA {eta / 60:.1f} min",
        flush=True,
    )


def _bar(desc: str, total: int, unit: str, initial: int = 0) -> tqdm:
    """A progress bar on rank 0 in a terminal; disabled elsewhere, where callers print a line
    a minute instead (the worker processes of `bench run --jobs N`, whose bars would interleave,
    set DGM_BENCH_BARS=0)."""
    draw = world()[0] == 0 and os.environ.get("DGM_BENCH_BARS") != "0"
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        disable=None if draw else True,
        file=sys.stderr,
    )


EVAL_SAVE_S = 60.0  # the test pass's resume point is saved at most this often


@dataclass
class EvalResume:
    """The resume point of a test pass, beside the training checkpoint: each batch's values so
    far and the generators' state after them, saved at batch boundaries at most every
    EVAL_SAVE_S seconds. A task preempted or timed out while scoring (at the full tier k = 5000
    on 10,000 images, hours) goes on where it was, bit for bit, instead of scoring again."""

    path: Path | None
    last: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def beside(cls, checkpoint: Checkpoint | None) -> EvalResume:
        return cls(None if checkpoint is None or checkpoint.path is None else checkpoint.eval_path)

    def load(self, total: int, batch: int) -> tuple[list[torch.Tensor], int]:
        """The values of the batches scored so far and how many images they cover (the
        generators set to where they were); ([], 0) without a resume point of this pass."""
        if self.path is None or not self.path.exists():
            return [], 0
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"{self.path}: cannot resume the test pass ({type(e).__name__}: {why(e)});"
                " delete it to score from the start"
            ) from None
        if (state["total"], state["batch"]) != (total, batch):
            return [], 0  # another pass's (other images or batches): score from the start
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return list(state["parts"]), state["done"]

    def save(self, parts: list[torch.Tensor], done: int, total: int, batch: int) -> None:
        if self.path is None or world()[0] != 0 or done >= total:
            return
        if time.monotonic() - self.last < EVAL_SAVE_S:
            return
        state = {
            "parts": [p.cpu() for p in parts],
            "done": done,
            "total": total,
            "batch": batch,
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        save_atomic(state, self.path)
        self.last = time.monotonic()


class EvalProgress:
    """How far a long test pass is (PixelVAE's k = 1000 NLL takes an hour on a CPU): the lease
    heartbeat carries it to `bench status`, a bar or a line a minute to the log."""

    def __init__(self, checkpoint: Checkpoint, desc: str, total: int):
        self.checkpoint, self.desc, self.total = checkpoint, desc, total
        self.t0 = self.last_log = time.monotonic()
        self.since = time.time()
        self.bar = _bar(f"{desc} test", total, "image")
        self(0)

    def __call__(self, done: int) -> None:
        self.checkpoint.progress(
            phase="evaluating", images=done, of_images=self.total, eval_since=self.since
        )
        self.bar.update(done - self.bar.n)
        if self.bar.disable and world()[0] == 0 and time.monotonic() - self.last_log > 60 and done:
            eta = (time.monotonic() - self.t0) / done * (self.total - done)
            print(
                f"  {self.desc}: test image {done}/{self.total}, ETA {eta / 60:.1f} min", flush=True
            )
            self.last_log = time.monotonic()
        if done >= self.total:
            self.bar.close()


@dataclass
class Fit:
    """What `fit` needs; the task supplies the loss and the data."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]  # (model, batch)
    train: Dataset
    batch_size: int
    epochs: int
    lr_at: Callable[[int], float]  # epoch -> learning rate
    seed: int
    desc: str = ""
    max_steps_per_epoch: int | None = None
    # After each epoch's training (0-based epoch): fields for that epoch's history entry, e.g. a
    # statistic of the model. It must leave every generator as it found it, or a resumed run
    # would draw other training noise than an uninterrupted one.
    on_epoch: Callable[[int], dict] | None = None

    @property
    def steps_per_epoch(self) -> int:
        steps = math.ceil(len(self.train) / self.batch_size)
        return min(steps, self.max_steps_per_epoch) if self.max_steps_per_epoch else steps

    @property
    def images_per_epoch(self) -> int:
        return min(len(self.train), self.steps_per_epoch * self.batch_size)


def fit(job: Fit, checkpoint: Checkpoint) -> list[dict]:
    """Train for job.epochs epochs, resuming from `checkpoint`; returns the per-epoch history."""
    start, history = checkpoint.load(job.model, job.optimizer)
    if not (
        type(start) is int
        and 0 <= start <= job.epochs
        and isinstance(history, list)
        and len(history) == start
    ):
        raise CheckpointError(
            f"{checkpoint.path}: cannot resume (it says {start!r} epochs done, with"
            f" {len(history) if isinstance(history, list) else 'no'} in its history, of this"
            f" cell's {job.epochs}); delete it or rerun with --fresh"
        )
    rank, size = world()
    # Under torchrun each process computes its slice of the batch; DDP averages the gradients.
    net = DistributedDataParallel(job.model) if size > 1 else job.model
    steps = job.steps_per_epoch
    bar = _bar(job.desc, job.epochs * steps, "step", initial=start * steps)
    last_finite, last_log = None, time.monotonic()
    total_steps = job.epochs * steps
    t_fit = time.perf_counter()
    checkpoint.progress(
        phase="training",
        step=start * steps,
        step0=start * steps,
        steps=total_steps,
        epoch=start,
        epochs=job.epochs,
    )
    job.model.train()
    for epoch in range(start, job.epochs):
        lr = job.lr_at(epoch)
        for group in job.optimizer.param_groups:  # a group may run at a multiple of the rate
            group["lr"] = lr * group.get("lr_scale", 1.0)
        t0, total, count = time.perf_counter(), 0.0, 0
        batches = epoch_batches(job.train, job.batch_size, job.seed, epoch)
        for step, batch in enumerate(batches):
            if step >= steps:
                break
            loss = job.loss(net, batch)
            value = loss.item()
            if not math.isfinite(value):
                bar.close()
                raise NonFiniteLoss(epoch, step, last_finite)
            last_finite = value
            job.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            job.optimizer.step()
            total, count = total + value, count + 1
            bar.update(1)
            checkpoint.progress(step=epoch * steps + step + 1, epoch=epoch)
            if bar.disable and rank == 0 and time.monotonic() - last_log > 60:
                _progress_line(job, epoch, epoch * steps + step + 1, start * steps, t_fit, value)
                last_log = time.monotonic()
            bar.set_postfix(epoch=f"{epoch + 1}/{job.epochs}", loss=f"{value:.4g}", refresh=False)
        seconds = time.perf_counter() - t0
        if size > 1:  # log the loss of the global batch, not of this process's slice
            sums = torch.tensor([total, count], dtype=torch.float64)
            dist.all_reduce(sums)
            total, count = sums.tolist()
        mean = total / max(count, 1)
        history.append({"epoch": epoch + 1, "loss": mean, "lr": lr, "seconds": seconds})
        if job.on_epoch is not None:  # after `seconds`: its cost is not the training's
            history[-1].update(job.on_epoch(epoch))
        if checkpoint.on_epoch is not None and rank == 0:
            checkpoint.on_epoch(history[-1], steps)
        stop = checkpoint.stop_after == epoch + 1 and epoch + 1 < job.epochs
        if (epoch + 1) % checkpoint.every == 0 or epoch + 1 == job.epochs or stop:
            checkpoint.save(epoch + 1, job.model, job.optimizer, history)
        if stop:
            bar.close()
            raise Stopped(epoch + 1, checkpoint.path)
    bar.close()
    checkpoint.progress(phase="evaluating", epoch=job.epochs, step=total_steps)
    return history
