"""PixelCNN family: training throughput, and each model's cached sampler against its naive one.

No peer is installed for these models. The training rows are ours alone: images/s of CPU time
and the share of the machine's matmul rate that the step's FLOPs reach (convolutions counted by
torch.utils.flop_counter), the number that says how much there is left to gain. The sampler rows
time the cached sampler against the naive one (a full pass per sub-pixel or pixel) of the same
model on the same batch from the same seed, which draws the same images: the same work both
ways. They use the small tier of pixelcnn-cifar10 (its models, 32x32x3 images, its batch of
samples); one naive batch takes minutes, so they run 3 rounds, not 7 (about 30 minutes in all on
one thread). Quick mode samples 8x8 images instead, a check that it runs, not a ratio to quote.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

import models

from ..spec import get_spec
from .timing import Settings, flops_of, interleave, row

SAMPLERS = ("pixelcnn", "gated_pixelcnn", "pixelcnnpp", "pixelsnail")
SAMPLER_ROUNDS = 3  # one naive batch of 32x32x3 images takes 1-3 minutes on one thread


def sizes(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"shape": (1, 8, 8), "batch": 2, "tier": "smoke", "sample_shape": (3, 4, 4)}
    if s.quick:
        return {"shape": (1, 28, 28), "batch": 32, "tier": "small", "sample_shape": (3, 8, 8)}
    return {"shape": (1, 28, 28), "batch": 32, "tier": "small", "sample_shape": (3, 32, 32)}


def train_step(name: str, z: dict[str, Any]):
    """One Adam step of a seeded `name` model on a fixed binary batch, as a call."""
    torch.manual_seed(0)
    net = models.build(name, shape=z["shape"], levels=2).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = (torch.rand(z["batch"], *z["shape"]) < 0.3).float()

    def step():
        opt.zero_grad(set_to_none=True)
        net(x).mean().backward()
        opt.step()

    return step


def bench_pixelcnn(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    z = sizes(s)
    rows = []
    for name in ("pixelcnn", "gated_pixelcnn"):
        step = train_step(name, z)
        t = interleave({"train": step}, s)
        rows.append(
            row(
                f"{name} train step, batch {z['batch']}, {z['shape']}",
                t["train"],
                None,
                "—",
                items=z["batch"],
                flops=flops_of(step),
                sgemm=sgemm,
            )
        )
    rows += bench_samplers(s, z)
    return rows


def sampler(name: str, z: dict[str, Any], n: int, naive: bool = False):
    """n images from the tier's seeded `name` model, from the same seed every call, as a call."""
    tier = get_spec("pixelcnn-cifar10").settings(z["tier"])
    torch.manual_seed(0)
    kwargs = tier.get("model_kwargs", {}).get(name, {})
    model = models.build(name, shape=z["sample_shape"], **kwargs).eval()
    return lambda: model.sample(n, torch.Generator().manual_seed(0), naive=naive)


def bench_samplers(s: Settings, z: dict[str, Any]) -> list[dict[str, Any]]:
    """Cached against naive sampling, interleaved, for each model of the tier."""
    n = get_spec("pixelcnn-cifar10").settings(z["tier"]).get("samples", 1)
    rounds = replace(s, rounds=min(s.rounds, SAMPLER_ROUNDS))
    rows = []
    for name in SAMPLERS:
        t = interleave({"naive": sampler(name, z, n, True), "cached": sampler(name, z, n)}, rounds)
        rows.append(
            row(
                f"{name} sample {n} images {z['sample_shape']}, cached",
                t["cached"],
                t["naive"],
                "naive sampler",
                items=n,
                note=f"{z['tier']}-tier model; {len(t['cached'].wall)} rounds",
            )
        )
    return rows


BENCHES = {"pixelcnn": bench_pixelcnn}  # name -> its benchmark
