"""Density estimation (IWAE, PixelCNN family, PixelVAE, NICE tables): train any model of the
density contract (bench/contracts.py: DENSITY; models/factorised.py is the smallest model that
meets it) with Adam, then report its test NLL in nats and bits/dim. Optional parts (sampling,
a data-dependent start, optimizer groups, active units, ELBO terms, an importance-sampled bound)
are used when the model declares them in `capabilities`.

Cell fields: dataset, model (a name in models.MODELS); every other field, and the tier's
`model_kwargs` for that model, goes to the model's constructor with `shape = (C, H, W)`.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch.utils.data import TensorDataset
from torchvision.utils import save_image

import models

from .. import data as datasets
from ..activations import measure_step
from ..contracts import DENSITY, has
from ..data.prep import PREPS
from ..probe import MIB, peak_mib
from ..train import EvalProgress, EvalResume, Fit, NonFiniteMetric, fit, save_atomic
from ..units import bits_per_dim
from .common import CellResult, Context, Trained, meta_model
from .settings import LikelihoodSettings as Settings
from .settings import check_cell, image_shape, model_arguments, stage_epochs


def lr_schedule(s: Settings):
    """Epoch -> learning rate: stage i runs stage_epochs[i] epochs at
    lr * 10^(-i / stages_per_decade) (7 in the IWAE paper)."""
    ends = [sum(stage_epochs(s)[: i + 1]) for i in range(s.stages)]

    def lr_at(epoch: int) -> float:
        i = next(i for i, end in enumerate(ends) if epoch < end)
        return s.lr * 10 ** (-i / s.stages_per_decade)

    return lr_at, ends[-1]


def build(cell: dict, s: Settings, shape: tuple[int, ...], make=models.build):
    kwargs = model_arguments(cell)
    return make(cell["model"], shape=shape, **s.model_kwargs.get(cell["model"], {}), **kwargs)


def check_kind(model, cell: dict, s: Settings) -> None:
    kind = PREPS[s.prep].kind
    if getattr(model, "input_kind", None) != kind:
        fits = [name for name, p in PREPS.items() if p.kind == getattr(model, "input_kind", None)]
        raise ValueError(
            f"model '{cell['model']}' takes {getattr(model, 'input_kind', 'no declared')} input but"
            f" prep = '{s.prep}' makes {kind} input; set prep to one of {', '.join(fits) or '?'}"
        )


def preflight(cell: dict, s: Settings) -> None:
    """Refuse a cell before anything trains: a data set it cannot use, an unknown model,
    arguments the model rejects, a model that breaks the density contract, or a data
    preparation the model cannot take."""
    check_cell("likelihood", cell, s)
    shape = image_shape(cell["dataset"], s)
    check_kind(build(cell, s, shape, make=partial(meta_model, contract=DENSITY)), cell, s)


def optimizer_for(model, s: Settings) -> torch.optim.Adam:
    """Adam over the model's own groups where it declares them (`fit` sets each group's rate to
    the schedule's times its `lr_scale`), else over all parameters at one rate."""
    groups = model.param_groups() if has(model, "param_groups") else model.parameters()
    return torch.optim.Adam(groups, lr=s.lr, betas=(0.9, s.adam_beta2), eps=s.adam_eps)


@dataclass(kw_only=True)
class Prepared(Trained):
    """A likelihood cell's model with its data, its training loss and what was measured before
    training."""

    loss: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]
    x_train: torch.Tensor
    x_test: torch.Tensor  # prepared once, with a fixed seed: every cell scores the same input
    shape: tuple[int, ...]
    memory: dict
    data: dict
    images_per_epoch: int = 0


def setup(cell: dict, s: Settings, ctx: Context) -> Prepared:
    """The data and the model as training starts: seeded, initialised, one step measured."""
    prep, device = PREPS[s.prep], ctx.device
    splits = datasets.load_for(cell["dataset"], s, ctx.data_dir, ctx.seed, ctx.download)
    if splits.info.lossy:
        raise datasets.DataError(
            f"{splits.info.source}: lossy images give meaningless likelihoods; use a lossless"
            " source (cifar10_lossless for CIFAR-10)"
        )
    x_train, _ = splits.train.tensors
    x_test_uint8, _ = splits.test.tensors
    shape = tuple(x_train.shape[1:])
    x_train = x_train.to(device)
    # The test set is prepared once, with a fixed seed, so every cell is scored on the same input.
    x_test = prep.test(x_test_uint8, torch.Generator().manual_seed(ctx.seed)).to(device)

    torch.manual_seed(ctx.seed)
    model = build(cell, s, shape).to(device)
    check_kind(model, cell, s)
    if has(model, "init_from_data"):
        model.init_from_data(x_train)
    if has(model, "init_from_batch"):  # its own generator: the training draws stay the same
        noise = torch.Generator(device=device).manual_seed(ctx.seed + 2)
        model.init_from_batch(prep.test(x_train[: s.init_batch], noise))

    def loss(net, batch):
        return net(prep.train(batch[0])).mean()

    memory = measure_step(
        lambda: loss(model, (x_train[: s.batch_size],)), model.parameters(), device
    )
    data = {**asdict(splits.info), "prep": f"{s.prep}: {prep.doc}"}
    return Prepared(
        model, loss=loss, x_train=x_train, x_test=x_test, shape=shape, memory=memory, data=data
    )


def epoch_units(model, x: torch.Tensor, s: Settings, seed: int) -> Callable[[int], dict]:
    """`fit`'s epoch hook: the active units of every layer on the first `au_epoch_images` test
    images, so the history shows whether they move. The same draws every epoch (one seed): a
    change between epochs is the model's, not the Monte Carlo's. Under a forked generator, so
    the training draws, the final metrics and a resumed run are those of a run without it."""
    x = x[: s.au_epoch_images]
    cuda = [x.device.index or 0] if x.device.type == "cuda" else []

    def units(epoch: int) -> dict:
        training = model.training
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed + 3)  # seed, +1 and +2: the model, the test NLL, the data start
            model.eval()
            found = model.active_units(x, n_samples=s.au_samples)
        model.train(training)
        return {"active_units": [int(u) for u in found]}

    return units


def train(cell: dict, s: Settings, ctx: Context) -> Prepared:
    """`setup`, then Adam on the schedule; the weights are saved where the runner asks. The
    history logs each epoch's active units where the model has them (`epoch_units`)."""
    t = setup(cell, s, ctx)
    model = t.model
    optimizer = optimizer_for(model, s)
    lr_at, epochs = lr_schedule(s)
    hook = None
    if has(model, "active_units") and s.au_epoch_images:
        hook = epoch_units(model, t.x_test, s, ctx.seed)
    job = Fit(
        model,
        optimizer,
        t.loss,
        TensorDataset(t.x_train),
        s.batch_size,
        epochs,
        lr_at,
        ctx.seed,
        desc=ctx.desc,
        max_steps_per_epoch=s.max_steps_per_epoch,
        on_epoch=hook,
    )
    t.history = fit(job, ctx.checkpoint)
    t.images_per_epoch, t.has_weights = job.images_per_epoch, True
    if ctx.weights is not None:
        save_atomic(model.state_dict(), ctx.weights)
    return t


def run(cell: dict, s: Settings, ctx: Context) -> CellResult:
    return score(cell, s, ctx, train(cell, s, ctx))


def score(cell: dict, s: Settings, ctx: Context, t: Prepared) -> CellResult:
    """Every metric of a model trained here or given its weights by `bench eval`: one path, so
    an evaluated record cannot drift from a trained one. Without a history, no images/s."""
    prep, model, dims = PREPS[s.prep], t.model, t.x_train[0].numel()
    model.eval()
    progress = EvalProgress(ctx.checkpoint, ctx.desc, len(t.x_test))
    resume = EvalResume.beside(ctx.checkpoint)
    metrics = evaluate(model, t.x_test, s, ctx.seed, dims, prep.offset(dims), progress, resume)
    metrics["params"] = models.count_parameters(model)
    metrics["saved_mib"] = t.memory["saved_bytes"] / MIB
    metrics["peak_mib"] = peak_mib(t.memory)
    seconds = sum(h["seconds"] for h in t.history)  # every epoch of the history, resumed ones too
    metrics["images_per_s"] = t.images_per_epoch * len(t.history) / seconds if seconds else None
    if s.samples and has(model, "sample"):
        metrics.update(draw_samples(model, s, ctx, t.shape, prep.kind))
    return CellResult(metrics=metrics, memory=t.memory, data=t.data, history=t.history)


@torch.no_grad()
def evaluate(
    model,
    x: torch.Tensor,
    s: Settings,
    seed: int,
    dims: int,
    offset: float,
    progress: Callable[[int], None] | None = None,
    resume: EvalResume | None = None,
) -> dict:
    """Test NLL per image (nats of the stored images), its mean, standard error and bits/dim,
    plus active units and ELBO terms where the model reports them; `progress` is told how
    many images have their NLL; `resume` keeps the NLL pass's resume point."""
    torch.manual_seed(seed + 1)
    bound = {"k": s.nll_k, "chunk": s.nll_chunk} if has(model, "bound") else {}
    resume = resume or EvalResume(None)
    parts, done = resume.load(len(x), s.nll_batch)
    for xb in x[done:].split(s.nll_batch):
        parts.append(model.nll(xb, **bound).double())
        done += len(xb)
        resume.save(parts, done, len(x), s.nll_batch)
        if progress is not None:
            progress(done)
    # -log p(x) of the data = the model's NLL of its input + the nats of the preparation
    nll = torch.cat(parts) + offset
    n = len(nll)
    if not torch.isfinite(nll).all():
        bad = nll[~torch.isfinite(nll)]
        raise NonFiniteMetric(
            f"test NLL is {bad[0].item()} for {len(bad)} of {n} images; the"
            " model's nll is not finite there"
        )
    mean = nll.mean().item()
    stderr = (nll.std() / math.sqrt(n)).item() if n > 1 else None
    metrics = {
        "nll": mean,
        "nll_stderr": stderr,
        "bits_per_dim": bits_per_dim(mean, dims),
        "bpd_stderr": None if stderr is None else bits_per_dim(stderr, dims),
    }
    if "k" in bound:
        metrics["nll_k"] = s.nll_k
    if offset:
        # what flow papers report: the log-likelihood of the rescaled, dequantized data
        metrics["loglik_continuous"] = offset - mean
    if has(model, "active_units"):
        units = model.active_units(x, n_samples=s.au_samples)
        metrics["active_units"] = list(units)
    if has(model, "elbo_terms"):
        terms: dict[str, list[torch.Tensor]] = {}
        for xb in x.split(s.nll_batch):
            for name, value in model.elbo_terms(xb).items():
                terms.setdefault(name, []).append(value.double())
        metrics.update({name: torch.cat(v).mean().item() for name, v in terms.items()})
    metrics["nll_per_image"] = [round(v, 6) for v in nll.tolist()]
    return metrics


class SampleBudget(Exception):
    """A rehearsal's bound on drawing its sample ran out."""


@contextmanager
def bounded(seconds: float | None) -> Iterator[None]:
    """Raise SampleBudget after `seconds` of wall time (the main thread only: a timer signal);
    no bound for None. A paper-sized autoregressive sampler takes hours for one image on a CPU,
    so a rehearsal shows that it runs at the exact configuration without drawing all of it."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SampleBudget

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@torch.no_grad()
def draw_samples(model, s: Settings, ctx: Context, shape: tuple, kind: str) -> dict:
    """Seconds per sample and, when the runner asks for one, a PNG grid of the samples. The
    naive sampler, where timed, draws the same batch from the same seed: the same work. Under
    a rehearsal's budget (`ctx.sample_budget_s`) a sampler still drawing when it runs out is
    stopped and the record says so (`sample_bounded_s`), with no sample time."""
    t0 = time.perf_counter()
    generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
    try:
        with bounded(ctx.sample_budget_s):
            x = model.sample(s.samples, generator=generator).reshape(s.samples, *shape)
    except SampleBudget:
        return {"sample_s": None, "sample_bounded_s": ctx.sample_budget_s}
    out = {"sample_s": (time.perf_counter() - t0) / s.samples}
    if s.time_naive_sampler and has(model, "naive_sampler"):
        t0 = time.perf_counter()
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        model.sample(s.samples, generator=generator, naive=True)
        out["sample_s_naive"] = (time.perf_counter() - t0) / s.samples
    if ctx.samples is not None:
        images = x.float() / 255 if kind == "discrete256" else x.float().clamp(0, 1)
        ctx.samples.parent.mkdir(parents=True, exist_ok=True)
        save_image(images, ctx.samples, nrow=int(math.ceil(math.sqrt(s.samples))), padding=1)
    return out
