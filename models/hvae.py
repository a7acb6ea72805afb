"""A hierarchical VAE and the PixelVAE (Gulrajani et al. 2016, arXiv 1611.05013).

Generative model over L stochastic levels, top-down, with a Bernoulli likelihood on binary x:

    p(x, z1..zL) = p(x | z1) p(z1 | z2) ... p(zL-1 | zL) p(zL),   p(zL) = N(0, I),

each p(z_i | z_i+1) a diagonal Gaussian MLP. The approximate posterior factorises over the levels
given x, every q(z_i | x) a diagonal Gaussian MLP of x alone (not of z_i-1):

    q(z1..zL | x) = q(z1 | x) q(z2 | x) ... q(zL | x).

With that q the ELBO splits into a reconstruction term and one KL per level, each in closed form
given one reparameterised sample of the level above:

    ELBO = E_q(z1|x) log p(x|z1) - sum_{i<L} E_q(z_i+1|x) KL(q(z_i|x) || p(z_i|z_i+1))
           - KL(q(zL|x) || p(zL)).

The test likelihood is the importance-sampled bound of Burda et al. (arXiv 1509.00519) with
log w = log p(x|z1) + log p(z1..zL) - log q(z1..zL|x), k = 5000 by default.

`HierarchicalVAE` decodes with the IWAE table's MLPs (`models.iwae`): with levels=1 it is the
784-200-200-50 VAE of that table; with levels=2 q(z2|x) reads x instead of z1, unlike the IWAE's
q(z2|z1). `PixelVAE` keeps the same latent hierarchy and replaces p(x|z1) by a small PixelCNN whose
every layer sees a linear map of z1 (Section 3 of 1611.05013).

PixelVAE differs from the authors' binarized-MNIST model (igul222/PixelVAE, `-L 12 -fs 5
-algo cond_z_bias -dpx 16 -ldim 16`) in: an MLP encoder instead of their convolutional one; plain
masked convolutions with ReLU (3 by default) instead of 12 gated vertical/horizontal-stack layers;
z1 entering as an added map and per-channel bias of each layer's input instead of biases inside
each gate. Their KL warm-up (the KL weight rising from 0 to 1 over 10,000 steps) belongs to the
training loop, not to this module. Their two-level models (LSUN, ImageNet) use PixelCNN priors
over latent maps; `PixelVAE(levels=2)` uses the Gaussian MLP p(z1|z2) of this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.iwae import (
    BernoulliMLP,
    GaussianMLP,
    active_units_from_means,
    gaussian_log_prob,
    gaussian_log_prob_of_noise,
    log_mean_exp_chunked,
    standard_normal_log_prob,
)
from models.kernels import bernoulli_log_prob
from models.pixelcnn import MaskedConv2d


def gaussian_kl(mu_q: Tensor, sigma_q: Tensor, mu_p: Tensor, sigma_p: Tensor) -> Tensor:
    """KL(N(mu_q, diag sigma_q^2) || N(mu_p, diag sigma_p^2)) summed over the last dimension."""
    # KL = sum_j [ log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2 ]_j
    ratio = (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2)
    return (torch.log(sigma_p) - torch.log(sigma_q) + ratio - 0.5).sum(-1)


def default_z_dims(levels: int) -> tuple[int, ...]:
    """The IWAE table's latent sizes: 50 for one level; 100, 50 for two."""
    if levels == 1:
        return (50,)
    if levels == 2:
        return (100, 50)
    raise ValueError(f"give z_dims for levels={levels}: defaults exist for 1 and 2 levels only")


class HierarchicalVAE(nn.Module):
    """L Gaussian levels, q factorised over levels given x, a Bernoulli MLP p(x|z1).

    shape: (C, H, W) of the binary inputs. levels: L. z_dims: units per level, z1 first (default:
    the IWAE table's (50,) or (100, 50)). hidden: width of the two tanh layers of every MLP that
    reads or writes x, i.e. each q(z_i|x) and p(x|z1) (IWAE table: 200). hidden_z: width of the
    two tanh layers of each p(z_i|z_i+1) (IWAE table: 100). Linear weights start Glorot-uniform
    and biases at zero, as in `models.iwae`. Defaults for 1x28x28: 708,084 parameters.
    """

    input_kind = "binary"
    capabilities = frozenset(
        {"bound", "init_from_data", "elbo_terms", "active_units", "sample"}
    )  # bench/contracts.py

    def __init__(
        self,
        shape: tuple[int, int, int],
        levels: int = 2,
        hidden: int = 200,
        hidden_z: int = 100,
        z_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        z_dims = default_z_dims(levels) if z_dims is None else tuple(z_dims)
        if len(z_dims) != levels:
            raise ValueError(f"z_dims has {len(z_dims)} entries for {levels} levels")
        self.shape = tuple(shape)
        self.x_dim = math.prod(self.shape)
        self.levels = levels
        self.z_dims = z_dims
        self.q = nn.ModuleList(GaussianMLP(self.x_dim, hidden, d) for d in z_dims)
        self.p_z = nn.ModuleList(
            GaussianMLP(z_dims[i + 1], hidden_z, z_dims[i]) for i in range(levels - 1)
        )
        self.p_x = self.make_decoder(hidden)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def make_decoder(self, hidden: int) -> nn.Module:
        """p(x|z1): Bernoulli logits from a two-layer tanh MLP of z1."""
        return BernoulliMLP(self.z_dims[0], hidden, self.x_dim)

    def decoder_log_prob(self, x: Tensor, z1: Tensor) -> Tensor:
        """log p(x|z1) for z1 [..., B, d1] and x [B, ...]: [..., B]."""
        return bernoulli_log_prob(x.flatten(1), self.p_x(z1))

    def decoder_sample(self, z1: Tensor, generator: torch.Generator | None) -> Tensor:
        """x ~ p(x|z1) for z1 [n, d1], as [n, C, H, W]."""
        p = torch.sigmoid(self.p_x(z1))
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
        return (u < p).to(p.dtype).view(len(z1), *self.shape)

    @torch.no_grad()
    def init_from_data(self, x_uint8: Tensor) -> None:
        """The likelihood task's hook: start p(x|z1) at the training images' mean intensity."""
        self.set_output_bias(x_uint8.flatten(1).float().mean(0) / 255)

    @torch.no_grad()
    def set_output_bias(self, mean_x: Tensor) -> None:
        """Start p(x|z1) at the data's marginal: bias = logit(mean pixel) clipped to
        [0.001, 0.999], as `IWAE.set_output_bias`."""
        p = mean_x.flatten().clamp(0.001, 0.999)
        self.p_x.logits.bias.copy_(torch.log(p) - torch.log1p(-p))

    def posteriors(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(mu_i, sigma_i) of q(z_i|x) for each level, z1 first, each [B, d_i]."""
        x = x.flatten(1)
        return [q(x) for q in self.q]

    def prior_log_prob(self, zs: Sequence[Tensor]) -> Tensor:
        """log p(z1..zL) for one z per level, each [..., B, d_i]: [..., B]."""
        # log p(z1..zL) = log p(zL) + sum_{i<L} log p(z_i | z_i+1)
        log_p = standard_normal_log_prob(zs[-1])
        for i, p in enumerate(self.p_z):
            log_p = log_p + gaussian_log_prob(zs[i], *p(zs[i + 1]))
        return log_p

    def elbo_terms(self, x: Tensor, eps: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """The negative ELBO's parts in nats: "rec" = -log p(x|z1) at one sample z1 ~ q(z1|x),
        and "kl<i>" = KL(q(z_i|x) || p(z_i|z_i+1)) in closed form at one sample z_i+1 ~ q(z_i+1|x)
        ("kl<L>" against N(0, I)). Each [B]; their sum is the training loss.

        eps: optional standard-normal noise per level, each [B, d_i] (or [k, B, d_i] for k draws
        at once, giving [k, B] terms); by default fresh noise is drawn, z1 first.
        """
        posteriors = self.posteriors(x)
        if eps is None:
            eps = [torch.randn_like(mu) for mu, _ in posteriors]
        if len(eps) != self.levels:
            raise ValueError(f"eps has {len(eps)} entries for {self.levels} levels")
        # z_i = mu_i(x) + sigma_i(x) * eps_i   (one reparameterised sample per level)
        zs = [mu + sigma * e for (mu, sigma), e in zip(posteriors, eps, strict=True)]
        terms = {"rec": -self.decoder_log_prob(x, zs[0])}
        for i, p in enumerate(self.p_z):
            terms[f"kl{i + 1}"] = gaussian_kl(*posteriors[i], *p(zs[i + 1]))
        mu_top, sigma_top = posteriors[-1]
        terms[f"kl{self.levels}"] = gaussian_kl(
            mu_top, sigma_top, torch.zeros_like(mu_top), torch.ones_like(sigma_top)
        ).expand(zs[-1].shape[:-1])
        return terms

    def forward(self, x: Tensor) -> Tensor:
        """The training loss: the negative ELBO per example in nats, [B]."""
        # -ELBO = -log p(x|z1) + sum_i KL_i
        return torch.stack(list(self.elbo_terms(x).values())).sum(0)

    def log_weights(self, x: Tensor, k: int) -> Tensor:
        """log w for k samples of z1..zL ~ q(.|x) per example: [k, B]."""
        zs, log_q = [], 0.0
        for q in self.q:  # log q from the noise, as `IWAE.log_weights` (the same numbers)
            mu, log_sigma = q.mu_log_sigma(x.flatten(1))
            eps = torch.randn((k, *mu.shape), dtype=mu.dtype, device=mu.device)
            z = torch.addcmul(mu, log_sigma.exp(), eps)
            # log q(z1..zL|x) = sum_i log q(z_i|x)
            log_q = log_q + gaussian_log_prob_of_noise(eps, log_sigma)
            zs.append(z)
        # log w = log p(x|z1) + log p(z1..zL) - log q(z1..zL|x)
        return self.decoder_log_prob(x, zs[0]) + self.prior_log_prob(zs) - log_q

    @torch.no_grad()
    def nll(self, x: Tensor, k: int = 5000, chunk: int = 500) -> Tensor:
        """-log (1/k) sum_i w_i per example in nats, [B] float64: an upper bound on -log p(x)
        that tightens with k. Samples are drawn `chunk` at a time; the caller chunks images."""
        return -log_mean_exp_chunked(lambda n: self.log_weights(x, n), k, chunk)

    @torch.no_grad()
    def posterior_means(self, x: Tensor, batch: int = 500) -> list[Tensor]:
        """E_q[z_i|x] = mu_i(x) for each level (q factorises given x), each [N, d_i]."""
        parts = [self.posteriors(xb) for xb in x.split(batch)]
        return [torch.cat([p[i][0] for p in parts]) for i in range(self.levels)]

    def active_units(
        self, x: Tensor, threshold: float = 0.01, batch: int = 500, n_samples: int | None = None
    ) -> list[int]:
        """Active units per level, z1 first: Cov_x(E_q[z_u|x]) > threshold (Burda et al. 5.2).
        E_q is exact here (q is factorised over levels given x), so `n_samples` goes unused."""
        return [active_units_from_means(m, threshold) for m in self.posterior_means(x, batch)]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n ancestral draws zL ~ N(0, I), z_i ~ p(z_i|z_i+1), x ~ p(x|z1): [n, C, H, W] of 0/1."""
        p0 = next(self.parameters())
        z = torch.randn(n, self.z_dims[-1], generator=generator, dtype=p0.dtype, device=p0.device)
        for p in reversed(self.p_z):
            mu, sigma = p(z)
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            # z_i = mu(z_i+1) + sigma(z_i+1) * eps ~ p(z_i | z_i+1)
            z = mu + sigma * eps
        return self.decoder_sample(z, generator)


class PixelCNNDecoder(nn.Module):
    """p(x|z1) for binary single-channel images: a mask-A convolution, `layers` mask-B
    convolutions and a 1x1 output, ReLU between them. Before each of these, z1 enters the layer's
    input through a linear map to an H x W map (shared by all channels) plus a per-channel bias.
    The maps do not depend on x, so the logit of pixel (i, j) sees only the pixels before it in
    raster order. A learned per-pixel bias is added to the output logits."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        z_dim: int,
        channels: int,
        layers: int,
        kernel_size: int,
        first_kernel_size: int,
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        convs = [MaskedConv2d(c, channels, first_kernel_size, "A")]
        convs += [MaskedConv2d(channels, channels, kernel_size, "B") for _ in range(layers)]
        convs.append(MaskedConv2d(channels, c, 1, "B"))
        self.convs = nn.ModuleList(convs)
        self.cond = nn.ModuleList(nn.Linear(z_dim, h * w + conv.in_channels) for conv in convs)
        self.logit_bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, z1: Tensor) -> Tensor:
        """Logits [N, C, H, W] for images x [N, C, H, W] and latents z1 [N, d1]."""
        _, h, w = self.shape
        out = x
        for i, (conv, cond) in enumerate(zip(self.convs, self.cond, strict=True)):
            c = cond(z1)
            spatial = c[:, : h * w].view(-1, 1, h, w)
            channel = c[:, h * w :, None, None]
            out = conv(out + spatial + channel)
            if i < len(self.convs) - 1:
                out = F.relu(out)
        return out + self.logit_bias


class PixelVAE(HierarchicalVAE):
    """The hierarchical VAE of this module with a PixelCNN p(x|z1) (Gulrajani et al. 2016).

    shape: (1, H, W) binary images. levels: 1 or 2. z_dims: default (16,) as the authors' binarized
    MNIST model, (32, 16) for two levels (ours). hidden, hidden_z: as `HierarchicalVAE` (the MLP
    encoders q(z_i|x) and priors p(z_i|z_i+1)). channels, layers, kernel_size: the mask-B part of
    the decoder (authors: 16 channels, 12 gated layers, 5x5); first_kernel_size: the mask-A layer
    (authors: 7). Defaults for 1x28x28: 292,226 parameters (one level);
    layers=12 trains at about 230 images/s on one CPU core, the default at about 650.

    decoder_batch bounds how many images one decoder pass holds in `log_weights` (k samples of
    z1 per image each need a full PixelCNN pass over that image).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        levels: int = 1,
        hidden: int = 200,
        hidden_z: int = 100,
        z_dims: Sequence[int] | None = None,
        channels: int = 16,
        layers: int = 3,
        kernel_size: int = 5,
        first_kernel_size: int = 7,
        decoder_batch: int = 1000,
    ) -> None:
        if shape[0] != 1:
            raise ValueError(f"PixelVAE models single-channel binary images, got shape {shape}")
        if levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {levels}")
        self.decoder_config = (channels, layers, kernel_size, first_kernel_size)
        self.decoder_batch = decoder_batch
        if z_dims is None:
            z_dims = (16,) if levels == 1 else (32, 16)
        super().__init__(shape, levels, hidden, hidden_z, z_dims)

    def make_decoder(self, hidden: int) -> nn.Module:
        return PixelCNNDecoder(self.shape, self.z_dims[0], *self.decoder_config)

    def decoder_log_prob(self, x: Tensor, z1: Tensor) -> Tensor:
        """log p(x|z1) for z1 [..., B, d1]: one decoder pass per (sample, image), `decoder_batch`
        images at a time."""
        lead = z1.shape[:-1]  # [..., B]
        x_rep = x.reshape(-1, *self.shape).expand(*lead, *self.shape).reshape(-1, *self.shape)
        z1_flat = z1.reshape(-1, z1.shape[-1])
        log_p = [
            bernoulli_log_prob(xb.flatten(1), self.p_x(xb, zb).flatten(1))
            for xb, zb in zip(
                x_rep.split(self.decoder_batch), z1_flat.split(self.decoder_batch), strict=True
            )
        ]
        return torch.cat(log_p).view(lead)

    def decoder_sample(self, z1: Tensor, generator: torch.Generator | None) -> Tensor:
        """x ~ p(x|z1) pixel by pixel in raster order, one full decoder pass per pixel; all
        uniforms are drawn up front."""
        _, h, w = self.shape
        shape = (len(z1), *self.shape)
        u = torch.rand(shape, generator=generator, dtype=z1.dtype, device=z1.device)
        x = torch.zeros_like(u)
        for i in range(h):
            for j in range(w):
                p = torch.sigmoid(self.p_x(x, z1)[:, :, i, j])
                # x_ij ~ Bernoulli(sigmoid(logit_ij(x_<ij, z1)))
                x[:, :, i, j] = (u[:, :, i, j] < p).to(x.dtype)
        return x

    @torch.no_grad()
    def set_output_bias(self, mean_x: Tensor) -> None:
        """Start the per-pixel logit bias at logit(mean pixel), clipped to [0.001, 0.999]."""
        p = mean_x.reshape(self.shape).clamp(0.001, 0.999)
        self.p_x.logit_bias.copy_(torch.log(p) - torch.log1p(-p))


def pixelvae2(shape: tuple[int, int, int], **kwargs) -> PixelVAE:
    """PixelVAE with two latent levels."""
    return PixelVAE(shape, levels=2, **kwargs)
