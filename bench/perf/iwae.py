"""IWAE training step and k = 5000 NLL against pythae 0.1.2 and a plain batched reference.

Every contender gets its own copy of the same weights (and its own Adam), so they differ only
in how the step is computed. pythae's IWAE takes our encoder and decoder wrapped in its
BaseEncoder/BaseDecoder (log-variance = 2 log sigma; the decoder returns sigmoid(logits), as its
"bce" loss wants), and has one stochastic layer only. The plain reference is the textbook
batched form of the same bound (what models/iwae.py computed before it was profiled).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from typing import Any

import torch
import torch.nn.functional as F

from models.iwae import IWAE, LOG_2PI

from .timing import (
    PeerMissing,
    Settings,
    flops_of,
    interleave,
    missing_row,
    peer_import,
    row,
)

X_DIM = 784


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    """Binary 784-pixel images with per-pixel rates like MNIST's (mostly dark, some bright)."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(X_DIM, generator=g) ** 3
    return (torch.rand(n, X_DIM, generator=g) < rates).float()


def model(layers: int, k: int, seed: int = 0) -> IWAE:
    torch.manual_seed(seed)
    m = IWAE(layers, x_dim=X_DIM, k=k)
    m.set_output_bias(binary_images(1000, seed + 1).mean(0))
    return m


def _textbook_gaussian(z, mu, sigma):
    return -0.5 * (((z - mu) / sigma) ** 2 + 2 * torch.log(sigma) + LOG_2PI).sum(-1)


def reference_log_weights(m: IWAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The plain batched log w, [k, B]: every factor written out as its density."""
    mu1, sigma1 = m.q_z1(x)
    z1 = mu1 + sigma1 * torch.randn(k, *mu1.shape)
    log_q = _textbook_gaussian(z1, mu1, sigma1)
    if m.layers == 1:
        log_prior = -0.5 * (z1**2 + LOG_2PI).sum(-1)
    else:
        mu2, sigma2 = m.q_z2(z1)
        z2 = mu2 + sigma2 * torch.randn_like(mu2)
        log_q = log_q + _textbook_gaussian(z2, mu2, sigma2)
        log_prior = _textbook_gaussian(z1, *m.p_z1(z2)) - 0.5 * (z2**2 + LOG_2PI).sum(-1)
    logits = m.p_x(z1)
    return (x * logits - F.softplus(logits)).sum(-1) + log_prior - log_q


def pythae_iwae(m: IWAE, k: int):
    """pythae's IWAE around a copy of `m`'s one-layer encoder and decoder."""
    peer_import("pythae")
    from pythae.models import IWAE as PythaeIWAE
    from pythae.models import IWAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, q):
            super().__init__()
            self.q = q

        def forward(self, x):
            mu, log_sigma = self.q.mu_log_sigma(x.flatten(1))
            return ModelOutput(embedding=mu, log_covariance=2 * log_sigma)

    class Decoder(BaseDecoder):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.p(z)))

    config = IWAEConfig(
        input_dim=(1, 28, 28), latent_dim=50, reconstruction_loss="bce", number_samples=k
    )
    c = copy.deepcopy(m)
    return PythaeIWAE(config, encoder=Encoder(c.q_z1), decoder=Decoder(c.p_x))


def _step(params, loss_fn):
    opt = torch.optim.Adam(list(params), lr=1e-3, eps=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return step


def train_steps(layers: int, k: int, batch: int) -> tuple[dict, dict[str, str]]:
    """The training step of each contender, and why a peer is absent."""
    ours = model(layers, k)
    ref = copy.deepcopy(ours)
    x = binary_images(batch, seed=2)
    fns = {
        "ours": _step(ours.parameters(), lambda: ours.loss(x, k, "iwae")),
        "reference": _step(
            ref.parameters(),
            lambda: -(torch.logsumexp(reference_log_weights(ref, x, k), 0) - math.log(k)).mean(),
        ),
    }
    missing = {}
    if layers == 1:
        try:
            peer = pythae_iwae(ours, k)
            fns["pythae"] = _step(peer.parameters(), lambda: peer({"data": x}).loss)
        except PeerMissing as e:
            missing["pythae"] = str(e)
    else:
        missing["pythae"] = "pythae 0.1.2's IWAE has one stochastic layer only"
    return fns, missing


def bench_train(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    ks, batches, layer_set = ((1, 5, 50), (20, 100), (1, 2)) if not s.tiny else ((1, 3), (4,), (1,))
    rows = []
    for layers in layer_set:
        for batch in batches:
            for k in ks:
                case = f"train layers={layers} k={k} batch={batch}"
                fns, missing = train_steps(layers, k, batch)
                flops = flops_of(fns["ours"])
                t = interleave(fns, s)
                for peer in ("pythae", "reference"):
                    if peer in missing:
                        rows.append(missing_row(case, peer, missing[peer]))
                    else:
                        rows.append(
                            row(
                                case,
                                t["ours"],
                                t[peer],
                                peer,
                                items=batch,
                                flops=flops,
                                sgemm=sgemm,
                            )
                        )
    return rows


def nll_sizes(s: Settings) -> dict[str, Any]:
    if s.tiny:
        return {
            "k": 20,
            "images": 2,
            "chunks": (5, 20),
            "peer_batches": (10,),
            "sweep_images": 2,
            "sweep_chunks": (5, 10, 20),
            "sweep_rounds": 1,
        }
    return {
        "k": 5000,
        "images": 10 if s.quick else 20,  # against pythae, whose get_nll goes image by image
        "chunks": (250, 1000),  # x 20 images: the rows of chunk 50 and 200 at 100 images
        "peer_batches": (100, 1000),
        "sweep_images": 100,  # the IWAE spec's nll_batch
        "sweep_chunks": (10, 25, 50, 100, 250, 1000),
        "sweep_rounds": 1 if s.quick else 3,
    }


def trained_model(steps: int) -> IWAE:
    """A one-layer IWAE after `steps` Adam steps (k = 5, batch 100) on binary_images: at random
    weights q fits the posterior so badly that two k = 5000 estimates differ by tenths of a
    nat, which would hide the 0.1-nat agreement being checked."""
    m = model(1, 5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, eps=1e-4)
    data = binary_images(1000, seed=5)
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        m.loss(data[(i % 10) * 100 : (i % 10 + 1) * 100], 5, "iwae").backward()
        opt.step()
    return m


def bench_nll(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    """Ours against pythae's get_nll on the same weights and images (the value difference in
    nats), then ours alone over chunk sizes at the spec's 100 images per call, each chunk's
    peak memory from a fresh process: the measurement behind the recommended nll_chunk."""
    z = nll_sizes(s)
    m = trained_model(steps=20 if s.tiny else 300).eval()
    k = z["k"]
    x = binary_images(z["images"], seed=3)
    values: dict[str, float] = {}

    def ours(chunk, images):
        def run():
            values[f"ours-{chunk}"] = float(m.nll(images, k=k, chunk=chunk).mean())

        return run

    fns = {f"ours chunk={c}": ours(c, x) for c in z["chunks"]}
    rows, peer = [], None
    try:
        peer = pythae_iwae(m, 1).eval()

        def theirs(batch):
            def run():
                with torch.no_grad():  # as shipped it also records autograd graphs
                    nll = -float(peer.get_nll(x, n_samples=k, batch_size=batch))
                values[f"pythae-{batch}"] = nll

            return run

        for b in z["peer_batches"]:
            fns[f"pythae batch={b}"] = theirs(b)
    except PeerMissing as e:
        rows.append(missing_row(f"nll k={k}", "pythae", str(e)))
    flops = {n: flops_of(fn) for n, fn in fns.items() if n.startswith("ours")}
    t = interleave(fns, s)
    same_noise = {b: same_noise_diff(m, peer, x, k, b) for b in z["peer_batches"]} if peer else {}
    for c in z["chunks"]:
        for other in [n for n in t if n.startswith("pythae")]:
            batch = int(other.split("=")[1])
            diff = {
                "mean_nll_ours": values[f"ours-{c}"],
                "mean_nll_peer": values[f"pythae-{batch}"],
                "same_noise": same_noise[batch],
            }
            rows.append(
                row(
                    f"nll k={k} chunk={c}, {z['images']} images",
                    t[f"ours chunk={c}"],
                    t[other],
                    other,
                    items=z["images"],
                    flops=flops[f"ours chunk={c}"],
                    sgemm=sgemm,
                    value_diff_nats=diff,
                )
            )
    return rows + chunk_sweep(s, z, m, sgemm)


def same_noise_diff(m: IWAE, peer, x: torch.Tensor, k: int, batch: int) -> dict[str, float]:
    """Ours minus pythae's NLL per image on the same importance samples, in nats.

    Two k = 5000 estimates with different samples differ by their Monte Carlo noise (tenths of
    a nat here). With one image per call, a chunk equal to pythae's batch and the same seed,
    both draw the same standard normals in the same order, so what is left is arithmetic."""
    diffs = []
    for i in range(len(x)):
        torch.manual_seed(100 + i)
        ours = float(m.nll(x[i : i + 1], k=k, chunk=batch))
        torch.manual_seed(100 + i)
        with torch.no_grad():
            theirs = -float(peer.get_nll(x[i : i + 1], n_samples=k, batch_size=batch))
        diffs.append(ours - theirs)
    return {"mean": sum(diffs) / len(diffs), "max_abs": max(abs(d) for d in diffs)}


def chunk_sweep(s: Settings, z: dict[str, Any], m: IWAE, sgemm: float) -> list[dict[str, Any]]:
    """Each chunk against the recommended one: the smallest-memory chunk within 2% of the
    fastest median CPU time."""
    x = binary_images(z["sweep_images"], seed=4)
    k = z["k"]
    fns = {c: (lambda c=c: m.nll(x, k=k, chunk=c)) for c in z["sweep_chunks"]}
    sweep = Settings(quick=s.quick, rounds=z["sweep_rounds"], min_sample_s=0.0, tiny=s.tiny)
    t = interleave({str(c): fn for c, fn in fns.items()}, sweep)
    cpu = {c: t[str(c)].medians()["cpu_s"] for c in fns}
    mem = {c: nll_memory(c, k, z["sweep_images"]) for c in fns}
    near = [c for c in fns if cpu[c] <= 1.02 * min(cpu.values())]
    best = min(near, key=lambda c: mem[c].get("peak_bytes") or float("inf"))
    return [
        row(
            f"nll chunk={c} vs chunk={best}, {z['sweep_images']} images",
            t[str(c)],
            t[str(best)],
            f"ours chunk={best}",
            items=z["sweep_images"],
            chunk=c,
            memory=mem[c],
            recommended=c == best,
        )
        for c in fns
    ]


def nll_memory(chunk: int, k: int, batch: int) -> dict[str, Any]:
    """Peak resident bytes that `IWAE.nll` adds for `batch` images at `chunk`, measured in a
    fresh process with glibc returning freed memory (MALLOC_*), so the peak is the chunk's."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    args = [sys.executable, "-m", "bench.perf.iwae", json.dumps([chunk, min(k, 2 * chunk), batch])]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_probe(chunk: int, k: int, batch: int) -> dict[str, Any]:
    from bench.activations import peak_rss_bytes, reset_peak_rss, rss_bytes

    torch.set_num_threads(1)
    m = model(1, 1).eval()
    x = binary_images(batch, seed=3)
    m.nll(x, k=min(k, chunk), chunk=chunk)  # warm-up: allocator and thread pools
    before = rss_bytes()
    if not reset_peak_rss():
        return {"peak_bytes": None, "why": "cannot reset the peak RSS here"}
    m.nll(x, k=k, chunk=chunk)
    return {"peak_bytes": peak_rss_bytes() - before, "images": batch}


BENCHES = {"iwae-train": bench_train, "iwae-nll": bench_nll}  # name -> its benchmark


if __name__ == "__main__":
    chunk_, k_, batch_ = json.loads(sys.argv[1])
    print(json.dumps(_memory_probe(chunk_, k_, batch_)))
