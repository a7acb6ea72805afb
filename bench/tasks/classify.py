"""Image classification (RevNet, ResNet, i-RevNet tables): SGD with step decay, top-1 error,
parameters, activation memory, step time and, for invertible models, reconstruction error.

Cell fields: dataset, model (a constructor name in models/ or torchvision).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from statistics import median

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import data as datasets
from ..memory import measure_step
from ..train import Fit, fit, save_atomic
from . import CellResult, Context, build_model, count_parameters

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
# Per-channel mean and std of the training images, for input normalisation.
NORMALISE = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
MIB = 2**20


@dataclass(frozen=True)
class Settings:
    epochs: int = 1
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    lr_milestones: list = field(default_factory=list)  # epochs where lr is divided by 10
    augment: bool = True  # CIFAR: random crop with 4-pixel padding + horizontal flip
    train: bool = True  # False: count, invert and measure an untrained model only
    n_train: int | None = None
    n_test: int | None = None
    image_size: int | None = None  # resize the images (smoke tiers: cheap steps on real images)
    eval_batch: int = 200
    memory_batch: int = 32  # batch of the memory and step-time probes
    timing_steps: int = 3
    max_steps_per_epoch: int | None = None


def normalise(x_uint8: torch.Tensor, dataset: str) -> torch.Tensor:
    mean, std = (
        torch.tensor(v, device=x_uint8.device).view(1, -1, 1, 1) for v in NORMALISE[dataset]
    )
    return (x_uint8.float() / 255 - mean) / std


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, per image, on a uint8 batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n)).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def logits_of(output):
    """Classifiers return logits; invertible ones return (logits, z)."""
    return output[0] if isinstance(output, tuple) else output


def run(cell: dict, s: Settings, ctx: Context) -> CellResult:
    name, dataset, device = cell["model"], cell["dataset"], ctx.device
    splits = datasets.load(
        dataset, ctx.data_dir, smoke=ctx.tier == "smoke", n_train=s.n_train, n_test=s.n_test,
        seed=ctx.seed, download=ctx.download, image_size=s.image_size,
    )  # fmt: skip
    num_classes = NUM_CLASSES[dataset]
    shape = tuple(splits.test[0][0].shape)
    # The probe builds its own models (and reseeds), so it runs before this cell's seed is set.
    memory = probe(name, num_classes, s.memory_batch, shape, device, s.timing_steps)

    torch.manual_seed(ctx.seed)
    model = build_model(name, num_classes=num_classes).to(device)
    metrics = {"params": count_parameters(model) / 1e6}
    metrics["saved_mib"] = memory["saved_bytes"] / MIB
    metrics["step_s"] = memory["step_s"]
    metrics["peak_mib"] = peak_mib(memory)

    history = []
    if s.train:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
        )

        def lr_at(epoch: int) -> float:
            return s.lr * 0.1 ** sum(epoch >= m for m in s.lr_milestones)

        def loss(net, batch):
            x, y = batch
            if s.augment and dataset != "imagenet":
                x = augment(x)
            logits = logits_of(net(normalise(x.to(device), dataset)))
            return F.cross_entropy(logits, y.to(device))

        history = fit(
            Fit(model, optimizer, loss, splits.train, s.batch_size, s.epochs, lr_at, ctx.seed,
                desc=ctx.desc, max_steps_per_epoch=s.max_steps_per_epoch),
            ctx.checkpoint,
        )  # fmt: skip
        metrics["error"] = evaluate(model, splits.test, dataset, s.eval_batch, device)
        if ctx.weights is not None:
            save_atomic(model.state_dict(), ctx.weights)
    if hasattr(model, "inverse"):
        metrics["recon_error"] = reconstruction_error(model, splits.test, dataset, device)
    return CellResult(metrics=metrics, memory=memory, data=asdict(splits.info), history=history)


@torch.no_grad()
def evaluate(model, test, dataset: str, batch: int, device) -> float:
    """Top-1 error in percent."""
    model.eval()
    wrong = total = 0
    for x, y in DataLoader(test, batch_size=batch):
        pred = logits_of(model(normalise(x.to(device), dataset))).argmax(1).cpu()
        wrong += (pred != y).sum().item()
        total += len(y)
    return 100.0 * wrong / total


@torch.no_grad()
def reconstruction_error(model, test, dataset: str, device, n: int = 8) -> float:
    """max |inverse(forward(x)) - x| over a few real test images, in the normalised input space."""
    model.eval()
    x = torch.stack([test[i][0] for i in range(min(n, len(test)))])
    x = normalise(x.to(device), dataset)
    _, z = model(x)
    return (model.inverse(z) - x).abs().max().item()


def peak_mib(memory: dict) -> float | None:
    """The CUDA allocator's peak on a GPU; on a CPU what one step adds to the resident set."""
    peak = memory["cuda_peak_bytes"]
    if peak is None:
        peak = memory["rss_step_peak_bytes"]
    return None if peak is None else peak / MIB


def probe(
    name: str,
    num_classes: int,
    batch: int,
    shape: tuple,
    device,
    steps: int,
    kwargs=None,
    reference: dict | None = None,
) -> dict:
    """Memory and step time of one training step at a fixed batch.

    On the CPU this runs in a fresh process with glibc told to return freed memory, so the peak
    RSS belongs to this model alone (those settings slow the step, so time is taken separately).
    """
    if device.type == "cpu":
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        spec = json.dumps([name, num_classes, batch, shape, kwargs or {}])
        args = [sys.executable, "-m", "bench.tasks.classify", spec]
        out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"memory probe of {name} failed: {out.stderr.strip()[-500:]}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        report = measure(name, num_classes, batch, shape, device, kwargs)
    report.update(step_times(name, num_classes, batch, shape, device, steps, kwargs, reference))
    report["batch"] = batch
    return report


def fresh_model(name, num_classes, batch, shape, device, kwargs=None, seed=0):
    """A seeded model in train mode with a random batch (x, y) to measure it on."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes, **(kwargs or {})).to(device).train()
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    return model, x, y


def measure(name: str, num_classes: int, batch: int, shape: tuple, device, kwargs=None) -> dict:
    model, x, y = fresh_model(name, num_classes, batch, shape, device, kwargs)
    return measure_step(lambda: F.cross_entropy(logits_of(model(x)), y), model.parameters(), device)


def timed_step(name, num_classes, batch, shape, device, kwargs=None):
    """A fresh model's full SGD step (forward, backward, update), as a call returning the
    seconds of its forward pass and of the whole step."""
    model, x, y = fresh_model(name, num_classes, batch, shape, device, kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
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


def step_times(
    name: str,
    num_classes: int,
    batch: int,
    shape: tuple,
    device,
    steps: int,
    kwargs=None,
    reference: dict | None = None,
) -> dict:
    """Median seconds of `steps` SGD steps, after one warm-up step, and the forward pass's share.

    With a `reference` (a model name under "model" and its keyword arguments), the reference
    model takes a step before and after each timed step, and `step_rel` is the median of each
    step's time over the mean of its two neighbours'. Two cells timed minutes apart on a shared
    machine can see its speed change by a third; the ratio of their `step_rel` cancels that,
    the ratio of their `step_s` does not.
    """
    step = timed_step(name, num_classes, batch, shape, device, kwargs)
    if reference is None:
        return _summary([step() for _ in range(steps + 1)][1:])
    ref_kwargs = {k: v for k, v in reference.items() if k != "model"}
    ref = timed_step(reference["model"], num_classes, batch, shape, device, ref_kwargs)
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
    name, classes, batch, shape, kwargs = json.loads(sys.argv[1])
    report = measure(name, classes, batch, tuple(shape), torch.device("cpu"), kwargs)
    print(json.dumps(report))
