"""NICE training step against zuko 1.6.0's NICE, built to the same architecture and weights.

Why zuko among the maintained flow libraries: it is the only one with a NICE class whose
couplings are the paper's, which makes it the closest to models/nice.py. `zuko.flows.NICE`
alternates its coupling masks over the even and odd units (as the paper and ours do), feeds
the coupling network only the units it keeps (x[..., mask]: 392 inputs and 392 outputs on
MNIST, as ours), and takes the paper's additive coupling `zuko.transforms.AdditiveTransform`
as its univariate transform. normflows' additive coupling (MaskedAffineFlow with no scale
network) multiplies by a binary mask instead, so its coupling network reads and writes all 784
units and does twice the first and last layers' work, and it computes a zero log-scale's
exp; nflows' AdditiveCouplingTransform matches as well, but nflows has had no release since
2020 and pulls in tensorboard.

What zuko does not ship is added in zuko's own terms: the paper's diagonal scaling h = exp(s) z
as an UnconditionalTransform of torch's AffineTransform (log-det sum_d s_d), and the standard
logistic prior (Eq. 5) as a small torch Distribution whose log_prob is ours. Before timing, the
two flows' log-likelihoods and gradients on the same batch are checked to agree in float64.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from models.nice import NICE, logistic_log_prob

from .timing import PeerMissing, Settings, flops_of, interleave, missing_row, peer_import, row

AGREE = 1e-10  # float64: the same computation differs by rounding (~1e-15) only


def sizes(s: Settings) -> dict[str, Any]:
    """The nice table's small tier: the paper's MNIST model and the tier's batch of 100."""
    if s.tiny:
        return {"shape": (1, 4, 4), "couplings": 4, "hidden": 8, "depth": 2, "batch": 4}
    return {"shape": (1, 28, 28), "couplings": 4, "hidden": 1000, "depth": 5, "batch": 100}


class StandardLogistic(torch.distributions.Distribution):
    """NICE's prior (Eq. 5) over vectors of `dim` units, for zuko's Flow."""

    arg_constraints: dict = {}
    support = torch.distributions.constraints.real_vector

    def __init__(self, dim: int) -> None:
        super().__init__(event_shape=torch.Size([dim]), validate_args=False)

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        return logistic_log_prob(h)


def _exp_scale(s: torch.Tensor):
    # h = exp(s) * z,  log |det| = sum_d s_d   (Section 3.3)
    return torch.distributions.AffineTransform(0.0, s.exp(), event_dim=1)


def zuko_nice(zuko, ours: NICE, z: dict[str, Any]) -> nn.Module:
    """zuko's NICE with our couplings' weights, our scaling s and our prior."""
    flow = zuko.flows.NICE(
        ours.dim,
        transforms=z["couplings"],
        univariate=zuko.transforms.AdditiveTransform,
        shapes=[()],
        hidden_features=[z["hidden"]] * z["depth"],
    )
    couplings = list(flow.transform.transforms)
    for lazy, layer in zip(couplings, ours.couplings, strict=True):
        # zuko's mask (units i % 2 == k % 2 kept) is ours: the same units in, the same out
        assert torch.equal(lazy.mask.nonzero().squeeze(-1), layer.keep)
        lazy.hyper.load_state_dict(layer.m.state_dict())
    scale = zuko.lazy.UnconditionalTransform(_exp_scale, ours.s.detach().clone())
    flow.transform = zuko.lazy.LazyComposedTransform(*couplings, scale)
    flow.base = zuko.lazy.UnconditionalDistribution(StandardLogistic, ours.dim)
    return flow


def models(z: dict[str, Any]) -> tuple[dict[str, nn.Module], str]:
    """Ours (the paper's start, s = 0) and zuko's copy, and why zuko's is absent ("" if not)."""
    torch.manual_seed(0)
    ours = NICE(z["shape"], z["couplings"], z["hidden"], z["depth"])
    try:
        zuko = peer_import("zuko")
    except PeerMissing as e:
        return {"ours": ours}, str(e)
    return {"ours": ours, "zuko": zuko_nice(zuko, ours, z)}, ""


def log_likelihood(name: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log p(x) per example, [B], for inputs [B, C, H, W]."""
    if name == "ours":
        return net.log_prob(x)
    return net().log_prob(x.flatten(1))


def _coupling_params(name: str, net: nn.Module) -> list[nn.Parameter]:
    """Every parameter, couplings in order then s, whichever library holds them."""
    if name == "ours":
        return [*net.couplings.parameters(), net.s]
    lazies = list(net.transform.transforms)
    return [*(p for t in lazies[:-1] for p in t.hyper.parameters()), *lazies[-1].parameters()]


def agreement(nets: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """Largest |ours - zuko| of log p(x) and of the gradients of the mean -log p(x), in float64
    on copies with a random s (so the scaling is exercised), over the largest |ours|."""
    s = 0.1 * torch.randn(nets["ours"].dim, generator=torch.Generator().manual_seed(1))
    got = {}
    for name in ("ours", "zuko"):
        net = copy.deepcopy(nets[name]).double()
        params = _coupling_params(name, net)
        with torch.no_grad():
            params[-1].copy_(s)
        logp = log_likelihood(name, net, x.double())
        (-logp.mean()).backward()
        grads = torch.cat([p.grad.flatten() for p in params])
        got[name] = {"loglik": logp.detach(), "grads": grads}
    ours, zuko = got["ours"], got["zuko"]
    return {k: float((ours[k] - zuko[k]).abs().max() / ours[k].abs().max()) for k in ours}


def train_step(name: str, net: nn.Module, x: torch.Tensor):
    """One Adam step on the mean -log p(x) (the nice table's optimizer: lr 1e-3, eps 1e-4)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        (-log_likelihood(name, net, x).mean()).backward()
        opt.step()

    return step


def bench_nice(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    z = sizes(s)
    case = (
        f"NICE step: {z['couplings']} couplings of {z['depth']}x{z['hidden']} ReLU,"
        f" x [{z['batch']}, {', '.join(map(str, z['shape']))}]"
    )
    torch.manual_seed(1)
    x = torch.rand(z["batch"], *z["shape"])  # dequantized pixels in [0, 1), as the table's
    nets, missing = models(z)
    if missing:
        return [missing_row(case, "zuko", missing)]
    diffs = agreement(nets, x)
    if max(diffs.values()) > AGREE:  # time only the same computation
        shown = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        return [missing_row(case, "zuko", f"zuko disagrees with ours in float64 ({shown})")]
    fns = {name: train_step(name, net, x) for name, net in nets.items()}
    flops = flops_of(train_step("ours", copy.deepcopy(nets["ours"]), x))
    t = interleave(fns, s)
    return [
        row(
            case,
            t["ours"],
            t["zuko"],
            "zuko",
            items=z["batch"],
            flops=flops,
            sgemm=sgemm,
            agreement_float64=diffs,
        )
    ]


BENCHES = {"nice": bench_nice}  # name -> its benchmark
