"""bench.tasks.likelihood: units that come out exactly where a closed form says, the model and
data-preparation checks, and a table made of one spec and one model module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from bench.data import DATASETS, load
from bench.runner import run_table
from bench.spec import SPEC_DIR, SpecError, get_spec, load_spec
from bench.tasks.common import Context
from bench.tasks.likelihood import (
    Settings,
    draw_samples,
    epoch_units,
    evaluate,
    optimizer_for,
    preflight,
)
from bench.train import Checkpoint, Fit, fit
from bench.units import bits_per_dim, dequantization_nats
from models.factorised import Factorised
from models.iwae import IWAE as IWAEModel
from models.nice import NICE
from models.pixelcnn import PixelCNN

from ..conftest import model_metrics, options, write_spec


def entropy_bits_per_dim(x: np.ndarray, levels: int) -> float:
    """Sum over sub-pixels of the empirical entropy of their values, in bits, per dimension."""
    flat = x.reshape(len(x), -1)
    total = 0.0
    for column in flat.T:
        p = np.bincount(column, minlength=levels) / len(column)
        p = p[p > 0]
        total -= float((p * np.log2(p)).sum())
    return total / flat.shape[1]


def test_a_uniform_model_scores_exactly_8_bits_per_dim_through_the_table(tmp_path):
    spec = get_spec("factorised")
    (uniform, data) = run_table(spec, options(tmp_path, tier="smoke"), log=lambda line: None)
    assert uniform.status == data.status == "ok"
    # float32 sums of 3,072 equal terms: exact to float32 rounding of the total
    assert uniform.metrics["bits_per_dim"] == pytest.approx(8.0, abs=1e-6)
    assert uniform.metrics["nll"] == pytest.approx(3072 * math.log(256), rel=1e-6)
    # The data init: smoothed training frequencies, scored on the test images, by hand.
    splits = load("cifar10_lossless", None, sample=True)
    x_train = splits.train.tensors[0].numpy().reshape(192, -1)
    x_test = splits.test.tensors[0].numpy().reshape(96, -1)
    counts = np.stack([np.bincount(col, minlength=256) for col in x_train.T])  # [D, 256]
    log_p = np.log((counts + 1.0) / (192 + 256))
    nll = -log_p[np.arange(3072), x_test].sum(1)
    assert data.metrics["nll"] == pytest.approx(nll.mean(), rel=1e-5)
    assert data.metrics["bits_per_dim"] == pytest.approx(
        nll.mean() / (3072 * math.log(2)), rel=1e-5
    )
    assert (tmp_path / "tables" / "samples" / f"factorised-smoke-{uniform.cell}.png").is_file()


@pytest.mark.parametrize("levels", [2, 256])
def test_the_maximum_likelihood_factorised_model_scores_the_datas_entropy(levels):
    splits = load("binarized_mnist" if levels == 2 else "cifar10_lossless", None, sample=True)
    x_uint8 = splits.test.tensors[0]
    model = Factorised(tuple(x_uint8.shape[1:]), levels=levels, init="data", pseudo_count=0.0)
    model.init_from_data(x_uint8)
    x = (x_uint8 == 255).float() if levels == 2 else x_uint8.float()
    told = []
    metrics = evaluate(
        model,
        x,
        Settings(nll_batch=50),
        seed=0,
        dims=x[0].numel(),
        offset=0.0,
        progress=told.append,
    )
    assert told == [min(50 * (i + 1), len(x)) for i in range(math.ceil(len(x) / 50))]
    values = (x_uint8.numpy() > 127).astype(int) if levels == 2 else x_uint8.numpy().astype(int)
    assert metrics["bits_per_dim"] == pytest.approx(entropy_bits_per_dim(values, levels), rel=1e-5)
    assert "nll_k" not in metrics  # an exact likelihood has no number of samples


def test_unit_conversions():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # A uniform density on the rescaled [0, 1)^D scores 0 nats; the 8-bit images it bounds, 8 bits.
    assert bits_per_dim(0.0 + dequantization_nats(3072), 3072) == pytest.approx(8.0)
    assert dequantization_nats(10, scale=1.0) == 0.0


def test_dequantized_nll_counts_the_rescaling(monkeypatch):
    """A model with a uniform density on [0, 1)^D (NLL 0) must score 8 bits/dim of 8-bit data."""

    class Uniform(torch.nn.Module):
        def nll(self, y):
            assert y.min() >= 0 and y.max() < 1
            return torch.zeros(len(y))

    y = torch.rand(6, 3, 4, 4)
    metrics = evaluate(Uniform(), y, Settings(), 0, 48, dequantization_nats(48))
    assert metrics["bits_per_dim"] == pytest.approx(8.0)
    assert metrics["loglik_continuous"] == pytest.approx(0.0)


def shipped_with(tmp_path, table: str, old: str, new: str):
    text = (SPEC_DIR / f"{table}.toml").read_text()
    assert old in text
    path = tmp_path / f"{table}.toml"
    path.write_text(text.replace(old, new))
    return load_spec(path)


def test_a_prep_the_model_cannot_take_is_a_one_line_spec_error(tmp_path):
    spec = shipped_with(tmp_path, "factorised", 'prep = "discrete256"', 'prep = "dynamic_binarize"')
    with pytest.raises(SpecError) as error:
        run_table(spec, options(tmp_path, tier="smoke"), log=lambda line: None)
    message = str(error.value)
    assert "\n" not in message and str(spec.path) in message
    assert "takes discrete256 input but prep = 'dynamic_binarize'" in message
    assert not (tmp_path / "results").exists()  # refused before anything ran


@pytest.mark.parametrize(
    "grid, problem",
    [
        ('layers = [1], k = [0], model = ["vae"]', "k >= 1"),
        ('layers = [3], k = [1], model = ["vae"]', "layers must be 1 or 2"),
        ('layers = [1], k = [1], model = ["gan"]', "unknown model 'gan'"),
    ],
)
def test_cells_a_model_cannot_build_are_refused_before_training(tmp_path, grid, problem):
    old = 'data = "sample"\nstages = 1'
    new = f'data = "sample"\ngrid = {{ dataset = ["mnist"], {grid} }}\nstages = 1'
    spec = shipped_with(tmp_path, "iwae-table", old, new)
    with pytest.raises(SpecError, match=problem) as error:
        run_table(spec, options(tmp_path, tier="smoke"), log=lambda line: None)
    assert "\n" not in str(error.value) and str(spec.path) in str(error.value)


def test_lossy_images_are_refused_for_likelihoods(tmp_path):
    spec = shipped_with(
        tmp_path,
        "factorised",
        "[tiers.smoke]   # the committed 192 + 96",
        '[tiers.smoke]\ngrid = { model = ["factorised"], dataset = ["cifar10"],'
        ' init = ["uniform"] }\n# the committed 192 + 96',
    )
    records = run_table(spec, options(tmp_path, tier="smoke", cells="*uniform"), log=lambda _: None)
    assert records[0].status == "skipped" and "lossy" in records[0].reason


def test_preflight_takes_the_shape_from_the_catalog_and_refuses_streamed_data(monkeypatch):
    shapes = []
    monkeypatch.setattr("bench.tasks.likelihood.check_kind", lambda model, c, s: None)
    monkeypatch.setattr(
        "bench.tasks.likelihood.meta_model", lambda name, shape, **kw: shapes.append(shape)
    )
    for name in ("omniglot", "cifar10_lossless"):
        preflight({"dataset": name, "model": "factorised"}, Settings())
    preflight({"dataset": "mnist", "model": "factorised"}, Settings(image_size=32))
    assert shapes == [DATASETS["omniglot"].shape, DATASETS["cifar10_lossless"].shape, (1, 32, 32)]
    in_memory = ", ".join(n for n, d in DATASETS.items() if not d.streamed)
    with pytest.raises(ValueError, match=f"one of {in_memory}, got 'imagenet'"):
        preflight({"dataset": "imagenet", "model": "factorised"}, Settings())


def test_the_naive_sampler_is_timed_on_the_same_batch_from_the_same_seed():
    """sample_s and sample_s_naive are seconds per image of the same work: the naive sampler
    draws the same images as the cached one."""
    calls = []
    model = PixelCNN(shape=(1, 3, 3), levels=2, hidden=3, n_blocks=1, out_hidden=4).eval()
    sample = model.sample

    def recorded(n, generator=None, naive=False):
        calls.append(sample(n, generator=generator, naive=naive))
        return calls[-1]

    model.sample = recorded
    s = Settings(samples=3, time_naive_sampler=True)
    ctx = Context(None, torch.device("cpu"), seed=7, tier="smoke", checkpoint=None)
    out = draw_samples(model, s, ctx, (1, 3, 3), "binary")
    assert out["sample_s"] > 0 and out["sample_s_naive"] > 0
    assert len(calls) == 2 and calls[0].shape == (3, 1, 3, 3)
    assert torch.equal(calls[0], calls[1])


def test_a_models_lr_scale_applies_to_its_group_alone():
    """NICE with s_lr = 10 through the task's optimizer and the training loop: Adam's first step
    moves every parameter by lr * |g| / (|g| + eps) <= its group's rate, so the couplings move by
    at most 1e-3 and s by up to 1e-2 (and does, where its gradient is not tiny)."""
    torch.manual_seed(0)
    model = NICE((1, 4, 4), hidden=8, depth=1, s_lr=10)
    optimizer = optimizer_for(model, Settings(lr=1e-3, adam_eps=1e-12))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    job = Fit(
        model,
        optimizer,
        lambda net, batch: net(batch[0]).mean(),
        TensorDataset(torch.rand(8, 1, 4, 4)),
        batch_size=8,
        epochs=1,
        lr_at=lambda epoch: 1e-3,
        seed=0,
    )
    fit(job, Checkpoint(None))
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved.pop("s") == pytest.approx(1e-2, rel=1e-3)
    assert max(moved.values()) == pytest.approx(1e-3, rel=1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-2]


def test_the_epoch_hook_counts_on_the_subset_with_its_own_draws_and_leaves_the_rest():
    """epoch_units: the model's own count on the first au_epoch_images images with the draws of
    seed + 3, the same every epoch; the global generator and the model's mode as they were."""
    torch.manual_seed(0)
    model = IWAEModel(layers=2, x_dim=12).train()
    x = torch.bernoulli(torch.full((40, 12), 0.4))
    hook = epoch_units(model, x, Settings(au_epoch_images=30, au_samples=6), seed=5)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    found = hook(0)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert found == hook(3)  # one seed: a change between epochs is the model's
    torch.manual_seed(5 + 3)
    with torch.no_grad():
        assert found == {"active_units": model.active_units(x[:30], n_samples=6)}


def test_every_epoch_logs_its_active_units_and_changes_no_metric(tmp_path):
    """A two-layer cell (whose top-layer count draws samples) with the per-epoch pass has the
    metrics and losses of the same cell without it, and each epoch's units in its history."""
    grid = {"dataset": ["mnist"], "layers": [2], "k": [1], "model": ["vae"]}
    runs = {}
    for n in (8, 0):
        path = write_spec(
            tmp_path / f"specs{n}", grid=grid, epochs_per_stage=[3], au_epoch_images=n
        )
        (runs[n],) = run_table(load_spec(path), options(tmp_path / str(n)), log=lambda line: None)
    logged, plain = runs[8], runs[0]
    assert logged.status == plain.status == "ok"
    assert model_metrics(logged.metrics) == model_metrics(plain.metrics)
    drop = ("seconds", "active_units")
    assert [{k: v for k, v in h.items() if k not in drop} for h in logged.history] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in plain.history
    ]
    units = [h["active_units"] for h in logged.history]
    assert len(units) == 3
    assert all(len(u) == 2 and 0 <= u[0] <= 100 and 0 <= u[1] <= 50 for u in units)
    assert all("active_units" not in h for h in plain.history)


@pytest.mark.parametrize("value", [-1, 1.5, True, None])
def test_the_per_epoch_subset_is_a_whole_number_of_images(value):
    with pytest.raises(ValueError, match="au_epoch_images"):
        Settings(au_epoch_images=value)
    assert Settings(au_epoch_images=0).au_epoch_images == 0  # 0: no per-epoch pass
