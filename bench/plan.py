"""`bench plan`: what each cell of a tier costs before it runs, measured on the device at hand.

A cell's cost is its schedule (steps, test images, samples) times the seconds of one unit of
each phase, calibrated here at the tier's exact configuration on synthetic images of the data
set's shape: a warm-up, then timed calls until a minimum total time, reported as median and
spread. A unit too big for this machine (i-RevNet at batch 256 on 2 cores) is timed at two
smaller sizes and extrapolated on the line through them, and the plan says so. With
`--assume-tflops` a device that is not here is priced from FLOPs at an assumed rate, labelled
as assumed. No extrapolated or assumed number is shown as measured.

The plan writes a record (results/plans/<table>/<tier>.<device>.json: device, versions, commit,
every calibration with its spread) and tables/plan-<table>-<tier>[-<device>].md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import torch
import torch.nn.functional as F

import models

from . import data as datasets
from .activations import measure_step
from .contracts import has
from .data.catalog import DATASETS
from .data.prep import PREPS
from .executors import SIGNAL_LEAD_S
from .probe import MIB, logits_of, peak_mib
from .records import atomic_write_text, device_name, provenance
from .spec import SEED, Cell, TableSpec, register_plugins, settings_for
from .tasks import get_task
from .tasks.likelihood import SampleBudget, bounded
from .tasks.settings import image_shape, model_arguments, stage_epochs

# Full training and test set sizes: what a tier without n_train / n_test reads. CIFAR-10's
# lossless copy here holds one training batch of five; the full tier means the whole set.
FULL_SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60_000, 10_000),
    "binarized_mnist": (50_000, 10_000),
    "omniglot": (24_345, 8_070),  # chardata.mat's split, the IWAE paper's
    "cifar10": (50_000, 10_000),
    "cifar10_lossless": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "imagenet": (1_281_167, 50_000),
}
PROCESS_START_S = "process_start_s"  # a fresh `python -m bench.probe`, measured once per plan


@dataclass(frozen=True)
class Timed:
    """Seconds of one call of a unit of work at `size` (a batch, a number of images): `how` is
    "measured", "extrapolated from sizes a, b" or "assumed ... TFLOP/s"."""

    seconds: float
    low: float
    high: float
    calls: int
    size: int
    how: str = "measured"

    @property
    def measured(self) -> bool:
        return self.how == "measured"


@dataclass
class CellPlan:
    cell: str
    schedule: dict[str, Any]
    params: int
    phases: dict[str, float]  # predicted seconds per phase: setup, train, eval, sample, probe
    units: dict[str, dict]  # what each phase's unit is and its Timed, as a dict
    flops: dict[str, float | None]  # of one training step, one evaluation unit
    memory: dict[str, float | None]  # MiB: saved activations, step peak, checkpoint
    matmul_fraction: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def predicted_s(self) -> float:
        return sum(self.phases.values())

    @property
    def estimated(self) -> bool:
        """Whether any unit behind the prediction was extrapolated or assumed."""
        return any(u.get("how", "measured") != "measured" for u in self.units.values())


@dataclass(frozen=True)
class PlanOptions:
    tier: str = "full"
    cells: str | None = None
    device: str = "cpu"
    threads: int | None = None
    assume_tflops: float | None = None
    data_dir: Path | None = None
    unit_budget_s: float = 20.0  # most seconds one calibrated call may take before extrapolating
    min_total_s: float = 1.0  # timed calls of a unit last at least this long together
    sizes: dict[str, tuple[int, int]] | None = None  # cell -> (n_train, n_test) that ran
    command: str = ""  # the command line the plan record names


# --- timing --------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any],
    device,
    size: int,
    min_total_s: float,
    warmup: int = 1,
    min_calls: int = 3,
    max_calls: int = 50,
) -> Timed:
    """Median seconds of `fn` after `warmup` calls, over at least `min_calls` calls and
    `min_total_s` seconds (fewer when one call outlasts the total: then 2). A warm-up call of
    seconds leaves one timed call: start-up effects are small beside it, and the plan stays
    within its budget."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 > max(2 * min_total_s, 2.0):
            min_calls, min_total_s = 1, 0.0
    times: list[float] = []
    while len(times) < max_calls:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_calls and sum(times) >= min_total_s:
            break
        if len(times) >= 2 and sum(times) >= 4 * min_total_s:
            break
    return Timed(median(times), min(times), max(times), len(times), size)


def line_through(a: tuple[float, float], b: tuple[float, float], x: float) -> float:
    """The value at `x` of the line through (x1, y1) and (x2, y2); never below y2 (time and
    memory do not fall as the batch grows)."""
    (x1, y1), (x2, y2) = a, b
    slope = (y2 - y1) / (x2 - x1)
    return max(y2 + slope * (x - x2), y2)


def calibrate(
    make: Callable[[int], Callable[[], Any]],
    target: int,
    device,
    opts: PlanOptions,
    smallest: int = 1,
) -> Timed:
    """Time `make(target)()`; where one call would outlast `opts.unit_budget_s` (judged from a
    call at a smaller size), time two smaller sizes and extrapolate on the line through them."""
    if target <= smallest:
        return time_call(make(target), device, target, opts.min_total_s)
    probe_size = max(smallest, min(target, 2))
    probe = time_call(make(probe_size), device, probe_size, 0.0, min_calls=1)
    if probe.seconds * target / probe_size <= opts.unit_budget_s:
        return time_call(make(target), device, target, opts.min_total_s)
    s2 = probe_size
    while s2 * 2 < target and probe.seconds * s2 * 2 / probe_size <= opts.unit_budget_s / 2:
        s2 *= 2
    s1 = max(smallest, s2 // 2)
    if s1 == s2:
        s1 = max(1, s2 // 2) if s2 > 1 else s2
    t1 = time_call(make(s1), device, s1, opts.min_total_s / 2)
    t2 = t1 if s1 == s2 else time_call(make(s2), device, s2, opts.min_total_s / 2)
    if s1 == s2:  # one size only: proportional
        seconds = t2.seconds * target / s2
    else:
        seconds = line_through((s1, t1.seconds), (s2, t2.seconds), target)
    scale = seconds / t2.seconds
    return Timed(
        seconds,
        t2.low * scale,
        t2.high * scale,
        t1.calls + t2.calls,
        target,
        f"extrapolated from sizes {s1}, {s2}",
    )


def flops_of(fn: Callable[[], Any]) -> int:
    """Matmul and convolution FLOPs of one call (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def step_flops(forward: Callable[[], torch.Tensor]) -> int:
    """FLOPs of a training step (forward and backward). A custom backward that recomputes the
    forward with torch.autograd.grad (the reversible models) cannot run under the counter: there,
    3x the forward's FLOPs, the usual forward + backward ratio."""
    try:
        return flops_of(lambda: forward().backward())
    except RuntimeError:
        with torch.no_grad():
            return 3 * flops_of(forward)


def matmul_tflops(device: torch.device, n: int = 1024) -> float:
    """The device's float32 matmul rate now, TFLOP/s of wall time (median of 5)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    timed = time_call(lambda: a @ b, device, n, 0.3, warmup=2, min_calls=5)
    return 2 * n**3 / timed.seconds / 1e12


def process_start_s() -> float:
    """Seconds a fresh Python process takes to import torch and the models (the memory probe of
    every classifier cell pays it)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import bench.probe"], check=True, capture_output=True)
    return time.perf_counter() - t0


def state_mib(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """The tensors a training checkpoint holds: weights, buffers and the optimizer's state."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for state in optimizer.state.values():
        total += sum(
            v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor)
        )
    return total / MIB


# --- per task ------------------------------------------------------------------------------


def _images(n: int, shape, kind: str, device) -> torch.Tensor:
    """Synthetic uint8 images of a data set's shape (binary data: stored as 0/255)."""
    if kind == "binary":
        return torch.randint(0, 2, (n, *shape), dtype=torch.uint8, device=device) * 255
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, device=device)


def _schedule_sizes(cell: dict, s, opts: PlanOptions, cell_id: str) -> tuple[int, int]:
    if opts.sizes and cell_id in opts.sizes:
        return opts.sizes[cell_id]
    n_train, n_test = FULL_SIZES[cell["dataset"]]
    return s.n_train or n_train, s.n_test or n_test


def _schedule(n_train: int, n_test: int, batch: int, epochs: int, cap: int | None, **extra) -> dict:
    """A training cell's schedule: epochs, steps (per epoch capped at `cap`), batch, images."""
    per_epoch = math.ceil(n_train / batch)
    per_epoch = min(per_epoch, cap) if cap else per_epoch
    return {
        "epochs": epochs,
        "steps": per_epoch * epochs,
        "steps_per_epoch": per_epoch,
        "batch": batch,
        "train_images": n_train,
        "test_images": n_test,
        **extra,
    }


def _process_start(cache: dict, device: torch.device) -> float:
    """A fresh process's start, measured once per plan (a CUDA plan does not count it)."""
    if PROCESS_START_S not in cache:
        cache[PROCESS_START_S] = process_start_s() if device.type == "cpu" else 0.0
    return cache[PROCESS_START_S]


def _load_seconds(cell: dict, s, opts: PlanOptions, seed: int) -> float | None:
    """Seconds to load the cell's data as its run does, where the data are here; else None."""
    if getattr(s, "data", "real") != "real" or DATASETS[cell["dataset"]].streamed:
        return None
    t0 = time.perf_counter()
    try:
        datasets.load_for(cell["dataset"], s, opts.data_dir, seed)
    except datasets.DataError:
        return None
    return time.perf_counter() - t0


def _memo(cache: dict, key: tuple, fn: Callable[[], Timed]) -> Timed:
    """A unit timed once per plan: cells that differ only in their data set (of one shape) or
    seed run the same steps."""
    if key not in cache:
        cache[key] = fn()
    return cache[key]


def _config(cell: dict, s, shape) -> str:
    """What a likelihood cell's units cost depends on: model, arguments, shape, settings but
    the data sizes."""
    settings = {k: v for k, v in asdict(s).items() if k not in ("n_train", "n_test")}
    args = {k: v for k, v in cell.items() if k not in ("dataset", SEED)}
    return repr((sorted(args.items()), shape, sorted(settings.items())))


def plan_likelihood(
    cell: dict, s, device, opts: PlanOptions, cell_id: str, seed: int, cache: dict
) -> CellPlan:
    prep = PREPS[s.prep]
    shape = image_shape(cell["dataset"], s)
    key = _config(cell, s, shape)
    n_train, n_test = _schedule_sizes(cell, s, opts, cell_id)
    epochs = sum(stage_epochs(s))
    schedule = _schedule(n_train, n_test, s.batch_size, epochs, s.max_steps_per_epoch)
    steps = schedule["steps"]
    torch.manual_seed(seed)
    from .tasks.likelihood import build, optimizer_for

    model = build(cell, s, shape).to(device)
    t0 = time.perf_counter()
    if has(model, "init_from_data"):  # it sees the whole training set
        model.init_from_data(_images(n_train, shape, prep.kind, device))
    if has(model, "init_from_batch"):
        init = _images(min(s.init_batch, n_train), shape, prep.kind, device)
        model.init_from_batch(prep.test(init, torch.Generator(device=device).manual_seed(0)))
    init_s = time.perf_counter() - t0
    optimizer = optimizer_for(model, s)
    notes = []

    def train_step(b: int):
        x = _images(b, shape, prep.kind, device)

        def step():
            loss = model(prep.train(x)).mean()
            loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    model.train()
    step = _memo(cache, (key, "step"), lambda: calibrate(train_step, s.batch_size, device, opts))
    b_flops = min(step.size, s.batch_size) if step.measured else 2
    x = _images(b_flops, shape, prep.kind, device)
    train_flops = step_flops(lambda: model(prep.train(x)).mean()) * s.batch_size / b_flops
    mem_b = s.batch_size if step.measured else 2
    xm = _images(mem_b, shape, prep.kind, device)
    memory = measure_step(lambda: model(prep.train(xm)).mean(), model.parameters(), device)
    if not step.measured:
        notes.append(f"memory measured at batch {mem_b}, scaled to {s.batch_size}")
    scale = s.batch_size / mem_b
    model.eval()
    bound = {"k": s.nll_k, "chunk": s.nll_chunk} if has(model, "bound") else {}
    x_test = prep.test(
        _images(s.nll_batch, shape, prep.kind, device),
        torch.Generator(device=device).manual_seed(seed),
    )

    def nll_batch(b: int):
        return lambda: torch.no_grad()(model.nll)(x_test[:b], **bound)

    batch = min(s.nll_batch, n_test)
    evaluation = _memo(
        cache, (key, "nll", batch), lambda: calibrate(nll_batch, batch, device, opts)
    )
    eval_flops = flops_of(nll_batch(1)) * batch if not bound or s.nll_k <= 1000 else None
    units = {
        "train step": {**asdict(step), "unit": f"batch of {s.batch_size}"},
        "test NLL": {
            **asdict(evaluation),
            "unit": f"{batch} test images" + (f", k = {s.nll_k}" if bound else ""),
        },
    }
    phases = {
        "train": step.seconds * steps,
        "eval": evaluation.seconds * math.ceil(n_test / batch),
    }
    if has(model, "active_units"):
        m = min(8, n_test)
        au = time_call(
            lambda: torch.no_grad()(model.active_units)(x_test[:m], n_samples=s.au_samples),
            device,
            m,
            opts.min_total_s / 2,
        )
        units["active units"] = {**asdict(au), "unit": f"{m} test images"}
        phases["active units"] = au.seconds * n_test / m
    if has(model, "elbo_terms"):
        terms = time_call(
            lambda: torch.no_grad()(model.elbo_terms)(x_test), device, batch, opts.min_total_s / 2
        )
        units["ELBO terms"] = {**asdict(terms), "unit": f"{batch} test images"}
        phases["ELBO terms"] = terms.seconds * math.ceil(n_test / batch)
    if s.samples and has(model, "sample"):
        x1 = x_test[:1] if has(model, "naive_sampler") or prep.kind == "discrete256" else None
        phases["sample"] = _sampling(model, s, device, opts, units, naive=False, x1=x1)
        if s.time_naive_sampler and has(model, "naive_sampler"):
            phases["sample (naive)"] = _sampling(model, s, device, opts, units, True, x1=x1)
    load = _load_seconds(cell, s, opts, seed)
    phases["setup"] = (load or 0.0) + init_s
    if load is None:
        notes.append("data loading not measured (data absent or streamed)")
    schedule.update(k=s.nll_k if bound else None, samples=s.samples if has(model, "sample") else 0)
    return CellPlan(
        cell=cell_id,
        schedule=schedule,
        params=models.count_parameters(model),
        phases=phases,
        units=units,
        flops={"train_step": train_flops, "eval_unit": eval_flops},
        memory=_memory(memory, scale, state_mib(model, optimizer)),
        notes=notes,
    )


PROBE_FORWARDS = 20  # a sampler done within this many forwards' time is not one per sub-pixel


def _quick(draw: Callable[[], Any], seconds: float) -> bool:
    """Whether `draw` ends within `seconds` (at least one): a sampler that draws an image in a
    few forwards (a factorised model's) is timed as it is, not priced at one forward per
    sub-pixel like an autoregressive one, whose single image this stops."""
    try:
        with bounded(max(seconds, 1.0)):
            draw()
    except SampleBudget:
        return False
    return True


def _sampling(model, s, device, opts: PlanOptions, units: dict, naive: bool, x1=None) -> float:
    """Seconds to draw the tier's samples: all of them where one image says that fits the
    budget, else one image and two, extrapolated to `s.samples`."""
    kw = {"naive": True} if naive else {}

    def draw(n: int):
        return lambda: torch.no_grad()(model.sample)(
            n, generator=torch.Generator(device=device).manual_seed(0), **kw
        )

    if x1 is not None:  # maybe autoregressive: worst case one forward per sub-pixel
        forward = time_call(lambda: torch.no_grad()(model.nll)(x1), device, 1, 0.2)
        bound = forward.seconds * x1[0].numel() * s.samples
        if bound > opts.unit_budget_s and not _quick(draw(1), PROBE_FORWARDS * forward.seconds):
            timed = Timed(
                bound,
                bound,
                bound,
                forward.calls,
                s.samples,
                "upper bound: one forward per sub-pixel",
            )
            units["sample (naive)" if naive else "sample"] = {
                **asdict(timed),
                "unit": f"{s.samples} images",
            }
            return timed.seconds
    one = time_call(draw(1), device, 1, 0.0, warmup=0, min_calls=1)
    if s.samples == 1 or one.seconds * s.samples <= opts.unit_budget_s:
        timed = time_call(draw(s.samples), device, s.samples, 0.0, warmup=0, min_calls=1)
    elif one.seconds * 2 > opts.unit_budget_s:
        timed = replace(
            one, seconds=one.seconds * s.samples, size=s.samples, how="extrapolated from size 1"
        )
    else:
        two = time_call(draw(2), device, 2, 0.0, warmup=0, min_calls=1)
        seconds = line_through((1, one.seconds), (2, two.seconds), s.samples)
        timed = Timed(seconds, seconds, seconds, 2, s.samples, "extrapolated from sizes 1, 2")
    units["sample (naive)" if naive else "sample"] = {
        **asdict(timed),
        "unit": f"{s.samples} images",
    }
    return timed.seconds


def _memory(report: dict, scale: float, checkpoint_mib: float) -> dict:
    peak = peak_mib(report)
    return {
        "saved_mib": report["saved_bytes"] * scale / MIB,
        "peak_mib": None if peak is None else peak * scale,
        "peak_kind": "cuda max_memory_allocated" if report["cuda_peak_bytes"] else "RSS growth",
        "nvml_mib": None
        if report["nvml_process_bytes"] is None
        else report["nvml_process_bytes"] / MIB,
        "checkpoint_mib": checkpoint_mib,
    }


def _classifier_step(name, kwargs, classes, shape, device, dataset, augment_on: bool):
    """A fresh SGD training step of a classifier as the classify task takes it (augment,
    normalise, cross-entropy), and its model and optimizer."""
    from .tasks.classify import augment, normalise

    model = models.build(name, num_classes=classes, **kwargs).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def make(b: int):
        x = _images(b, shape, "discrete256", "cpu")
        y = torch.randint(0, classes, (b,))

        def step():
            xb = augment(x) if augment_on else x
            loss = F.cross_entropy(
                logits_of(model(normalise(xb.to(device), dataset))), y.to(device)
            )
            loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    return model, optimizer, make


def _two_point_memory(model, make_loss, sizes: tuple[int, int], target: int, device) -> dict:
    """measure_step at two batch sizes, each extrapolated on the line to `target`."""
    reports = [measure_step(make_loss(b), model.parameters(), device) for b in sizes]
    out = dict(reports[-1])
    for key in ("saved_bytes", "rss_step_peak_bytes", "cuda_peak_bytes"):
        a, b = (r[key] for r in reports)
        if a is not None and b is not None:
            out[key] = line_through((sizes[0], a), (sizes[1], b), target)
    return out


def plan_classify(
    cell: dict, s, device, opts: PlanOptions, cell_id: str, seed: int, cache: dict
) -> CellPlan:
    name, dataset = cell["model"], cell["dataset"]
    info = DATASETS[dataset]
    shape = info.shape if not s.image_size else (info.shape[0], s.image_size, s.image_size)
    n_train, n_test = _schedule_sizes(cell, s, opts, cell_id)
    epochs = s.epochs if s.train else 0
    schedule = _schedule(n_train, n_test, s.batch_size, epochs, s.max_steps_per_epoch)
    steps = schedule["steps"]
    kwargs = model_arguments(cell)
    torch.manual_seed(seed)
    model, optimizer, make = _classifier_step(
        name, kwargs, info.classes, shape, device, dataset, s.augment and not info.streamed
    )
    notes = []
    step = calibrate(make, s.batch_size, device, opts)

    def loss_at(b: int):
        x = torch.randn(b, *shape, device=device)
        y = torch.randint(0, info.classes, (b,), device=device)
        return lambda: F.cross_entropy(logits_of(model(x)), y)

    fb = min(step.size, s.batch_size) if step.measured else 2
    train_flops = step_flops(loss_at(fb)) * s.batch_size / fb
    if step.measured:
        memory = measure_step(loss_at(s.batch_size), model.parameters(), device)
    else:
        memory = _two_point_memory(model, loss_at, (1, 2), s.batch_size, device)
        notes.append(f"memory extrapolated in the batch from sizes 1, 2 to {s.batch_size}")
    # the memory probe: a fresh process, one measured step, then timing_steps + 1 timed steps
    probe_step = (
        step.seconds
        if s.memory_batch == s.batch_size
        else calibrate(make, s.memory_batch, device, opts).seconds
    )
    phases = {
        "setup + memory probe": _process_start(cache, device) + probe_step * (s.timing_steps + 2)
    }
    phases["train"] = step.seconds * steps
    model.eval()
    eb = min(s.eval_batch, n_test)

    def forward(b: int):
        x = torch.randn(b, *shape, device=device)
        return lambda: torch.no_grad()(model)(x)

    evaluation = calibrate(forward, eb, device, opts)
    phases["eval"] = evaluation.seconds * math.ceil(n_test / eb) if s.train else 0.0
    units = {
        "train step": {**asdict(step), "unit": f"batch of {s.batch_size}"},
        "test forward": {**asdict(evaluation), "unit": f"{eb} test images"},
    }
    if has(model, "inverse"):
        phases["reconstruction"] = 2 * evaluation.seconds * 8 / eb
    if info.streamed:
        notes.append("JPEG decoding of a streamed data set is not in the step time")
    return CellPlan(
        cell=cell_id,
        schedule=schedule,
        params=models.count_parameters(model),
        phases=phases,
        units=units,
        flops={"train_step": train_flops, "eval_unit": flops_of(forward(1)) * eb},
        memory=_memory(memory, 1.0, state_mib(model, optimizer)),
        notes=notes,
    )


def plan_memory(
    cell: dict, s, device, opts: PlanOptions, cell_id: str, seed: int, cache: dict
) -> CellPlan:
    """A memory cell trains nothing: a probe process, timed steps (with the timing reference's
    between them), and float32/float64 gradient checks at `grad_check_batch`."""
    shape = (3, s.image_size, s.image_size)
    kwargs = model_arguments(cell)
    torch.manual_seed(seed)
    model, optimizer, make = _classifier_step(
        cell["model"], kwargs, s.num_classes, shape, device, "cifar10", False
    )
    step = calibrate(make, s.batch_size, device, opts)
    x = torch.randn(s.batch_size, *shape, device=device)
    y = torch.randint(0, s.num_classes, (s.batch_size,), device=device)
    memory = measure_step(
        lambda: F.cross_entropy(logits_of(model(x)), y), model.parameters(), device
    )
    phases = {
        "memory probe": _process_start(cache, device) + 2 * step.seconds,
        "timed steps": step.seconds * (s.timing_steps + 1),
    }
    units = {"train step": {**asdict(step), "unit": f"batch of {s.batch_size}"}}
    if s.timing_reference is not None:
        ref = s.timing_reference
        key = ("reference", repr(sorted(ref.items())), s.batch_size)
        if key not in cache:
            _, _, make_ref = _classifier_step(
                ref["model"], model_arguments(ref), s.num_classes, shape, device, "cifar10", False
            )
            cache[key] = calibrate(make_ref, s.batch_size, device, opts)
        units["reference step"] = {**asdict(cache[key]), "unit": f"batch of {s.batch_size}"}
        phases["timed steps"] += cache[key].seconds * (s.timing_steps + 2)
    if has(model, "memory_saving"):
        g = s.grad_check_batch
        model64, _, make64 = _classifier_step(
            cell["model"], kwargs, s.num_classes, shape, device, "cifar10", False
        )
        model64.double()
        xd = torch.randn(g, *shape, device=device, dtype=torch.float64)
        yd = torch.randint(0, s.num_classes, (g,), device=device)
        f64 = time_call(
            lambda: F.cross_entropy(logits_of(model64(xd)), yd).backward(),
            device,
            g,
            opts.min_total_s / 2,
        )
        units["float64 step"] = {**asdict(f64), "unit": f"batch of {g}"}
        phases["gradient checks"] = 2 * step.seconds * g / s.batch_size + f64.seconds
    return CellPlan(
        cell=cell_id,
        schedule={"epochs": 0, "steps": s.timing_steps + 1, "batch": s.batch_size},
        params=models.count_parameters(model),
        phases=phases,
        units=units,
        flops={
            "train_step": step_flops(lambda: F.cross_entropy(logits_of(model(x)), y)),
            "eval_unit": None,
        },
        memory=_memory(memory, 1.0, state_mib(model, optimizer)),
    )


PLANNERS: dict[str, Callable[..., CellPlan]] = {
    "likelihood": plan_likelihood,
    "classify": plan_classify,
    "memory": plan_memory,
}


# --- the table -----------------------------------------------------------------------------


def _assumed(plan: CellPlan, tflops: float) -> CellPlan:
    """The plan's compute phases priced from FLOPs at an assumed rate (a device not here)."""
    rate = tflops * 1e12
    units = dict(plan.units)
    phases = dict(plan.phases)
    if plan.flops["train_step"]:
        seconds = plan.flops["train_step"] / rate
        phases["train"] = seconds * plan.schedule["steps"]
        units["train step"] = {
            **units["train step"],
            "seconds": seconds,
            "low": seconds,
            "high": seconds,
            "how": f"assumed {tflops:g} TFLOP/s",
        }
    if plan.flops.get("eval_unit") and "eval" in phases:
        name = next(n for n in units if n.startswith("test"))
        seconds = plan.flops["eval_unit"] / rate
        phases["eval"] = seconds * phases["eval"] / max(units[name]["seconds"], 1e-12)
        units[name] = {
            **units[name],
            "seconds": seconds,
            "low": seconds,
            "high": seconds,
            "how": f"assumed {tflops:g} TFLOP/s",
        }
    notes = [
        *plan.notes,
        f"compute priced at an assumed {tflops:g} TFLOP/s (not measured);"
        " other phases as measured here",
    ]
    return replace(plan, phases=phases, units=units, notes=notes, matmul_fraction=None)


def _cell_plan(d: dict) -> CellPlan:
    """A CellPlan back from its dict in a plan record."""
    names = {f.name for f in fields(CellPlan)}
    return CellPlan(**{k: v for k, v in d.items() if k in names})


def reprice(record: dict, tflops: float, command: str) -> dict:
    """A committed plan with its compute phases priced from FLOPs at an assumed rate, nothing
    calibrated again: a device that is not here, from what was measured here. The record keeps
    the measuring run's provenance and names the repricing beside it."""
    plans = [_cell_plan(c) for c in record["cells"]]
    plans = [p if p.error else _assumed(p, tflops) for p in plans]
    return {
        **record,
        "assume_tflops": tflops,
        "repriced": {
            "command": command,
            "from": f"{record['tier']}.{device_tag(record)}.json",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **provenance(),
        },
        "cells": [_as_dict(p) for p in plans],
        "totals": totals(plans, "assumed", 1),
    }


def plan_table(spec: TableSpec, opts: PlanOptions, log=print) -> dict:
    """Calibrate every selected cell of `opts.tier`; returns the plan record (a dict)."""
    from .runner import resolve_device

    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    register_plugins(spec)
    task = get_task(spec.task)
    settings = settings_for(task.Settings, spec, opts.tier)
    cells: list[Cell] = spec.select(opts.tier, opts.cells)
    rate = matmul_tflops(device)
    load = [os.getloadavg()[0]]
    cache: dict = {}
    plans: list[CellPlan] = []
    t_plan = time.perf_counter()
    for i, cell in enumerate(cells, 1):
        seed = cell.as_dict().get(SEED, 0)  # a replicate's seed; the model never sees it
        t0 = time.perf_counter()
        try:
            plan = PLANNERS[spec.task](
                cell.model_params, settings, device, opts, cell.id, seed, cache
            )
        except Exception as e:  # out of memory, a model's own error: this cell says so
            first = (str(e).strip().splitlines() or [""])[0][:200]
            plan = CellPlan(cell.id, {}, 0, {}, {}, {}, {}, error=f"{type(e).__name__}: {first}")
        if plan.flops.get("train_step") and plan.units.get("train step"):
            step_s = plan.units["train step"]["seconds"]
            plan.matmul_fraction = plan.flops["train_step"] / step_s / (rate * 1e12)
        if opts.assume_tflops and not plan.error:
            plan = _assumed(plan, opts.assume_tflops)
        plan.units["calibration"] = {"seconds": time.perf_counter() - t0, "how": "measured"}
        plans.append(plan)
        what = plan.error or f"{_duration(plan.predicted_s)} predicted"
        log(f"[{i}/{len(cells)}] {cell.id}: {what} (calibrated in {time.perf_counter() - t0:.0f}s)")
    devname = device_name(device)
    return {
        "table": spec.id,
        "tier": opts.tier,
        "device": devname,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "assume_tflops": opts.assume_tflops,
        "matmul_tflops": rate,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan_s": time.perf_counter() - t_plan,
        "load_1min": [*load, os.getloadavg()[0]],  # at the start and the end
        "command": opts.command,
        **provenance(),
        "cells": [_as_dict(p) for p in plans],
        "totals": totals(
            plans, "assumed" if opts.assume_tflops else device.type, torch.get_num_threads()
        ),
    }


def _as_dict(plan: CellPlan) -> dict:
    out = asdict(plan)
    out["predicted_s"] = plan.predicted_s
    out["estimated"] = plan.estimated
    return out


def totals(plans: list[CellPlan], device_type: str, threads: int) -> dict:
    """Cells, device-hours (CPU: core-hours at the plan's threads; "assumed": hours of the
    device priced from FLOPs) and the longest cell."""
    ok = [p for p in plans if not p.error]
    seconds = sum(p.predicted_s for p in ok)
    longest = max(ok, key=lambda p: p.predicted_s, default=None)
    per = threads if device_type == "cpu" else 1
    return {
        "cells": len(plans),
        "failed": len(plans) - len(ok),
        "hours": seconds / 3600,
        "device_hours": seconds * per / 3600,
        "unit": {"cpu": "core-hours", "assumed": "device-hours at the assumed rate"}.get(
            device_type, "GPU-hours"
        ),
        "longest": None
        if longest is None
        else {"cell": longest.cell, "hours": longest.predicted_s / 3600},
    }


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def device_tag(record: dict) -> str:
    """cpu, cuda or assumed-<X>tflops: a plan file per kind of device."""
    if record["assume_tflops"]:
        return f"assumed-{record['assume_tflops']:g}tflops"
    return "cuda" if record["device"].startswith("cuda") else "cpu"


def plan_paths(results: Path, tables: Path, record: dict) -> tuple[Path, Path]:
    tag = device_tag(record)
    suffix = "" if tag == "cpu" else f"-{tag}"
    return (
        results / "plans" / record["table"] / f"{record['tier']}.{tag}.json",
        tables / f"plan-{record['table']}-{record['tier']}{suffix}.md",
    )


def render_plan(record: dict) -> str:
    """The plan as a markdown table: one row per cell, totals, and where each number comes from."""
    from tabulate import tabulate

    rows = []
    for c in record["cells"]:
        if c["error"]:
            rows.append([c["cell"], "", "", "", "", "", "", "", "", f"failed: {c['error']}"])
            continue
        sch, step, mem = c["schedule"], c["units"]["train step"], c["memory"]
        flag = "" if step["how"] == "measured" else " *"
        spread = f"{step['seconds']:.3g} ({step['low']:.3g}-{step['high']:.3g}){flag}"
        frac = "" if c["matmul_fraction"] is None else f"{100 * c['matmul_fraction']:.0f}%"
        peak = "" if mem["peak_mib"] is None else f"{mem['peak_mib']:.0f}"
        eval_s = sum(v for k, v in c["phases"].items() if k not in ("train",))
        rows.append(
            [
                c["cell"],
                f"{sch.get('epochs', 0)} / {sch.get('steps', 0):,} x {sch.get('batch')}",
                f"{c['params']:,}",
                f"{(c['flops']['train_step'] or 0) / 1e9:.3g}",
                spread,
                frac,
                f"{mem['saved_mib']:.0f} / {peak}",
                f"{mem['checkpoint_mib']:.0f}",
                _duration(eval_s),
                _duration(c["predicted_s"]) + (" *" if c["estimated"] else ""),
            ]
        )
    headers = [
        "cell",
        "epochs / steps x batch",
        "params",
        "GFLOP/step",
        "s/step (min-max)",
        "of matmul",
        "saved / peak MiB",
        "ckpt MiB",
        "other phases",
        "predicted",
    ]
    t = record["totals"]
    longest = t["longest"]
    lines = [
        f"# Plan: {record['table']}, {record['tier']} tier",
        "",
        f"{t['cells']} cells: {_duration(t['hours'] * 3600)} in all, {t['device_hours']:.1f}"
        f" {t['unit']}; longest cell"
        + (f" {longest['cell']} ({_duration(longest['hours'] * 3600)})" if longest else ": none")
        + (f"; {t['failed']} could not be calibrated" if t["failed"] else "")
        + ".",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
        "`*`: extrapolated in the batch or sample count from smaller measured sizes, or priced"
        " from FLOPs at an assumed rate (see the notes), not measured at this size. 'of matmul':"
        " the step's FLOPs per second over this device's float32 matmul rate measured in the same"
        " run. 'other phases': setup, evaluation, sampling and probes. Memory: autograd's saved"
        " activations and the step's peak ("
        + (
            record["cells"][0]["memory"].get("peak_kind", "")
            if record["cells"] and not record["cells"][0]["error"]
            else ""
        )
        + ").",
        "",
    ]
    notes = sorted({f"{c['cell']}: {n}" for c in record["cells"] for n in c.get("notes", [])})
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    lines.append(
        f"Measured by `{record['command']}` at {record['commit'][:8]}"
        f"{' (uncommitted changes)' if record['dirty'] else ''} on {record['device']}, torch"
        f" {record['versions']['torch']}, {record['created']}; matmul rate"
        f" {record['matmul_tflops'] * 1e3:.0f} GFLOP/s; calibration took"
        f" {record['plan_s']:.0f} s."
    )
    if record.get("repriced"):
        r = record["repriced"]
        lines.append(
            f"\nCompute repriced at an assumed {record['assume_tflops']:g} TFLOP/s (not measured)"
            f" from that plan's FLOPs ({r['from']}) by `{r['command']}` at {r['commit'][:8]},"
            f" {r['created']}; the phases without FLOPs (setup, sampling, probes) stay as"
            " measured there. A step priced from FLOPs is a floor, not a forecast: it takes at"
            " least its FLOPs at the rate, and a small model's step is bound by kernel launches"
            " (microseconds each) instead; `bench plan --device cuda` on the GPU measures it."
        )
    return "\n".join(lines) + "\n"


def write_plan(record: dict, results: Path, tables: Path) -> tuple[Path, Path]:
    json_path, md_path = plan_paths(results, tables, record)
    atomic_write_text(json_path, json.dumps(record, indent=1) + "\n")
    atomic_write_text(md_path, render_plan(record))
    return json_path, md_path


def read_plan(results: Path, table: str, tier: str, tag: str = "cpu") -> dict | None:
    """A committed plan record, or None where there is none (or it cannot be read)."""
    path = results / "plans" / table / f"{tier}.{tag}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- where the time goes ---------------------------------------------------------------------

SHARES = {  # a plan's phases, grouped the way a user waits for them
    "training": ("train",),
    "evaluation": ("eval", "active units", "ELBO terms", "reconstruction"),
    "sampling": ("sample", "sample (naive)"),
    "setup and data": ("setup", "setup + memory probe"),
    "probes": ("memory probe", "timed steps", "gradient checks"),
}


def shares(record: dict) -> dict:
    """A plan's predicted hours and each phase group's share of them, and the training step's
    fraction of the matmul rate weighted by each cell's training time."""
    cells = [c for c in record["cells"] if not c["error"]]
    total = sum(sum(c["phases"].values()) for c in cells)
    out = {"cells": len(cells), "hours": total / 3600}
    for group, phases in SHARES.items():
        seconds = sum(v for c in cells for k, v in c["phases"].items() if k in phases)
        out[group] = seconds / total if total else None
    known = {k for c in cells for k in c["phases"]} - {p for ps in SHARES.values() for p in ps}
    if known:
        raise ValueError(f"phases with no group in plan.SHARES: {', '.join(sorted(known))}")
    timed = [(c["phases"].get("train", 0), c["matmul_fraction"]) for c in cells]
    weight = sum(t for t, f in timed if f is not None)
    out["train_of_matmul"] = (
        sum(t * f for t, f in timed if f is not None) / weight if weight else None
    )
    return out


def render_shares(results: Path, tier: str) -> str:
    """tables/plan-shares-<tier>.md: per table, where the predicted hours of the tier go."""
    from tabulate import tabulate

    rows, made = [], set()
    for path in sorted((results / "plans").glob(f"*/{tier}.cpu.json")):
        record = json.loads(path.read_text())
        share = shares(record)
        made.add(f"{record['commit'][:8]}")
        frac = share["train_of_matmul"]
        rows.append(
            [record["table"], share["cells"], _duration(share["hours"] * 3600)]
            + ["" if share[g] is None else f"{100 * share[g]:.1f}%" for g in SHARES]
            + ["" if frac is None else f"{100 * frac:.0f}%"]
        )
    return "\n".join(
        [
            f"# Where the time goes: the {tier} tier",
            "",
            f"From the committed plans (`results/plans/*/{tier}.cpu.json`, calibrated at"
            f" {', '.join(sorted(made)) or 'no commit'}; `bench plan TABLE --tier {tier}`"
            " remakes one): each table's predicted wall time on this CPU at one thread per cell,"
            " and the share of it each phase takes. 'training of matmul': the training step's"
            " FLOPs per second over the float32 matmul rate measured in the same plan, weighted"
            " by each cell's training time. Re-rendered by `bench plan --shares --tier"
            f" {tier}`.",
            "",
            tabulate(
                rows,
                headers=["table", "cells", "predicted", *SHARES, "training of matmul"],
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
    )


def write_shares(results: Path, tables: Path, tier: str) -> Path:
    path = tables / f"plan-shares-{tier}.md"
    atomic_write_text(path, render_shares(results, tier))
    return path


# --- the plan against what ran -------------------------------------------------------------


def threads_of(device: str) -> int | None:
    """The threads a record names ("cpu: AMD EPYC, 1 threads")."""
    for part in device.split(","):
        part = part.strip()
        if part.endswith(" threads") and part.split()[0].isdigit():
            return int(part.split()[0])
    return None


def record_sizes(records: dict) -> dict[str, tuple[int, int]]:
    """What each record trained and scored on: (n_train, n_test) from its data."""
    out = {}
    for cell, r in records.items():
        if r.status == "ok" and r.data.get("n_train") and r.data.get("n_test") is not None:
            out[cell] = (int(r.data["n_train"]), int(r.data["n_test"]))
    return out


def busy_s(record) -> float | None:
    """The wall time a record's work takes with its threads to itself: its CPU seconds over its
    threads (None for a record made before records kept CPU time). Unlike `wall_s` it does not
    grow with what else the machine ran, which is what a plan calibrated on a quiet machine
    predicts."""
    if record.cpu_s is None:
        return None
    return record.cpu_s / (threads_of(record.device) or 1)


def compare(record: dict, records: dict) -> list[dict]:
    """Predicted against recorded wall time, and against the recorded CPU time over the threads
    where the record has it, per cell with an ok record."""
    rows = []
    for c in record["cells"]:
        r = records.get(c["cell"])
        if r is None or r.status != "ok" or c["error"]:
            continue
        busy = busy_s(r)
        rows.append(
            {
                "table": record["table"],
                "tier": record["tier"],
                "cell": c["cell"],
                "predicted_s": c["predicted_s"],
                "recorded_s": r.wall_s,
                "ratio": c["predicted_s"] / r.wall_s if r.wall_s else None,
                "recorded_busy_s": busy,
                "busy_ratio": c["predicted_s"] / busy if busy else None,
                "recorded_load": r.load,
                "recorded_commit": r.commit,
                "recorded_started": r.started,
            }
        )
    return rows


def _epoch_work(r) -> tuple | None:
    """What one training epoch of a record computes, to tell identical epochs: the cell, the
    model's arguments, the batch, the images an epoch reads and the image size."""
    n = r.data.get("n_train")
    batch = r.settings.get("batch_size")
    if not n or not batch:
        return None
    cap = r.settings.get("max_steps_per_epoch")
    images = min(int(n), cap * batch) if cap else int(n)
    kwargs = json.dumps(r.settings.get("model_kwargs", {}), sort_keys=True)
    return (
        json.dumps(r.params, sort_keys=True),
        kwargs,
        batch,
        images,
        r.settings.get("image_size"),
    )


def timing_evidence(results: Path, rows: list[dict], band: float = 0.25) -> dict[tuple, dict]:
    """How reproducible each record's own timing is, independent of any plan: the spread of its
    epochs (max / min; every epoch the same work) and its median epoch against the same cell's
    in the other CPU tier when that epoch is the same work. A record whose identical epochs
    differ by more than `band` was made at a load no calibration can know: per (table, tier,
    cell), {"spread", "other_tier", "unsteady"}."""
    from .records import read_records

    cache: dict[tuple, dict] = {}

    def records(table: str, tier: str) -> dict:
        if (table, tier) not in cache:
            cache[table, tier] = read_records(results, table, tier)[0]
        return cache[table, tier]

    out = {}
    for row in rows:
        table, tier, cell = row["table"], row["tier"], row["cell"]
        r = records(table, tier).get(cell)
        seconds = [h["seconds"] for h in (r.history if r else []) if h.get("seconds")]
        if not seconds:
            continue
        spread = max(seconds) / min(seconds) if len(seconds) > 1 else None
        other = records(table, "medium" if tier == "small" else "small").get(cell)
        other_s = [h["seconds"] for h in (other.history if other else []) if h.get("seconds")]
        same = other_s and other.status == "ok" and _epoch_work(other) == _epoch_work(r)
        cross = median(seconds) / median(other_s) if same else None
        unsteady = (spread is not None and spread > 1 + band) or (
            cross is not None and not 1 / (1 + band) <= cross <= 1 + band
        )
        out[table, tier, cell] = {"spread": spread, "other_tier": cross, "unsteady": unsteady}
    return out


RUN_MIN_CELLS = 3  # a run's speed factor is fitted only where it has this many cells


def run_factors(rows: list[dict]) -> dict[tuple, float]:
    """Per recorded run (table, tier, the records' commit), the median of its cells'
    predicted / recorded ratios: the run's speed level against the calibration's, which the
    load at the time sets and no calibration can know. Runs of fewer than RUN_MIN_CELLS cells
    get none (one factor per cell would fit anything)."""
    runs: dict[tuple, list[float]] = {}
    for r in rows:
        if r["ratio"] is not None:
            runs.setdefault(_run_of(r), []).append(r["ratio"])
    return {k: median(v) for k, v in runs.items() if len(v) >= RUN_MIN_CELLS}


def _run_of(row: dict) -> tuple:
    return (row["table"], row["tier"], row.get("recorded_commit", ""))


def within(rows: list[dict], band: float = 0.25, key: str = "ratio") -> tuple[int, int]:
    """How many rows predict the recorded wall time within +-band (ratio in [1-band, 1+band]);
    key="busy_ratio": the recorded CPU time over the threads, over the rows that have it."""
    rows = [r for r in rows if key == "ratio" or r.get(key) is not None]
    good = sum(1 for r in rows if r[key] is not None and abs(r[key] - 1) <= band)
    return good, len(rows)


def render_accuracy(rows: list[dict], runs: list[dict], evidence: dict | None = None) -> str:
    """The comparison as markdown: per cell predicted and recorded wall time and, to tell a
    wrong step time from a wrong evaluation or overhead, the training phase alone (the record's
    epoch seconds); with `evidence` (timing_evidence), how reproducible each record's own
    timing is, and how many misses that accounts for."""
    from tabulate import tabulate

    evidence = evidence or {}
    factors = run_factors(rows)

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else ""

    def key(r):
        return (r["table"], r["tier"], r["cell"])

    def num(value):
        return "" if value is None else f"{value:.2f}"

    good, n = within(rows)
    body = [
        [
            r["table"],
            r["tier"],
            r["cell"],
            _duration(r["predicted_s"]),
            _duration(r["recorded_s"]),
            f"{r['ratio']:.2f}",
            ratio(r.get("predicted_train_s"), r.get("recorded_train_s")),
            num(evidence.get(key(r), {}).get("spread")),
            num(evidence.get(key(r), {}).get("other_tier")),
            num(factors.get(_run_of(r))),
            num(r["ratio"] / factors[_run_of(r)] if _run_of(r) in factors else None),
            _duration(r["recorded_busy_s"]) if r.get("recorded_busy_s") else "",
            num(r.get("busy_ratio")),
        ]
        for r in rows
    ]
    ratios = sorted(r["ratio"] for r in rows if r["ratio"] is not None)
    train = sorted(
        r["predicted_train_s"] / r["recorded_train_s"]
        for r in rows
        if r.get("predicted_train_s") and r.get("recorded_train_s")
    )
    head = "no cell with a record"
    if ratios:
        head = (
            f"{good} of {n} cells ({100 * good / n:.0f}%) within +-25%; predicted / recorded:"
            f" median {median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}"
        )
        if train:
            head += f"; the training phase alone: median {median(train):.2f}"
    steady = [r for r in rows if not evidence.get(key(r), {}).get("unsteady")]
    missed = [r for r in rows if not within([r])[0]]
    unsteady_misses = [r for r in missed if evidence.get(key(r), {}).get("unsteady")]
    explained = ""
    if evidence and missed:
        good_steady, n_steady = within(steady)
        explained = (
            f"\n\nHow much of the miss the records' load explains: {len(unsteady_misses)} of the"
            f" {len(missed)} cells outside +-25% come from records whose own identical epochs"
            " differ by more than 25% (the 'epochs max / min' of the record, or its median epoch"
            " against the same cell's in the other CPU tier, 'vs other tier'): the same work took"
            " that much more or less time at the load of the moment, which no calibration can"
            f" know. Over the {n_steady} cells whose records are steady by both measures,"
            f" {good_steady} ({100 * good_steady / max(n_steady, 1):.0f}%) are within +-25%:"
            " steady within itself, a run can still have gone at another speed than the"
            " calibration, as its run factor says."
        )
    scaled = [{"ratio": r["ratio"] / factors[_run_of(r)]} for r in rows if _run_of(r) in factors]
    if scaled:
        good_scaled, n_scaled = within(scaled)
        levels = sorted(factors.values())
        explained += (
            f"\n\nWhat is left once each recorded run's speed level is known: the median ratio of"
            f" a run's cells (its 'run factor', {levels[0]:.2f}-{levels[-1]:.2f} over the"
            f" {len(factors)} runs of at least {RUN_MIN_CELLS} cells) is that run's load against"
            " the calibration's. Divided by it, "
            f"{good_scaled} of those runs' {n_scaled} cells"
            f" ({100 * good_scaled / n_scaled:.0f}%) are within +-25% ('ratio / run factor'):"
            " the plan's costs of the cells relative to each other hold, and its absolute level"
            " is the load of the machine it was calibrated on. Plan on a quiet machine, or on"
            " the machine and at the load the cells will run at."
        )
    busy_good, busy_n = within(rows, key="busy_ratio")
    if busy_n:
        busy = [r for r in rows if r.get("busy_ratio") is not None]
        wall_good, _ = within(busy)
        explained = (
            f"\n\nAgainst the work alone: {busy_n} records keep their CPU seconds, which do not"
            " grow with what else the machine ran. Predicted over CPU seconds / threads"
            f" ('ratio to CPU'): {busy_good} of {busy_n}"
            f" ({100 * busy_good / busy_n:.0f}%) within +-25%, median"
            f" {median(r['busy_ratio'] for r in busy):.2f}; the same cells' wall times,"
            f" at the load they ran at: {wall_good} of {busy_n}.{explained}"
        )
    made = sorted({f"`{r['command']}` at {r['commit'][:8]}" for r in runs})
    return "\n".join(
        [
            "# The plan against what ran",
            "",
            "`bench plan --against-records`: the plan of each small and medium tier with committed"
            " records, at the records' threads per cell and data sizes, against each record's"
            f" `wall_s`: {head}.{explained}",
            "",
            tabulate(
                body,
                headers=[
                    "table",
                    "tier",
                    "cell",
                    "predicted",
                    "recorded",
                    "ratio",
                    "training ratio",
                    "epochs max / min",
                    "vs other tier",
                    "run factor",
                    "ratio / run factor",
                    "CPU / threads",
                    "ratio to CPU",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
            "'training ratio': the plan's training phase over the record's epoch seconds."
            " 'epochs max / min': the record's slowest epoch over its fastest (every epoch is the"
            " same work). 'vs other tier': the record's median epoch over the same cell's in the"
            " other CPU tier, where an epoch there is the same work (model, batch, images). 'run"
            " factor': the median ratio of the cells recorded at the same commit in this tier."
            " 'CPU / threads': the record's CPU seconds over its threads, for records that keep"
            " them. The records were made by runs of 2-3 cells at once on 2 cores at other"
            " commits and loads;"
            " the plans were calibrated by " + "; ".join(made) + ".",
            "",
        ]
    )


def plan_accuracy(
    specs: list[TableSpec],
    results: Path,
    tables: Path,
    data_dir: Path | None,
    command: str,
    log=print,
    tiers: tuple[str, ...] = ("small", "medium"),
) -> Path:
    """Plan every small and medium tier (or only `tiers`) that has ok trained records, at their
    threads and data sizes, and write the comparison with their wall times
    (results/plans/accuracy/TABLE.json, where a table's rows of the other tiers are kept, and
    tables/plan-accuracy.md)."""
    from .records import read_records

    rows, threads_seen = [], set()
    for spec in specs:
        for tier in tiers:
            if tier not in spec.tiers:
                continue
            records, _ = read_records(results, spec.id, tier)
            grid = {c.id for c in spec.cells(tier)}
            ok = {
                c: r
                for c, r in records.items()
                if r.status == "ok" and not r.evaluated_from and c in grid
            }
            if not ok:
                continue
            threads = {threads_of(r.device) for r in ok.values()}
            threads_seen |= threads
            opts = PlanOptions(
                tier=tier,
                cells=",".join(sorted(ok)),
                threads=max(t or 1 for t in threads),
                data_dir=data_dir,
                sizes=record_sizes(ok),
                command=command,
            )
            log(f"{spec.id} {tier}: {len(ok)} cells with records")
            record = plan_table(spec, opts, log=log)
            write_plan(record, results, tables)
            for row in compare(record, ok):
                plan = next(c for c in record["cells"] if c["cell"] == row["cell"])
                row["predicted_train_s"] = plan["phases"].get("train")
                row["recorded_train_s"] = sum(h.get("seconds", 0) for h in ok[row["cell"]].history)
                rows.append(row)
        meta = {"command": command, **provenance(), "threads": sorted(t for t in threads_seen if t)}
        path = results / "plans" / "accuracy" / f"{spec.id}.json"
        kept = []
        if path.exists():  # this table's rows of the tiers not planned now
            kept = [r for r in json.loads(path.read_text())["rows"] if r["tier"] not in tiers]
        table_rows = kept + [r for r in rows if r["table"] == spec.id]
        if table_rows:
            atomic_write_text(path, json.dumps({**meta, "rows": table_rows}, indent=1) + "\n")
    return write_accuracy(results, tables)


def write_accuracy(results: Path, tables: Path) -> Path:
    """tables/plan-accuracy.md from every table's comparison (results/plans/accuracy/*.json)
    and the records' own timing evidence; calibrates nothing."""
    every = []
    for path in sorted((results / "plans" / "accuracy").glob("*.json")):
        every.append(json.loads(path.read_text()))
    rows = [r for e in every for r in e["rows"]]
    md = tables / "plan-accuracy.md"
    atomic_write_text(md, render_accuracy(rows, every, timing_evidence(results, rows)))
    return md


# --- the cluster reads the plan ------------------------------------------------------------

MARGIN = 1.5  # Slurm asks for the plan's time and memory times this
BASE_MIB = 2048  # a worker's resident set before its first step: Python, torch, the data


@dataclass(frozen=True)
class Resources:
    time_min: int | None
    mem_gb: float | None
    lines: list[str]


def slurm_resources(
    record: dict | None, cells: list[str], max_time_min: int | None, margin: float = MARGIN
) -> Resources:
    """Per-cell Slurm time and memory from a plan: the longest selected cell's predicted wall
    time, and its largest step peak plus BASE_MIB and two checkpoints, times `margin`; the time
    is capped at `max_time_min`, and a cell predicted to outlast the cap is said to run across
    requeues from its checkpoints."""
    if record is None:
        return Resources(None, None, ["no plan of this tier: `bench plan` it to size the jobs"])
    planned = {c["cell"]: c for c in record["cells"] if not c["error"]}
    chosen = [planned[c] for c in cells if c in planned]
    if not chosen:
        return Resources(None, None, ["the plan has none of these cells: `bench plan` them"])
    longest = max(chosen, key=lambda c: c["predicted_s"])
    minutes = math.ceil(longest["predicted_s"] * margin / 60)
    mib = max((c["memory"]["peak_mib"] or 0) + 2 * c["memory"]["checkpoint_mib"] for c in chosen)
    mem_gb = math.ceil((mib + BASE_MIB) * margin / 1024)
    lines = [
        f"from the plan ({record['device']}, {record['commit'][:8]}) x {margin}:"
        f" {minutes} min, {mem_gb} GB per cell (longest: {longest['cell']})"
    ]
    if max_time_min is not None and minutes > max_time_min:
        over = [c["cell"] for c in chosen if c["predicted_s"] * margin / 60 > max_time_min]
        lines.append(
            f"{len(over)} cell(s) outlast the limit of {max_time_min} min ({over[0]}"
            f"{', ...' if len(over) > 1 else ''}): they run across time-out requeues,"
            " resuming from their checkpoints"
        )
        minutes = max_time_min
    return Resources(minutes, mem_gb, lines)


def segment_s(cell: dict, checkpoint_every: int) -> float:
    """The longest work a task must finish between two checkpoints: `checkpoint_every` epochs
    of training, then (the last stretch) the evaluation, which is not checkpointed."""
    epochs = max(1, cell["schedule"].get("epochs") or 1)
    train = cell["phases"].get("train", 0.0)
    return train * min(checkpoint_every, epochs) / epochs + cell["predicted_s"] - train


def checkpoint_warnings(
    record: dict | None, cells: list[str], time_min: int, checkpoint_every: int = 1
) -> list[str]:
    """A warning for the cells whose work between checkpoints (bench.plan.segment_s) does not
    fit the time limit before submitit's USR2: each time-out would redo it from the same
    checkpoint, and after the last requeue the cell ends unfinished."""
    if record is None:
        return []
    usable = time_min * 60 - SIGNAL_LEAD_S
    chosen = [c for c in record["cells"] if c["cell"] in cells and not c["error"]]
    over = [c for c in chosen if segment_s(c, checkpoint_every) > usable]
    if not over:
        return []
    worst = max(over, key=lambda c: segment_s(c, checkpoint_every))
    need = math.ceil((segment_s(worst, checkpoint_every) * MARGIN + SIGNAL_LEAD_S) / 60)
    return [
        f"warning: {len(over)} cell(s) cannot reach their next checkpoint within --time-min"
        f" {time_min} ({worst['cell']}: {segment_s(worst, checkpoint_every) / 60:.1f} min of"
        " training between checkpoints, or of the last stretch and the evaluation, against"
        f" {usable / 60:.1f} min before the USR2); each time-out would redo that work: pass"
        " --time-min"
        f" {need} or more{' or a smaller --checkpoint-every' if checkpoint_every > 1 else ''}"
    ]


def totals_line(record: dict | None) -> str:
    if record is None:
        return "no plan of this tier yet: `bench plan TABLE --tier full` says what it costs"
    t = record["totals"]
    longest = t["longest"]
    return (
        f"plan ({record['device']}, {record['commit'][:8]}): {t['cells']} cells,"
        f" {t['device_hours']:.1f} {t['unit']}, longest"
        f" {longest['cell']} ({_duration(longest['hours'] * 3600)})"
        if longest
        else f"plan: {t['cells']} cells, none calibrated"
    )
