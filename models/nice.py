"""NICE: Non-linear Independent Components Estimation (Dinh, Krueger, Bengio 2014, arXiv 1410.8516).

A bijection f maps data x to a code h with a factorised prior, so the likelihood is exact by the
change of variables (Eq. 2):

    log p_X(x) = log p_H(f(x)) + log |det df/dx|.

f stacks additive coupling layers (Section 3.2). Each splits its input into (x1, x2) and adds a
function of the half it leaves unchanged to the other half, so its Jacobian is unit triangular
(log-det 0) and its inverse costs one evaluation of the coupling function m:

    z1 = x1,  z2 = x2 + m(x1)          x1 = z1,  x2 = z2 - m(z1).

A diagonal scaling h = exp(s) * z ends f (Section 3.3) and carries the whole log-det, sum_d s_d.

The MNIST model of Section 5.1 / Appendix: four coupling layers alternating between the even and
the odd pixel indices, each m a ReLU MLP of five hidden layers of 1000 units with a linear output,
and the standard logistic prior (Eq. 5). Those are the defaults here: 19,158,352 parameters for
1x28x28. Inputs are the paper's dequantized data rescaled to [0, 1); the model returns -log p(y)
of those values, and the harness adds the rescaling's log-determinant D ln 256.

Two departures from the paper, both off by default, let a CPU budget of one epoch reach the
paper's regime. The paper starts from s = 0; a dequantized MNIST pixel that is always black
spreads over 1/256, so its s_d must grow to about ln 256 + ln(pi / sqrt 3) before the likelihood
is good, and Adam moves s by about lr per step. `init = "data"` pushes a batch through the
couplings at init and starts every code centred with the prior's spread, through the couplings'
output biases and s (no new parameters), and `s_lr` multiplies the learning rate of s alone
(`param_groups`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def logistic_log_prob(h: Tensor) -> Tensor:
    """log p_H(h) of the standard logistic, summed over the last dimension."""
    # log p_H(h) = -sum_d [ log(1 + e^{h_d}) + log(1 + e^{-h_d}) ]   (Eq. 5)
    return -(F.softplus(h) + F.softplus(-h)).sum(-1)


def coupling_mlp(in_dim: int, out_dim: int, hidden: int, depth: int) -> nn.Sequential:
    """The coupling function m: `depth` ReLU layers of `hidden` units, then a linear output."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class AdditiveCoupling(nn.Module):
    """One additive coupling layer: the units at `keep` pass through, the units at `shift` get
    m(x_keep) added. Volume preserving, so it contributes nothing to the log-det."""

    def __init__(self, dim: int, parity: int, hidden: int, depth: int) -> None:
        super().__init__()
        idx = torch.arange(dim)
        self.register_buffer("keep", idx[parity::2], persistent=False)  # odd or even units
        self.register_buffer("shift", idx[1 - parity :: 2], persistent=False)
        self.m = coupling_mlp(len(self.keep), len(self.shift), hidden, depth)

    def forward(self, x: Tensor) -> Tensor:
        z = x.clone()
        # z1 = x1,  z2 = x2 + m(x1)
        z[:, self.shift] = x[:, self.shift] + self.m(x[:, self.keep])
        return z

    def inverse(self, z: Tensor) -> Tensor:
        x = z.clone()
        # x1 = z1,  x2 = z2 - m(z1)
        x[:, self.shift] = z[:, self.shift] - self.m(z[:, self.keep])
        return x


class NICE(nn.Module):
    """Coupling layers alternating over even/odd pixels, a diagonal scaling, a logistic prior.

    shape: (C, H, W) of the inputs. couplings: number of coupling layers (paper: 4).
    hidden, depth: width and number of hidden ReLU layers of each coupling function (paper: 1000,
    5). init: "zero" starts the scaling at s = 0, the identity (the paper); "data" sets it from
    the data in `init_from_batch`. s_lr: the learning rate of s as a multiple of the others'
    (paper: 1).
    """

    input_kind = "continuous"
    capabilities = frozenset({"param_groups", "init_from_batch", "sample"})  # bench/contracts.py
    INITS = ("zero", "data")

    def __init__(
        self,
        shape: tuple[int, int, int],
        couplings: int = 4,
        hidden: int = 1000,
        depth: int = 5,
        init: str = "zero",
        s_lr: float = 1.0,
    ) -> None:
        super().__init__()
        if couplings < 1 or depth < 0 or hidden < 1:
            raise ValueError(
                f"need couplings >= 1, depth >= 0, hidden >= 1, got {couplings}, {depth}, {hidden}"
            )
        if init not in self.INITS:
            raise ValueError(f"init must be one of {', '.join(self.INITS)}, got {init!r}")
        if isinstance(s_lr, bool) or not isinstance(s_lr, int | float) or not s_lr > 0:
            raise ValueError(f"s_lr is a positive multiple of the learning rate, got {s_lr!r}")
        self.init, self.s_lr = init, float(s_lr)
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)
        if self.dim < 2:
            raise ValueError(f"a coupling needs at least two dimensions, got shape {shape}")
        self.couplings = nn.ModuleList(
            AdditiveCoupling(self.dim, i % 2, hidden, depth) for i in range(couplings)
        )
        self.s = nn.Parameter(torch.zeros(self.dim))

    def param_groups(self) -> list[dict]:
        """The optimizer's groups: the couplings at the tier's learning rate, s at s_lr times it
        (the harness multiplies each group's rate by its `lr_scale`)."""
        return [
            {"params": list(self.couplings.parameters())},
            {"params": [self.s], "lr_scale": self.s_lr},
        ]

    @torch.no_grad()
    def init_from_batch(self, x: Tensor) -> None:
        """With init = "data", start every code h_d of the batch x (model inputs) as the prior
        is: each coupling's output bias centres the units it shifts, and s gives them the
        standard logistic's standard deviation pi / sqrt 3. Only those biases and s change, so f
        stays exactly invertible and its log-det is still sum_d s_d."""
        if self.init != "data":
            return
        z = x.flatten(1).to(self.s.dtype)
        for layer in self.couplings:
            z = layer(z)
            mean = z[:, layer.shift].mean(0)
            layer.m[-1].bias -= mean  # m's output layer is linear: this shifts z2 by -mean
            z[:, layer.shift] -= mean
        spread = z.std(0).clamp_min(torch.finfo(z.dtype).eps)  # a constant unit would give inf
        # s_d = ln(pi / sqrt 3) - ln sd_d(z): unit d of exp(s) * z has the prior's spread
        self.s.copy_(math.log(math.pi / math.sqrt(3)) - torch.log(spread))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """h = f(x), [B, D], and log |det df/dx|, [B]."""
        z = x.flatten(1)
        for layer in self.couplings:
            z = layer(z)
        # h = exp(s) * z,  log |det df/dx| = sum_d s_d   (the couplings add 0)
        h = torch.exp(self.s) * z
        return h, self.s.sum().expand(len(h))

    def inverse(self, h: Tensor) -> Tensor:
        """x = f^-1(h) for codes h, [B, D], as inputs [B, C, H, W]."""
        z = h * torch.exp(-self.s)
        for layer in reversed(self.couplings):
            z = layer.inverse(z)
        return z.reshape(len(h), *self.shape)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) per example, [B]."""
        h, log_det = self.encode(x)
        # log p_X(x) = log p_H(f(x)) + log |det df/dx|   (Eq. 2)
        return logistic_log_prob(h) + log_det

    def forward(self, x: Tensor) -> Tensor:
        """The training loss: exact -log p(x) per example in nats, [B]."""
        return -self.log_prob(x)

    @torch.no_grad()
    def nll(self, x: Tensor) -> Tensor:
        """Exact -log p(x) per example in nats, [B] float64; no sampling, so no k."""
        return -self.log_prob(x).double()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws x = f^-1(h), h ~ logistic, [n, C, H, W].

        h = log u - log(1 - u) with u uniform. torch.rand gives multiples of 2^-53 in [0, 1) in
        float64; adding 2^-54 keeps u strictly inside (0, 1), so every h is finite. The samples
        are not clamped: the density extends beyond [0, 1), so some may fall outside it.
        """
        p = self.s
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64, device=p.device)
        u = u + 2.0**-54
        # h = F^-1(u) = log u - log(1 - u)   (inverse CDF of the standard logistic)
        h = (torch.log(u) - torch.log1p(-u)).to(p.dtype)
        return self.inverse(h)
