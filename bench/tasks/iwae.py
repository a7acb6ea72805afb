"""VAE / IWAE training and evaluation (Burda et al. 2015, arXiv 1509.00519, Section 5).

Cell fields: dataset, model ("vae" or "iwae"), layers (1 or 2), k (samples per training example).
Metrics: test NLL (the IWAE bound with `nll_k` samples) and active units per stochastic layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import TensorDataset

from models.iwae import IWAE

from .. import data as datasets
from ..memory import measure_step
from ..train import Fit, fit
from . import CellResult, Context


@dataclass(frozen=True)
class Settings:
    stages: int = 8  # the paper's schedule: stage i trains 3^i epochs at lr * 10^(-i/7)
    epochs_per_stage: list | None = None  # overrides 3^i (shorter tiers)
    lr: float = 1e-3
    batch_size: int = 20
    adam_eps: float = 1e-4
    n_train: int | None = None  # None: the whole training set
    n_test: int | None = None
    nll_k: int = 5000
    nll_chunk: int = 1000  # samples per chunk of the NLL estimate; memory ~ chunk x batch
    nll_batch: int = 100  # test images per chunk
    au_samples: int = 100  # z1 samples for the top layer's active units
    max_steps_per_epoch: int | None = None

    def __post_init__(self):
        stage_epochs(self)  # fail when the spec is read, not after a cell has started


def stage_epochs(s: Settings) -> list[int]:
    epochs = s.epochs_per_stage or [3**i for i in range(s.stages)]
    if len(epochs) != s.stages:
        raise ValueError(f"epochs_per_stage has {len(epochs)} entries for {s.stages} stages")
    return list(epochs)


def lr_schedule(s: Settings):
    """Epoch -> learning rate: stage i runs stage_epochs[i] epochs at lr * 10^(-i/7)."""
    ends = [sum(stage_epochs(s)[: i + 1]) for i in range(s.stages)]

    def lr_at(epoch: int) -> float:
        i = next(i for i, end in enumerate(ends) if epoch < end)
        return s.lr * 10 ** (-i / 7)

    return lr_at, ends[-1]


def binarize(x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: each pixel ~ Bernoulli(intensity), as the paper does for MNIST."""
    p = x_uint8.flatten(1).float() / 255
    return torch.bernoulli(p, generator=generator)


def run(cell: dict, s: Settings, ctx: Context) -> CellResult:
    if cell["model"] not in ("vae", "iwae"):
        raise ValueError(f"model must be 'vae' or 'iwae', got {cell['model']!r}")
    splits = datasets.load(
        cell["dataset"], ctx.data_dir, smoke=ctx.tier == "smoke", n_train=s.n_train,
        n_test=s.n_test, seed=ctx.seed, download=ctx.download,
    )  # fmt: skip
    device, k, objective = ctx.device, cell["k"], cell["model"]
    x_train, _ = splits.train.tensors
    x_test_uint8, _ = splits.test.tensors
    x_train = x_train.to(device)
    train = TensorDataset(x_train)
    # The test set is binarized once, with a fixed seed, so every cell is scored on the same bits.
    x_test = binarize(x_test_uint8, torch.Generator().manual_seed(ctx.seed)).to(device)

    torch.manual_seed(ctx.seed)
    model = IWAE(layers=cell["layers"], x_dim=x_train[0].numel()).to(device)
    model.set_output_bias(x_train.flatten(1).float().mean(0) / 255)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(0.9, 0.999), eps=s.adam_eps)
    lr_at, epochs = lr_schedule(s)

    def loss(net, batch):
        return net(binarize(batch[0]), k, objective)

    memory = measure_step(
        lambda: loss(model, (x_train[: s.batch_size],)), model.parameters(), device
    )
    history = fit(
        Fit(model, optimizer, loss, train, s.batch_size, epochs, lr_at, ctx.seed,
            desc=ctx.desc, max_steps_per_epoch=s.max_steps_per_epoch),
        ctx.checkpoint,
    )  # fmt: skip

    model.eval()
    with torch.no_grad():
        torch.manual_seed(ctx.seed + 1)
        nll = torch.cat(
            [model.nll(xb, k=s.nll_k, chunk=s.nll_chunk) for xb in x_test.split(s.nll_batch)]
        )
        units = model.active_units(x_test, n_samples=s.au_samples)
    metrics = {
        "nll": nll.mean().item(),
        "nll_stderr": (nll.std() / math.sqrt(len(nll))).item() if len(nll) > 1 else None,
        "active_units": list(units),
        "nll_k": s.nll_k,
        "params": sum(p.numel() for p in model.parameters()),
    }
    return CellResult(
        metrics=metrics,
        memory=memory,
        data={**asdict(splits.info), "binarization": "dynamic (train), fixed seed (test)"},
        history=history,
    )
