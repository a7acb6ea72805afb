"""PixelCNN++ (Salimans, Karpathy, Chen, Kingma 2017, arXiv 1701.05517).

Changes to the PixelCNN (Section 2 of the paper), all kept here:

1. A discretized logistic mixture likelihood instead of a 256-way softmax (Section 2.1): a pixel
   value x in 0..255 is rescaled to [-1, 1] and gets the mass of a logistic mixture on its bin
   [x - 1/255, x + 1/255]; the bins of 0 and 255 extend to -inf and +inf,

       P(x) = sum_k pi_k [ sigma((x + 1/255 - mu_k) / s_k) - sigma((x - 1/255 - mu_k) / s_k) ].

2. Conditioning on whole pixels (Section 2.2): the network outputs one mixture per pixel from
   the earlier pixels; inside a pixel the colour channels depend linearly on each other through
   the means of each component,

       mu_G = mu_G + alpha x_R,   mu_B = mu_B + beta x_R + gamma x_G.

3. Downsampling (Section 2.3) by strided convolutions, 32 -> 16 -> 8, and back up by
   transposed convolutions; 4. shortcut connections from each layer of the up pass to the
   matching layer of the down pass (Section 2.4); 5. dropout in the residual blocks
   (Section 2.5).

Causality is kept with the two streams of the authors' code (openai/pixel-cnn): u sees the rows
above (down-shifted convolutions), ul the rows above and the pixels to the left
(down-right-shifted convolutions). The authors' weight normalisation with data-dependent
initialisation and their Polyak averaging of the weights are left out (plain PyTorch init).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import pixelcnnpp_sampler as engine
from models.pixelcnn import down_shift, draw, uniforms
from models.pixelcnnpp_sampler import At, Cache

LOG_HALF_BINS = math.log(127.5)


def n_mixture_params(channels: int) -> int:
    """Parameters per mixture component: a logit, C means, C log-scales, C(C-1)/2 coefficients."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


def split_mixture_params(params: Tensor, channels: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """params [B, K * n_mixture_params(C), H, W], laid out as [logits K | means C*K | log-scales
    C*K | coefficients C(C-1)/2*K] -> logits [B, K, H, W], means and log-scales [B, C, K, H, W]
    and tanh coefficients [B, C(C-1)/2, K, H, W]. Log-scales are clamped below at -7, as in the
    authors' code. That scale, exp(-7) = 9.1e-4, is 8.6x below the bin width 2/255: from two bins
    off the mean on, a bin's float32 mass is under 1e-5 and `logistic_bin_log_prob` takes the
    density-times-width fallback, which understates it by up to ln 8.6 = 2.1 nats (tiny masses;
    tools/pixelcnnpp_noise.py measures the cost, 0.001 nats per test image)."""
    B, P, H, W = params.shape
    n = n_mixture_params(channels)
    if P % n:
        raise ValueError(f"{P} parameters is not a multiple of {n} for {channels} channels")
    K = P // n
    logits = params[:, :K]
    rest = params[:, K:].reshape(B, n - 1, K, H, W)
    means = rest[:, :channels]
    log_scales = rest[:, channels : 2 * channels].clamp(min=-7.0)
    coeffs = torch.tanh(rest[:, 2 * channels :])
    return logits, means, log_scales, coeffs


def conditional_means(x: Tensor, means: Tensor, coeffs: Tensor) -> Tensor:
    """Means shifted by the earlier channels of the same pixel: x [B, C, H, W] rescaled to
    [-1, 1], means [B, C, K, H, W], coefficients in the order (1,0), (2,0), (2,1), ..."""
    out = [means[:, 0]]
    idx = 0
    for c in range(1, means.shape[1]):
        m = means[:, c]
        for prev in range(c):
            # mu_c = mu_c + sum_{c' < c} alpha_{c c'} x_{c'}
            m = m + coeffs[:, idx] * x[:, prev, None]
            idx += 1
        out.append(m)
    return torch.stack(out, dim=1)


def logistic_bin_log_prob(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log of the mass of a logistic (means, exp(log_scales)) on the bin of x, x in [-1, 1] on
    the grid of 256 values; broadcasts.

    The edge bins take the tails: log sigma(plus) at 0 and log(1 - sigma(minus)) at 255. Where
    a bin's mass underflows (below 1e-5) the paper and openai/pixel-cnn replace the difference of
    sigmoids, which loses all digits, by the density at the centre times the bin width 2/255.
    """
    centred = x - means
    inv_s = torch.exp(-log_scales)
    plus = inv_s * (centred + 1.0 / 255.0)
    minus = inv_s * (centred - 1.0 / 255.0)
    # P(bin) = sigma((x + 1/255 - mu) / s) - sigma((x - 1/255 - mu) / s)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    # log sigma(plus): the bin of 0 reaches -inf
    log_cdf_plus = plus - F.softplus(plus)
    # log (1 - sigma(minus)): the bin of 255 reaches +inf
    log_one_minus_cdf_min = -F.softplus(minus)
    mid = inv_s * centred
    # log density at the centre: log sigma'(m) - log s = m - log s - 2 softplus(m)
    log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid)
    inner = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp(min=1e-12)),
        # log (pdf * 2/255) = log pdf - log 127.5
        log_pdf_mid - LOG_HALF_BINS,
    )
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner)
    )


def scale_pixels(x: Tensor) -> Tensor:
    """0..255 to [-1, 1]."""
    return x / 127.5 - 1.0


def mixture_terms(x: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The quantities of each sub-pixel's distribution: mixture log-weights [B, K, H, W], means
    conditioned on the earlier channels and log-scales, [B, C, K, H, W]. x is 0..255."""
    logits, means, log_scales, coeffs = split_mixture_params(params, x.shape[1])
    xs = scale_pixels(x)
    return F.log_softmax(logits, dim=1), conditional_means(xs, means, coeffs), log_scales


def discretized_logistic_mixture_log_prob(x: Tensor, params: Tensor) -> Tensor:
    """log P(x) per pixel, [B, H, W], for 8-bit x [B, C, H, W] (values 0..255) and params
    [B, K * n_mixture_params(C), H, W].

    The mixture is over the whole pixel (Section 2.2): P(x) = sum_k pi_k prod_c P_k(x_c | x_<c).
    """
    log_pi, means, log_scales = mixture_terms(x, params)
    xs = scale_pixels(x)
    per_channel = logistic_bin_log_prob(xs[:, :, None], means, log_scales)
    # log P(x) = logsumexp_k [ log pi_k + sum_c log P_k(x_c | x_<c) ]
    return torch.logsumexp(log_pi + per_channel.sum(1), dim=1)


def value_log_probs(values: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P_k(v) for v = 0..255, [n, K, 256], under logistics of means and log-scales [n, K],
    `values` the 256 values in [-1, 1]: the formulas of `logistic_bin_log_prob`, with the tails
    computed at the edge bins only (the sampler's table, a quarter fewer operations on it)."""
    centred = values - means[..., None]
    inv_s = torch.exp(-log_scales)[..., None]
    plus = inv_s * (centred + 1.0 / 255.0)
    minus = inv_s * (centred - 1.0 / 255.0)
    # P(bin) = sigma((x + 1/255 - mu) / s) - sigma((x - 1/255 - mu) / s)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centred
    # log density at the centre: log sigma'(m) - log s = m - log s - 2 softplus(m)
    log_pdf_mid = mid - log_scales[..., None] - 2.0 * F.softplus(mid)
    out = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp(min=1e-12)),
        # log (pdf * 2/255) = log pdf - log 127.5
        log_pdf_mid - LOG_HALF_BINS,
    )
    # log sigma(plus): the bin of 0 reaches -inf; log (1 - sigma(minus)): the bin of 255 +inf
    out[..., 0] = plus[..., 0] - F.softplus(plus[..., 0])
    out[..., 255] = -F.softplus(minus[..., 255])
    return out


def pixel_conditionals(params: Tensor, x: Tensor) -> Iterator[Tensor]:
    """log P(x_c = v | x_<c) for v = 0..255, [n, 256], for c = 0, 1, ... in turn, for one pixel
    per row: params [n, P], x [n, C] (0..255), whose channel c must hold its value before the
    next conditional is asked for (the sampler draws it in between).

    The mixture weights are reweighted by how well each component explains the channels drawn,
    so that prod_c P(x_c | x_<c) is the pixel's mixture (normalised over the 256 values: the
    small-probability fallback leaves sums within 2e-5 of 1).
    """
    values = scale_pixels(torch.arange(256, dtype=params.dtype, device=params.device))
    logits, means, log_scales, coeffs = (
        t[..., 0, 0] for t in split_mixture_params(params[:, :, None, None], x.shape[1])
    )
    log_w = F.log_softmax(logits, dim=1)
    idx = 0
    for c in range(x.shape[1]):
        mean = means[:, c]
        for prev in range(c):
            # mu_c = mu_c + sum_{c' < c} alpha_{c c'} x_{c'}
            mean = mean + coeffs[:, idx] * scale_pixels(x[:, prev, None])
            idx += 1
        log_p = value_log_probs(values, mean, log_scales[:, c])
        yield torch.log_softmax(torch.logsumexp(log_w[..., None] + log_p, dim=1), dim=-1)
        # log w_k = log pi_k + sum_{c' <= c} log P_k(x_c' | x_<c')
        log_w = log_w + log_p.gather(2, x[:, c, None, None].long().expand(*log_w.shape, 1))[..., 0]


def channel_log_probs(params: Tensor, x: Tensor, c: int) -> Tensor:
    """log P(x_c = v | x_<c) for v = 0..255, [n, 256], of `pixel_conditionals` for a given x
    (channels >= c are ignored)."""
    return next(islice(pixel_conditionals(params, x), c, None))


def sample_pixel(params: Tensor, u: Tensor) -> Tensor:
    """Draw one pixel per row, [n, C] values 0..255, from its mixture params [n, P] and
    uniforms u [n, C] (float64): channel after channel, by inverse CDF of `pixel_conditionals`."""
    x = params.new_zeros(u.shape)
    for c, log_probs in enumerate(pixel_conditionals(params, x)):
        x[:, c] = draw(log_probs, u[:, c], 256)
    return x


def concat_elu(x: Tensor) -> Tensor:
    """ELU of [x, -x] along channels: keeps both signs' information (the authors' choice)."""
    return F.elu(torch.cat([x, -x], dim=1))


def right_shift(x: Tensor) -> Tensor:
    """Move every column one right (zeros enter at the left): column j then holds j - 1."""
    return F.pad(x, (1, 0))[..., :-1]


class Conv2d(nn.Conv2d):
    """nn.Conv2d, but an input of one window (cached sampling) becomes a matrix product: on
    CPU a convolution that small costs ~5x more (oneDNN's fixed cost per call)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.kernel_size or self.padding != (0, 0) or self.groups != 1:
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]


class DownShiftedConv2d(nn.Module):
    """Output (i, j) sees rows i - fh + 1 .. i, columns j - (fw-1)/2 .. j + (fw-1)/2."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 3), stride: int = 1, shift=False):
        super().__init__()
        self.fh, self.fw = filter_size
        self.conv = Conv2d(cin, cout, filter_size, stride)
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        side = (self.fw - 1) // 2
        out = self.conv(F.pad(x, (side, side, self.fh - 1, 0)))
        return down_shift(out) if self.shift else out

    def step(self, cache: Cache, at: At) -> Tensor:
        """`forward` at the output positions `at` alone, [n, C_out, 1, w], from its input."""
        # down_shift: row r holds row r - 1, and row 0 zeros
        row = at.row - self.shift
        if row < 0:
            return cache.map.new_zeros(
                len(cache.map), self.conv.out_channels, 1, at.stop - at.start
            )
        s, side = self.conv.stride[0], (self.fw - 1) // 2
        rows = (s * row - self.fh + 1, s * row + 1)
        return self.conv(cache.window(rows, (s * at.start - side, s * (at.stop - 1) + side + 1)))


class DownRightShiftedConv2d(nn.Module):
    """Output (i, j) sees rows i - fh + 1 .. i, columns j - fw + 1 .. j."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 2), stride: int = 1, shift=False):
        super().__init__()
        self.fh, self.fw = filter_size
        self.conv = Conv2d(cin, cout, filter_size, stride)
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(F.pad(x, (self.fw - 1, 0, self.fh - 1, 0)))
        return right_shift(out) if self.shift else out

    def step(self, cache: Cache, at: At) -> Tensor:
        """`forward` at the output positions `at` alone, [n, C_out, 1, w], from its input."""
        # right_shift: column c holds column c - 1, and column 0 zeros
        start, stop = at.start - self.shift, at.stop - self.shift
        if start < 0:
            zero = cache.map.new_zeros(len(cache.map), self.conv.out_channels, 1, 1)
            rest = At(at.row, 1, at.stop)
            return torch.cat([zero, self.step(cache, rest)], dim=3) if at.stop > 1 else zero
        s = self.conv.stride[0]
        rows = (s * at.row - self.fh + 1, s * at.row + 1)
        return self.conv(cache.window(rows, (s * start - self.fw + 1, s * (stop - 1) + 1)))


class DownShiftedDeconv2d(nn.Module):
    """Stride-2 transposed convolution cropped so that output row r sees inputs above it only."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 3)):
        super().__init__()
        self.fh, self.fw = filter_size
        self.deconv = nn.ConvTranspose2d(cin, cout, filter_size, 2, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.deconv(x)
        H, W = out.shape[-2:]
        side = (self.fw - 1) // 2
        return out[:, :, : H - self.fh + 1, side : W - side]

    def step(self, cache: Cache, at: At) -> Tensor:
        """`forward` at the output positions `at` alone from its input: output row r gets input
        row r // 2 alone, through kernel row r % 2."""
        width = cache.map.shape[-1] - 2
        out = self.deconv(cache.read(At(at.row // 2, 0, width)))
        side, k = (self.fw - 1) // 2, at.row % 2
        return out[:, :, k : k + 1, side + at.start : side + at.stop]


class DownRightShiftedDeconv2d(nn.Module):
    """Stride-2 transposed convolution cropped to stay above and left of each output."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 2)):
        super().__init__()
        self.fh, self.fw = filter_size
        self.deconv = nn.ConvTranspose2d(cin, cout, filter_size, 2, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.deconv(x)
        H, W = out.shape[-2:]
        return out[:, :, : H - self.fh + 1, : W - self.fw + 1]

    def step(self, cache: Cache, at: At) -> Tensor:
        """`forward` at one output position (r, c) alone, [n, C_out, 1, 1], from its input: it
        gets input (r // 2, c // 2) alone, through kernel entry (r % 2, c % 2)."""
        r, c = at.row, at.start
        x = cache.read(At(r // 2, c // 2, c // 2 + 1)).flatten(1)
        weight = self.deconv.weight[:, :, r % 2, c % 2]
        return F.linear(x, weight.T, self.deconv.bias)[:, :, None, None]


class GatedResnet(nn.Module):
    """The residual block of the authors' code: a causal conv on concat_elu(x), plus a 1x1
    conv of the shortcut input a, dropout, a second causal conv to 2F channels, and a gate,

        c = conv(concat_elu(x)) + nin(concat_elu(a)),   c2 = conv(dropout(concat_elu(c))),
        x' = x + c2_a ⊙ sigma(c2_b)  (+ a class bias inside c2).
    """

    def __init__(
        self, conv, channels: int, skip_channels: int, dropout: float, n_classes: int
    ) -> None:
        super().__init__()
        self.conv_in = conv(2 * channels, channels)
        self.skip = Conv2d(2 * skip_channels, channels, 1) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * channels, 2 * channels)
        self.embed = nn.Embedding(n_classes, 2 * channels) if n_classes else None

    def forward(self, x: Tensor, a: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        return self._block(x, a, y, self.conv_in, self.conv_out)

    def step(
        self,
        x: Tensor,
        caches: tuple[Cache, Cache],
        at: At,
        a: Tensor | None = None,
        y: Tensor | None = None,
    ) -> Tensor:
        """`forward` at the positions `at` alone (x and a hold just those, [n, C, 1, w]); the
        inputs of the two causal convolutions are written into `caches` there first."""

        def conv_in(v):
            caches[0].write(at, v)
            return self.conv_in.step(caches[0], at)

        def conv_out(v):
            caches[1].write(at, v)
            return self.conv_out.step(caches[1], at)

        return self._block(x, a, y, conv_in, conv_out)

    def _block(self, x: Tensor, a: Tensor | None, y: Tensor | None, conv_in, conv_out) -> Tensor:
        c = conv_in(concat_elu(x))
        if self.skip is not None:
            c = c + self.skip(concat_elu(a))
        c = conv_out(self.dropout(concat_elu(c)))
        if self.embed is not None:
            c = c + self.embed(y)[:, :, None, None]
        a_half, b_half = c.chunk(2, dim=1)
        # x' = x + a ⊙ sigma(b)
        return x + a_half * torch.sigmoid(b_half)


class LogisticMixtureModel(nn.Module):
    """What PixelCNN++ and PixelSNAIL share around their networks: the likelihood contract on top
    of `params(x, y)`, the mixture parameters of every pixel, the naive per-pixel sampler, and
    the loop of the cached one around the models' `sampling_state`, `pixel_params` and
    `pixel_drawn`."""

    shape: tuple[int, int, int]
    n_classes: int
    capabilities = frozenset({"sample", "naive_sampler"})  # bench/contracts.py
    input_kind = "discrete256"  # 8-bit values 0..255: a mixture over each value's bin

    def _check_y(self, y: Tensor | None) -> None:
        if (y is None) != (self.n_classes == 0):
            raise ValueError(f"y must be given exactly when n_classes > 0 ({self.n_classes})")

    def params(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """-log P(x | y) in nats per example: exact, differentiable, the training loss."""
        return -discretized_logistic_mixture_log_prob(x, self.params(x, y)).flatten(1).sum(1)

    @torch.no_grad()
    def nll(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Test -log P(x | y) in nats per example (call .eval() first to switch dropout off)."""
        return self.forward(x, y)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
        naive: bool = False,
    ) -> Tensor:
        """n images, integer-valued floats 0..255, pixel by pixel, the pixel's channels drawn in
        order from the exact conditionals (`sample_pixel`). `naive=True` runs the whole network
        once per pixel (H * W passes), the default caches; both draw the same image from the
        same generator state."""
        if naive:
            return sample_by_pixel(self, n, generator, y)
        return self.sample_cached(n, generator, y)

    @torch.no_grad()
    def sample_cached(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """The naive sampler, but each pixel's parameters come from `pixel_params`, which runs
        the network only where the pixels drawn so far complete it, on the caches of
        `sampling_state`."""
        self._check_y(y)
        if self.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules()):
            raise ValueError("the cached sampler needs dropout off: call model.eval() first")
        p = next(self.parameters())
        C, H, W = self.shape
        u = uniforms((n, C, H, W), generator, p.device)
        x = torch.zeros((n, C, H, W), dtype=p.dtype, device=p.device)
        state = self.sampling_state(n)
        for i in range(H):
            for j in range(W):
                params = self.pixel_params(state, i, j, y)
                x[:, :, i, j] = sample_pixel(params, u[:, :, i, j])
                self.pixel_drawn(state, x, i, j, y)
        return x

    def sampling_state(self, n: int):
        raise NotImplementedError

    def pixel_params(self, state, i: int, j: int, y: Tensor | None) -> Tensor:
        """The mixture parameters of pixel (i, j), [n, P], as in a full pass, once the pixels
        before it have been drawn and passed to `pixel_drawn`."""
        raise NotImplementedError

    def pixel_drawn(self, state, x: Tensor, i: int, j: int, y: Tensor | None) -> None:
        """Write the new pixel (i, j) of x into the caches."""
        raise NotImplementedError


class PixelCNNpp(LogisticMixtureModel):
    """PixelCNN++ for 8-bit images ("discrete256"), sides divisible by 4 (three resolutions).

    paper_config (CIFAR-10, Section 3 of 1701.05517): nr_resnet=5 (6 blocks of 5 residual
    layers), nr_filters=160, nr_logistic_mix=10, dropout=0.5; 2.92 bits/dim. The defaults are a
    CPU-sized network of the same shape.
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (3, 32, 32),
        nr_resnet: int = 1,
        nr_filters: int = 24,
        nr_logistic_mix: int = 5,
        dropout: float = 0.5,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        C, H, W = shape
        if H % 4 or W % 4:
            raise ValueError(f"height and width must be divisible by 4, got {H}x{W}")
        self.shape = tuple(shape)
        self.n_classes = n_classes
        self.nr_resnet = nr_resnet
        nf = nr_filters

        def block(conv, skip):
            return GatedResnet(conv, nf, skip * nf, dropout, n_classes)

        self.u_init = DownShiftedConv2d(C + 1, nf, (2, 3), shift=True)
        self.ul_init_down = DownShiftedConv2d(C + 1, nf, (1, 3), shift=True)
        self.ul_init_right = DownRightShiftedConv2d(C + 1, nf, (2, 1), shift=True)
        self.up_u = nn.ModuleList(block(DownShiftedConv2d, 0) for _ in range(3 * nr_resnet))
        self.up_ul = nn.ModuleList(block(DownRightShiftedConv2d, 1) for _ in range(3 * nr_resnet))
        self.down_size_u = nn.ModuleList(
            DownShiftedConv2d(nf, nf, (2, 3), stride=2) for _ in range(2)
        )
        self.down_size_ul = nn.ModuleList(
            DownRightShiftedConv2d(nf, nf, (2, 2), stride=2) for _ in range(2)
        )
        n_down = 3 * nr_resnet + 2
        self.down_u = nn.ModuleList(block(DownShiftedConv2d, 1) for _ in range(n_down))
        self.down_ul = nn.ModuleList(block(DownRightShiftedConv2d, 2) for _ in range(n_down))
        self.up_size_u = nn.ModuleList(DownShiftedDeconv2d(nf, nf) for _ in range(2))
        self.up_size_ul = nn.ModuleList(DownRightShiftedDeconv2d(nf, nf) for _ in range(2))
        self.out = Conv2d(nf, nr_logistic_mix * n_mixture_params(C), 1)
        # the down pass's blocks at each resolution level (0: full, 1: half, 2: quarter)
        self.down_blocks = {2: range(nr_resnet), 1: range(nr_resnet, 2 * nr_resnet + 1)}
        self.down_blocks[0] = range(2 * nr_resnet + 1, 3 * nr_resnet + 2)

    def params(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mixture parameters [B, K * n_mixture_params(C), H, W]; those of pixel (i, j) depend
        on the pixels before (i, j) in raster order only."""
        self._check_y(y)
        xs = scale_pixels(x)
        # a channel of ones tells the image from the zero padding
        xs = torch.cat([xs, torch.ones_like(xs[:, :1])], dim=1)
        u_list = [self.u_init(xs)]
        ul_list = [self.ul_init_down(xs) + self.ul_init_right(xs)]
        n = self.nr_resnet
        for stage in range(3):
            for r in range(n):
                u_list.append(self.up_u[stage * n + r](u_list[-1], y=y))
                ul_list.append(self.up_ul[stage * n + r](ul_list[-1], u_list[-1], y))
            if stage < 2:
                u_list.append(self.down_size_u[stage](u_list[-1]))
                ul_list.append(self.down_size_ul[stage](ul_list[-1]))
        u, ul = u_list.pop(), ul_list.pop()
        k = 0
        for stage in range(3):
            for _ in range(n if stage == 0 else n + 1):
                u = self.down_u[k](u, u_list.pop(), y)
                ul = self.down_ul[k](ul, torch.cat([u, ul_list.pop()], dim=1), y)
                k += 1
            if stage < 2:
                u, ul = self.up_size_u[stage](u), self.up_size_ul[stage](ul)
        return self.out(F.elu(ul))

    # Cached sampling: the engine is models/pixelcnnpp_sampler.py (which positions each pixel
    # completes, the caches they read); the model gives it its layers.

    def sampling_state(self, n: int) -> engine.PixelCNNppState:
        return engine.pixelcnnpp_state(self, n)

    def pixel_params(
        self, state: engine.PixelCNNppState, i: int, j: int, y: Tensor | None
    ) -> Tensor:
        if j == 0:
            engine.u_rows(self, state, i, y)
        return engine.ul_pixel(self, state, i, j, y)

    def pixel_drawn(
        self, state: engine.PixelCNNppState, x: Tensor, i: int, j: int, y: Tensor | None
    ) -> None:
        # the input of params: the pixel in [-1, 1] and a channel of ones
        xs = scale_pixels(x[:, :, i : i + 1, j : j + 1])
        state.x.write(At(i, j, j + 1), torch.cat([xs, torch.ones_like(xs[:, :1])], dim=1))


def sample_by_pixel(
    model: nn.Module, n: int, generator: torch.Generator | None, y: Tensor | None
) -> Tensor:
    """The naive sampler of a whole-pixel mixture model with `model.params(x, y)`."""
    model._check_y(y)
    p = next(model.parameters())
    C, H, W = model.shape
    u = uniforms((n, C, H, W), generator, p.device)
    x = torch.zeros((n, C, H, W), dtype=p.dtype, device=p.device)
    for i in range(H):
        for j in range(W):
            x[:, :, i, j] = sample_pixel(model.params(x, y)[:, :, i, j], u[:, :, i, j])
    return x
