"""PixelCNN family: training throughput and sampling time, as a fraction of the sgemm rate.

No peer is installed for these models, so each row is ours alone: images/s of CPU time and
the share of the machine's matmul rate that the step's FLOPs reach (convolutions counted by
torch.utils.flop_counter), the number that says how much there is left to gain.
"""

from __future__ import annotations

from typing import Any

import torch

import models

from .runner import Settings, flops_of, interleave, row


def sizes(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {"shape": (1, 8, 8), "batch": 2, "sample_shape": (1, 4, 4), "samples": 1}
    return {"shape": (1, 28, 28), "batch": 32, "sample_shape": (1, 12, 12), "samples": 4}


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


def sampler(name: str, z: dict[str, Any]):
    """`z["samples"]` images from a `name` model's default sampler, as a call."""
    torch.manual_seed(0)
    net = models.build(name, shape=z["sample_shape"], levels=2).eval()
    gen = torch.Generator().manual_seed(0)
    return lambda: net.sample(z["samples"], gen)


def bench_pixelcnn(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    z = sizes(s)
    rows = []
    for name in ("pixelcnn", "gated_pixelcnn"):
        step, sample = train_step(name, z), sampler(name, z)
        t = interleave({"train": step, "sample": sample}, s)
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
        rows.append(
            row(
                f"{name} sample {z['samples']} images {z['sample_shape']}",
                t["sample"],
                None,
                "—",
                items=z["samples"],
                flops=flops_of(sample),
                sgemm=sgemm,
            )
        )
    return rows


BENCHES = {"pixelcnn": bench_pixelcnn}  # name -> its benchmark
