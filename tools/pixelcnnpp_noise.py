"""Where the saturated colour noise in PixelCNN++'s small-tier samples comes from (issue 23).

    python -m tools.pixelcnnpp_noise train --data-dir DATA --out DIR     # 12 min on a free core
    python -m tools.pixelcnnpp_noise analyse --data-dir DATA --out DIR   # DIR/noise.json, 5 min
    python -m tools.pixelcnnpp_noise grids GRID.png... --out FILE.json   # runs' own sample grids

(`-m`, from the repository root, so that this checkout's bench and models are the ones run.)

`train` repeats the small tier's training of PixelCNN++ (`train` says how closely) and keeps
its weights after 1/4, 1/2 and 1 epoch.
`analyse` measures, for each of them, what the issue asks: how often the small-mass fallback of
`logistic_bin_log_prob` fires on test and sampled images, what it costs, the log-scales and
mixture weights behind the noise pixels of samples, and how much of each sample they cover.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import TensorDataset
from torchvision.utils import save_image

import models
from bench import data as datasets
from bench.activations import measure_step
from bench.records import provenance
from bench.train import epoch_batches
from models.pixelcnnpp import (
    logistic_bin_log_prob,
    mixture_terms,
    scale_pixels,
)

FRACTIONS = (0.25, 0.5, 1.0)
SEED = 0
CPU = torch.device("cpu")
TABLE_SAMPLES = (
    Path(__file__).resolve().parents[1]
    / "tables/samples/pixelcnn-cifar10-small-pixelcnnpp-cifar10_lossless.png"
)
WIDE = -1.0  # a log-scale above this is a component wider than a third of [-1, 1]


def load(data_dir: str):
    splits = datasets.load("cifar10_lossless", data_dir, n_train=10000, n_test=1000, seed=SEED)
    return splits.train.tensors[0], splits.test.tensors[0]


def fresh_model():
    torch.manual_seed(SEED)
    return models.build("pixelcnnpp", shape=(3, 32, 32))


def train(data_dir: str, out: Path, steps: int | None) -> None:
    """The likelihood task's training of the small-tier cell, step for step: the same seed,
    the same memory probe before the first step (its forward pass draws dropout masks), the
    same batches. On one CPU thread the epoch's mean loss equals the committed record's."""
    x_train, _ = load(data_dir)
    model = fresh_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    measure_step(lambda: model(x_train[:16].float()).mean(), model.parameters(), CPU)
    model.train()
    total = steps or -(-len(x_train) // 16)
    keep = {max(1, round(f * total)): f for f in FRACTIONS}
    out.mkdir(parents=True, exist_ok=True)
    t0, losses = time.perf_counter(), []
    for step, (batch,) in enumerate(epoch_batches(TensorDataset(x_train), 16, SEED, 0), 1):
        loss = model(batch.float()).mean()
        losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0:
            bpd = loss.item() / (3072 * math.log(2))
            print(f"step {step}/{total} {bpd:.3f} bits/dim {time.perf_counter() - t0:.0f}s")
        if step in keep:
            state = {"step": step, "fraction": keep[step], "mean_loss": sum(losses) / step}
            torch.save(
                {**state, "model": model.state_dict()}, out / f"pixelcnnpp-{keep[step]:g}.pt"
            )
            print(json.dumps(state), flush=True)
        if step >= total:
            break


def exact_bin_log_prob(xs: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log of a logistic's exact mass on the bin of xs, in float64, with no fallback: the
    difference of sigmoids is taken on the side of the mean where it keeps its digits."""
    xs, means, log_scales = xs.double(), means.double(), log_scales.double()
    centred = xs - means
    inv_s = torch.exp(-log_scales)
    plus, minus = inv_s * (centred + 1 / 255), inv_s * (centred - 1 / 255)
    # sigma(a) - sigma(b) = sigma(-b) - sigma(-a): use the pair whose sigmoids are small
    flip = centred > 0
    a, b = torch.where(flip, -minus, plus), torch.where(flip, -plus, minus)
    la, lb = F.logsigmoid(a), F.logsigmoid(b)
    inner = la + torch.log(-torch.expm1(lb - la))
    return torch.where(
        xs < -0.999, F.logsigmoid(plus), torch.where(xs > 0.999, F.logsigmoid(-minus), inner)
    )


def fallback_fires(xs: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Where `logistic_bin_log_prob` takes its small-mass branch (an interior bin whose float32
    difference of sigmoids is at most 1e-5)."""
    inv_s = torch.exp(-log_scales)
    delta = torch.sigmoid(inv_s * (xs - means + 1 / 255)) - torch.sigmoid(
        inv_s * (xs - means - 1 / 255)
    )
    return (delta <= 1e-5) & (xs > -0.999) & (xs < 0.999)


def pixel_terms(model, x: Tensor) -> dict[str, Tensor]:
    """Per pixel of x [B, 3, H, W] (0..255): the model's mixture at that pixel and what each
    component says about the pixel's actual value."""
    with torch.no_grad():
        params = model.params(x)
    log_pi, means, log_scales = mixture_terms(x, params)
    xs = scale_pixels(x)[:, :, None]
    per_channel = logistic_bin_log_prob(xs, means, log_scales)  # [B, C, K, H, W]
    exact = exact_bin_log_prob(xs, means, log_scales)
    fires = fallback_fires(xs, means, log_scales)
    joint = log_pi + per_channel.sum(1)  # [B, K, H, W]
    wide = log_scales.max(1).values > WIDE  # [B, K, H, W]
    return {
        "wide_mass": (log_pi.exp() * wide).sum(1),
        "log_pi": log_pi,
        "log_scales": log_scales,
        "fires": fires,
        "log_p": torch.logsumexp(joint, 1),
        "log_p_exact": torch.logsumexp(log_pi.double() + exact.sum(1), 1),
        "resp": torch.softmax(joint, 1),  # which component explains the pixel
    }


def colour_noise(x: Tensor) -> Tensor:
    """[B, H, W]: pixels with a channel at 0 or 255 and channels at least 128 apart, the
    issue's saturated colour noise (0.06% of the 1,000 test images' pixels)."""
    edge = ((x == 0) | (x == 255)).any(1)
    return edge & (x.max(1).values - x.min(1).values >= 128)


def summary(model, x: Tensor) -> dict:
    t = pixel_terms(model, x)
    noise = colour_noise(x)
    k = t["resp"].argmax(1, keepdim=True)  # the component that explains each pixel best
    pi_k = t["log_pi"].gather(1, k)[:, 0].exp()
    scale_k = t["log_scales"].gather(2, k[:, None].expand(-1, 3, -1, -1, -1))[:, :, 0]
    widest = scale_k.max(1).values  # the widest channel of that component
    fires = t["fires"]
    cost = (t["log_p_exact"] - t["log_p"].double()).flatten(1).sum(1)  # nats per image
    # cascade: is a noise pixel more likely right of or below another one?
    left, up = noise[:, :, :-1], noise[:, :-1]
    out = {
        "images": len(x),
        "bits_per_dim": float(-t["log_p"].flatten(1).sum(1).mean() / (3072 * math.log(2))),
        "noise_pixels": float(noise.float().mean()),
        "noise_pixels_per_image": [round(float(v), 4) for v in noise.flatten(1).float().mean(1)],
        "wide_component_weight": float(t["wide_mass"].mean()),
        "p_noise_right_of_noise": _frac(noise[:, :, 1:], left),
        "p_noise_below_noise": _frac(noise[:, 1:], up),
        "fallback_evaluations": float(fires.float().mean()),
        "pixels_whose_component_uses_fallback": float(
            fires.gather(2, k[:, None].expand(-1, 3, -1, -1, -1)).any(1).float().mean()
        ),
        "fallback_cost_nats_per_image": _spread(cost),
        "fallback_cost_bits_per_dim": float(cost.mean() / (3072 * math.log(2))),
        "clamped_log_scales": float((t["log_scales"] <= -7.0).float().mean()),
    }
    for name, where in (("noise", noise), ("other", ~noise)):
        if where.any():
            out[f"at_{name}_pixels"] = {
                "widest_log_scale_of_component": _quantiles(widest[where]),
                "weight_of_component": _quantiles(pi_k[where]),
                "component_is_wide": float((widest[where] > WIDE).float().mean()),
                "component_is_the_heaviest": float(
                    (k[:, 0] == t["log_pi"].argmax(1))[where].float().mean()
                ),
            }
    return out


def _frac(now: Tensor, before: Tensor) -> float | None:
    n = int(before.sum())
    return float((now & before).sum()) / n if n else None


def _spread(v: Tensor) -> dict[str, float]:
    return {"mean": float(v.mean()), "max": float(v.max())}


def _quantiles(v: Tensor) -> dict[str, float]:
    q = torch.quantile(v.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"q10": float(q[0]), "median": float(q[1]), "q90": float(q[2]), "n": v.numel()}


def grid_images(path: Path) -> Tensor:
    """[4, 3, 32, 32]: the 2 x 2 grid of samples a likelihood run saves (tables/samples/)."""
    with Image.open(path) as image:  # PIL: torchvision 0.29 deprecates its own image decoding
        grid = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float()
    return torch.stack(
        [
            grid[:, 1 + 33 * r : 33 + 33 * r, 1 + 33 * c : 33 + 33 * c]
            for r in (0, 1)
            for c in (0, 1)
        ]
    )


def table_samples() -> Tensor | None:
    """The small tier's run's grid of samples, as images."""
    return grid_images(TABLE_SAMPLES) if TABLE_SAMPLES.exists() else None


def grids(paths: list[Path], out: Path) -> dict:
    """The noise-pixel share of runs' own sample grids (no model needed): whether the noise
    of the small tier's grid is still there after more training."""
    report = {
        **provenance(),
        "command": shlex.join(["python", "-m", __spec__.name, *sys.argv[1:]]),
        "grids": {},
    }
    for path in paths:
        noise = colour_noise(grid_images(path)).float()
        report["grids"][path.name] = {
            "noise_pixels": float(noise.mean()),
            "per_image": [round(float(v), 4) for v in noise.mean((1, 2))],
        }
        print(path.name, json.dumps(report["grids"][path.name]), flush=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def analyse(data_dir: str, out: Path, n_test: int, n_samples: int) -> dict:
    """Each checkpoint's `summary` on test images and on its own samples (seeded as the
    likelihood task seeds its sample grid), written to out/noise.json, the samples to
    out/noise-samples.png (a row per checkpoint)."""
    _, x_test = load(data_dir)
    x_test = x_test[:n_test].float()
    report = {
        **provenance(),
        "command": shlex.join(["python", "-m", __spec__.name, *sys.argv[1:]]),
        "checkpoints": {},
    }
    report["test_noise_pixels"] = float(colour_noise(x_test).float().mean())
    grids = []
    for f in FRACTIONS:
        state = torch.load(out / f"pixelcnnpp-{f:g}.pt", weights_only=True)
        model = fresh_model()
        model.load_state_dict(state["model"])
        model.eval()
        t0 = time.perf_counter()
        samples = model.sample(n_samples, torch.Generator().manual_seed(SEED))
        seconds = (time.perf_counter() - t0) / n_samples
        grids.append(samples)
        entry = {"step": state["step"], "mean_training_loss": state["mean_loss"]}
        entry.update(test=summary(model, x_test), samples=summary(model, samples), sample_s=seconds)
        if f == 1.0 and (table := table_samples()) is not None and n_samples >= 4:
            entry["samples_equal_the_table_grid"] = bool(torch.equal(samples[:4], table))
            entry["table_grid"] = summary(model, table)
        report["checkpoints"][f"{f:g} epoch"] = entry
        print(json.dumps(entry, indent=1), flush=True)
    save_image(torch.cat(grids) / 255, out / "noise-samples.png", nrow=n_samples, padding=1)
    (out / "noise.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "analyse", "grids"])
    p.add_argument("grid", nargs="*", type=Path, help="grids: the sample grids (PNG) to measure")
    p.add_argument("--data-dir", help="train, analyse: the data folder")
    p.add_argument("--out", type=Path, required=True, help="a folder (grids: a JSON file)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default one epoch)")
    p.add_argument("--test", type=int, default=200, help="test images to score")
    p.add_argument("--samples", type=int, default=4, help="images to sample per checkpoint")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.what == "grids":
        if not a.grid:
            p.error("grids: name at least one sample grid (PNG)")
        grids(a.grid, a.out)
        return
    if a.data_dir is None:
        p.error(f"{a.what}: --data-dir is required")
    if a.what == "train":
        train(a.data_dir, a.out, a.steps)
    else:
        analyse(a.data_dir, a.out, a.test, a.samples)


if __name__ == "__main__":
    main()
