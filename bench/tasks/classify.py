"""Image classification (RevNet, ResNet, i-RevNet tables): SGD with step decay, top-1 error,
parameters, activation memory, step time and, for invertible models, reconstruction error.

Cell fields: dataset, model (a name in models.MODELS).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import models

from .. import data as datasets
from ..contracts import CLASSIFIER, has
from ..data.catalog import DATASETS
from ..probe import MIB, Workload, logits_of, peak_mib, probe
from ..train import Fit, fit, save_atomic
from .common import CellResult, Context, Trained, meta_model
from .settings import ClassifySettings as Settings
from .settings import check_cell, model_arguments


def preflight(cell: dict, s: Settings) -> None:
    """Refuse a cell before anything trains: a data set it cannot use, an unknown model,
    arguments it rejects, or a model that breaks the classifier contract."""
    check_cell("classify", cell, s)
    args = model_arguments(cell)
    meta_model(cell["model"], CLASSIFIER, num_classes=DATASETS[cell["dataset"]].classes, **args)


def normalise(x_uint8: torch.Tensor, dataset: str) -> torch.Tensor:
    mean, std = (
        torch.tensor(v, device=x_uint8.device).view(1, -1, 1, 1)
        for v in DATASETS[dataset].normalise
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


@dataclass(kw_only=True)
class Prepared(Trained):
    """A classification cell's model with its data and its measured training step."""

    splits: datasets.Splits
    memory: dict


def setup(cell: dict, s: Settings, ctx: Context) -> Prepared:
    """The data, the memory and step-time probe, and the seeded model before training."""
    name, dataset, device = cell["model"], cell["dataset"], ctx.device
    splits = datasets.load_for(dataset, s, ctx.data_dir, ctx.seed, ctx.download)
    num_classes = DATASETS[dataset].classes
    shape = tuple(splits.test[0][0].shape)
    # The probe builds its own models (and reseeds), so it runs before this cell's seed is set.
    args = model_arguments(cell)
    memory = probe(Workload(name, num_classes, s.memory_batch, shape, device, args), s.timing_steps)

    torch.manual_seed(ctx.seed)
    model = models.build(name, num_classes=num_classes, **args).to(device)
    return Prepared(model, splits=splits, memory=memory)


def train(cell: dict, s: Settings, ctx: Context) -> Prepared:
    """`setup`, then SGD with step decay (unless the tier measures an untrained model); the
    weights are saved where the runner asks."""
    t = setup(cell, s, ctx)
    model, dataset, device = t.model, cell["dataset"], ctx.device
    if s.train:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
        )

        def lr_at(epoch: int) -> float:
            return s.lr * 0.1 ** sum(epoch >= m for m in s.lr_milestones)

        def loss(net, batch):
            x, y = batch
            if s.augment and not DATASETS[dataset].streamed:  # a streamed set crops and flips
                x = augment(x)
            logits = logits_of(net(normalise(x.to(device), dataset)))
            return F.cross_entropy(logits, y.to(device))

        t.history = fit(
            Fit(
                model,
                optimizer,
                loss,
                t.splits.train,
                s.batch_size,
                s.epochs,
                lr_at,
                ctx.seed,
                desc=ctx.desc,
                max_steps_per_epoch=s.max_steps_per_epoch,
            ),
            ctx.checkpoint,
        )
        t.has_weights = True
        if ctx.weights is not None:
            save_atomic(model.state_dict(), ctx.weights)
    return t


def run(cell: dict, s: Settings, ctx: Context) -> CellResult:
    return score(cell, s, ctx, train(cell, s, ctx))


def score(cell: dict, s: Settings, ctx: Context, t: Prepared) -> CellResult:
    """Every metric of a model trained here or given its weights by `bench eval`: one path, so
    an evaluated record cannot drift from a trained one. An untrained model gets no error."""
    model, memory, dataset, device = t.model, t.memory, cell["dataset"], ctx.device
    metrics = {"params": models.count_parameters(model) / 1e6}
    metrics["saved_mib"] = memory["saved_bytes"] / MIB
    metrics["step_s"] = memory["step_s"]
    metrics["peak_mib"] = peak_mib(memory)
    if t.has_weights:
        metrics["error"] = evaluate(model, t.splits.test, dataset, s.eval_batch, device)
    if has(model, "inverse"):
        metrics["recon_error"] = reconstruction_error(model, t.splits.test, dataset, device)
    return CellResult(metrics=metrics, memory=memory, data=asdict(t.splits.info), history=t.history)


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
