"""Memory and step time of one classifier training step, shared by the classify and memory tasks.

A `Workload` names what is measured (a registered model, its arguments, a batch shape, a device);
every helper here takes one, so the seven values travel together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from statistics import median

import torch
import torch.nn.functional as F

import models

from .activations import measure_step

MIB = 2**20


@dataclass(frozen=True)
class Workload:
    model: str  # a name in models.MODELS
    num_classes: int
    batch: int
    shape: tuple[int, ...]  # (C, H, W) of one input
    device: torch.device = torch.device("cpu")
    kwargs: dict = field(default_factory=dict)  # the model constructor's other arguments
    seed: int = 0

    def with_model(self, model: str, **kwargs) -> Workload:
        return replace(self, model=model, kwargs=kwargs)  # the same batch, device and seed


def logits_of(output):
    """Classifiers return logits; invertible ones return (logits, z)."""
    return output[0] if isinstance(output, tuple) else output


def fresh_model(w: Workload):
    """A seeded model in train mode with a random batch (x, y) to measure it on."""
    torch.manual_seed(w.seed)
    model = models.build(w.model, num_classes=w.num_classes, **w.kwargs).to(w.device).train()
    x = torch.randn(w.batch, *w.shape, device=w.device)
    y = torch.randint(0, w.num_classes, (w.batch,), device=w.device)
    return model, x, y


def measure(w: Workload) -> dict:
    model, x, y = fresh_model(w)
    return measure_step(
        lambda: F.cross_entropy(logits_of(model(x)), y), model.parameters(), w.device
    )


def probe(w: Workload, steps: int, reference: dict | None = None) -> dict:
    """Memory and step time of one training step at a fixed batch.

    On the CPU the memory is measured in a fresh process with glibc told to return freed memory,
    so the peak RSS belongs to this model alone (those settings slow the step, so time is taken
    here, separately).
    """
    if w.device.type == "cpu":
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        plugin = {k: v for k, v in models.registered().items() if k == w.model}
        blob = json.dumps({**asdict(w), "device": "cpu", "shape": list(w.shape), "plugins": plugin})
        args = [sys.executable, "-m", "bench.probe", blob]
        out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"memory probe of {w.model} failed: {out.stderr.strip()[-500:]}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        report = measure(w)
    report.update(step_times(w, steps, reference))
    report["batch"] = w.batch
    return report


def peak_mib(memory: dict) -> float | None:
    """The CUDA allocator's peak on a GPU; on a CPU what one step adds to the resident set."""
    peak = memory["cuda_peak_bytes"]
    if peak is None:
        peak = memory["rss_step_peak_bytes"]
    return None if peak is None else peak / MIB


def timed_step(w: Workload):
    """A fresh model's full SGD step (forward, backward, update), as a call returning the
    seconds of its forward pass and of the whole step."""
    model, x, y = fresh_model(w)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def now() -> float:
        if w.device.type == "cuda":
            torch.cuda.synchronize(w.device)
        return time.perf_counter()

    def step() -> tuple[float, float]:
        t0 = now()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits_of(model(x)), y)
        t1 = now()
        loss.backward()
        optimizer.step()
        t2 = now()
        return t1 - t0, t2 - t0

    return step


def step_times(w: Workload, steps: int, reference: dict | None = None) -> dict:
    """Median seconds of `steps` SGD steps, after one warm-up step, and the forward pass's share.

    With a `reference` (a model name under "model" and its keyword arguments), the reference
    model takes a step before and after each timed step, and `step_rel` is the median of each
    step's time over the mean of its two neighbours'. Two cells timed minutes apart on a shared
    machine can see its speed change by a third; the ratio of their `step_rel` cancels that,
    the ratio of their `step_s` does not.
    """
    step = timed_step(w)
    if reference is None:
        return _summary([step() for _ in range(steps + 1)][1:])
    ref_kwargs = {k: v for k, v in reference.items() if k != "model"}
    ref = timed_step(w.with_model(reference["model"], **ref_kwargs))
    step()  # warm-up
    ref()
    around = [ref()[1]]
    timed = []
    for _ in range(steps):
        timed.append(step())
        around.append(ref()[1])
    rel = [t / ((a + b) / 2) for (_, t), a, b in zip(timed, around, around[1:])]
    return {**_summary(timed), "reference_step_s": median(around), "step_rel": median(rel)}


def _summary(timed: list[tuple[float, float]]) -> dict:
    """Median step seconds and forward share of (forward seconds, step seconds) pairs."""
    return {
        "step_s": median(t for _, t in timed),
        "forward_share": median(f / t for f, t in timed),
    }


if __name__ == "__main__":
    raw = json.loads(sys.argv[1])
    for name, target in raw.pop("plugins").items():  # the model, if from outside the repo
        models.register(name, target)
    raw["shape"], raw["device"] = tuple(raw["shape"]), torch.device("cpu")
    print(json.dumps(measure(Workload(**raw))))
