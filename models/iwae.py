"""Importance Weighted Autoencoders (Burda, Grosse, Salakhutdinov 2015, arXiv 1509.00519).

The VAE and the IWAE share one model; only the training bound differs (Section 3):

    L_k(x) = E_{z_1..z_k ~ q(z|x)} [ log (1/k) sum_i w_i ],   w_i = p(x, z_i) / q(z_i | x),

which the IWAE maximises directly, while the VAE with k samples averages k ELBO terms (1/k) sum_i
log w_i. Both equal the ELBO at k = 1; L_k never decreases in k and tends to log p(x) (Theorem 1).

Architecture (Section 5, MNIST): Gaussian stochastic layers with diagonal covariance whose mean
is linear and whose standard deviation is exp of a linear map of a two-layer tanh MLP; a Bernoulli
p(x|z) with logits from a two-layer tanh MLP; prior N(0, I) on the top layer.
    one stochastic layer:  784 -200-200- 50
    two stochastic layers: 784 -200-200- 100 -100-100- 50
Weights use the Glorot & Bengio uniform heuristic, biases start at zero (as the authors' code).

The module holds the model, the bounds and the estimators; training and data live in the harness.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """log N(z; mu, diag(sigma^2)) summed over the last dimension."""
    # log N = -1/2 sum_j [ ((z_j - mu_j) / sigma_j)^2 + 2 log sigma_j + log 2 pi ]
    return -0.5 * (((z - mu) / sigma) ** 2 + 2 * torch.log(sigma) + LOG_2PI).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: the prior of the top stochastic layer."""
    # log N(z; 0, I) = -1/2 sum_j [ z_j^2 + log 2 pi ]
    return -0.5 * (z**2 + LOG_2PI).sum(-1)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over the last dimension; x broadcasts."""
    # log p(x|z) = sum_d [ x_d l_d - log(1 + exp(l_d)) ]
    return (x * logits - F.softplus(logits)).sum(-1)


def log_mean_exp_chunked(log_w_fn: Callable[[int], Tensor], k: int, chunk: int) -> Tensor:
    """log (1/k) sum_{i=1}^k w_i with the k log-weights drawn `chunk` rows at a time.

    `log_w_fn(n)` returns n fresh log-weights per item, shape [n, B]. Memory is bounded by one
    chunk; the per-chunk log-sum-exps are combined in float64 so that k = 5000 terms lose nothing.
    The last chunk is smaller when chunk does not divide k: exactly k weights are always used.
    """
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be positive, got k={k}, chunk={chunk}")
    parts = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        log_w = log_w_fn(n)
        if log_w.shape[0] != n:
            raise ValueError(f"log_w_fn({n}) returned {log_w.shape[0]} rows")
        parts.append(torch.logsumexp(log_w.double(), dim=0))
    # log (1/k) sum_i w_i = logsumexp_chunks( logsumexp_{i in chunk} log w_i ) - log k
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)


def active_units_from_means(means: Tensor, threshold: float = 0.01) -> int:
    """Number of units u with Cov_x(E_q[z_u | x]) > threshold (Section 5.2).

    `means` is [N, D]: the posterior mean of each unit for each of N data points. The variance
    over the data is the population variance (the authors' code uses np.var), in float64.
    """
    return int((means.double().var(dim=0, correction=0) > threshold).sum())


class GaussianMLP(nn.Module):
    """A diagonal Gaussian over `out_dim` units given the input: two tanh layers, then
    mu = linear(h) and sigma = exp(linear(h)), so that sigma is positive without a clamp."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.h = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.mu = nn.Linear(hidden, out_dim)
        self.log_sigma = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.h(x)
        return self.mu(h), torch.exp(self.log_sigma(h))


class BernoulliMLP(nn.Module):
    """Bernoulli logits over `out_dim` binary units: two tanh layers, then a linear output."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.h = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.logits = nn.Linear(hidden, out_dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.logits(self.h(z))


class IWAE(nn.Module):
    """The VAE/IWAE model of Table 1 with one or two stochastic layers.

    One layer:  q(z1|x), p(x|z1), p(z1) = N(0, I).
    Two layers: q(z1|x) q(z2|z1), p(x|z1) p(z1|z2), p(z2) = N(0, I).
    """

    input_kind = "binary"  # x in {0, 1}: the likelihood task binarizes the images for it

    def __init__(self, layers: int = 1, x_dim: int = 784, k: int = 1, objective: str = "iwae"):
        super().__init__()
        if layers not in (1, 2):
            raise ValueError(f"layers must be 1 or 2, got {layers}")
        if objective not in ("vae", "iwae") or k < 1:
            raise ValueError(f"objective must be 'vae' or 'iwae' and k >= 1, got {objective}, {k}")
        self.layers = layers
        self.x_dim = x_dim
        self.k, self.objective = k, objective  # the training bound that forward(x) returns
        z1_dim = 50 if layers == 1 else 100
        self.q_z1 = GaussianMLP(x_dim, 200, z1_dim)
        self.p_x = BernoulliMLP(z1_dim, 200, x_dim)
        if layers == 2:
            self.q_z2 = GaussianMLP(z1_dim, 100, 50)
            self.p_z1 = GaussianMLP(50, 100, z1_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def init_from_data(self, x_uint8: Tensor) -> None:
        """The likelihood task's hook: start p(x|z) at the training images' mean intensity."""
        self.set_output_bias(x_uint8.flatten(1).float().mean(0) / 255)

    @torch.no_grad()
    def set_output_bias(self, mean_x: Tensor) -> None:
        """Start p(x|z) at the data's marginal: bias = logit(mean pixel), clipped to [0.001, 0.999]
        as in the authors' code, so that early training does not spend steps learning it."""
        p = mean_x.clamp(0.001, 0.999)
        self.p_x.logits.bias.copy_(torch.log(p) - torch.log1p(-p))

    def log_weights(self, x: Tensor, k: int) -> Tensor:
        """log w_i = log p(x, z_i) - log q(z_i | x) for k reparameterised samples: [k, B]."""
        mu1, sigma1 = self.q_z1(x)
        # z1 = mu + sigma * eps, eps ~ N(0, I): k samples per image
        z1 = mu1 + sigma1 * torch.randn((k, *mu1.shape), dtype=mu1.dtype, device=mu1.device)
        log_q = gaussian_log_prob(z1, mu1, sigma1)
        if self.layers == 1:
            log_prior = standard_normal_log_prob(z1)
        else:
            mu2, sigma2 = self.q_z2(z1)
            z2 = mu2 + sigma2 * torch.randn_like(mu2)
            # log q(z1, z2 | x) = log q(z1|x) + log q(z2|z1)
            log_q = log_q + gaussian_log_prob(z2, mu2, sigma2)
            # log p(z1, z2) = log p(z1|z2) + log p(z2)
            log_prior = gaussian_log_prob(z1, *self.p_z1(z2)) + standard_normal_log_prob(z2)
        # log w = log p(x|z1) + log p(z) - log q(z|x)
        return bernoulli_log_prob(x, self.p_x(z1)) + log_prior - log_q

    def loss(self, x: Tensor, k: int, objective: str) -> Tensor:
        """The negative training bound, averaged over the batch."""
        return self.negative_bound(x, k, objective).mean()

    def negative_bound(self, x: Tensor, k: int, objective: str) -> Tensor:
        """The negative training bound of each image, [B] (x may be [B, D] or [B, C, H, W])."""
        log_w = self.log_weights(x.flatten(1), k)
        if objective == "vae":
            # L_VAE = (1/k) sum_i log w_i   (the ELBO of Section 2, averaged over k draws)
            bound = log_w.mean(dim=0)
        elif objective == "iwae":
            # L_k = log (1/k) sum_i w_i   (the k-sample bound of Section 3)
            bound = torch.logsumexp(log_w, dim=0) - math.log(k)
        else:
            raise ValueError(f"objective must be 'vae' or 'iwae', got {objective!r}")
        return -bound

    def forward(self, x: Tensor) -> Tensor:
        """The per-image training loss (this model's k and objective), for the likelihood task
        and so that DistributedDataParallel can wrap the model."""
        return self.negative_bound(x, self.k, self.objective)

    @torch.no_grad()
    def nll(self, x: Tensor, k: int = 5000, chunk: int = 500) -> Tensor:
        """Test negative log-likelihood estimate -log (1/k) sum_i w_i per image (Section 5), [B]
        float64. Samples are drawn `chunk` at a time; the caller chunks over images. Peak memory
        is about 17 KB per (sample, image) pair on CPU: 0.85 GB for chunk 500 and 100 images."""
        x = x.flatten(1)
        return -log_mean_exp_chunked(lambda n: self.log_weights(x, n), k, chunk)

    @torch.no_grad()
    def posterior_means(self, x: Tensor, n_samples: int = 100, batch: int = 500) -> list[Tensor]:
        """E_q[z_l | x] for each stochastic layer l, each [N, D_l], over images in `batch`es.

        Layer 1 is the mean of q(z1|x). The top layer of the two-layer model is
        E_{q(z1|x)}[ mean of q(z2|z1) ], estimated from `n_samples` draws of z1.
        """
        means: list[list[Tensor]] = [[] for _ in range(self.layers)]
        for xb in x.flatten(1).split(batch):
            mu1, sigma1 = self.q_z1(xb)
            means[0].append(mu1)
            if self.layers == 2:
                eps = torch.randn((n_samples, *mu1.shape), dtype=mu1.dtype, device=mu1.device)
                z1 = mu1 + sigma1 * eps
                means[1].append(self.q_z2(z1)[0].mean(dim=0))
        return [torch.cat(m) for m in means]

    def active_units(
        self, x: Tensor, threshold: float = 0.01, n_samples: int = 100, batch: int = 500
    ) -> list[int]:
        """Active units per stochastic layer: Cov_x(E_q[z_u | x]) > threshold (Section 5.2)."""
        means = self.posterior_means(x, n_samples, batch)
        return [active_units_from_means(m, threshold) for m in means]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples x ~ p(x|z1) p(z1|z2) p(z2), as [n, D] binary images."""
        device = self.p_x.logits.weight.device

        def normal(dim: int) -> Tensor:
            return torch.randn(n, dim, generator=generator, device=device)

        if self.layers == 1:
            z1 = normal(self.p_x.h[0].in_features)
        else:
            mu1, sigma1 = self.p_z1(normal(self.q_z2.mu.out_features))
            z1 = mu1 + sigma1 * normal(mu1.shape[-1])
        return torch.bernoulli(torch.sigmoid(self.p_x(z1)), generator=generator)


def vae(shape: tuple[int, int, int], layers: int = 1, k: int = 1) -> IWAE:
    """Table 1's VAE: trained on the average of k ELBO terms."""
    return IWAE(layers=layers, x_dim=shape[0] * shape[1] * shape[2], k=k, objective="vae")


def iwae(shape: tuple[int, int, int], layers: int = 1, k: int = 1) -> IWAE:
    """Table 1's IWAE: trained on the k-sample importance-weighted bound."""
    return IWAE(layers=layers, x_dim=shape[0] * shape[1] * shape[2], k=k, objective="iwae")
