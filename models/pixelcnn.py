"""PixelCNN (van den Oord, Kalchbrenner, Kavukcuoglu 2016, arXiv 1601.06759) and Gated PixelCNN
(van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu 2016, arXiv 1606.05328).

Both factorise an image autoregressively over its sub-pixels in raster order, and inside a pixel
in the order R, G, B (Section 2 of 1601.06759):

    p(x) = prod_i p(x_iR | x_<i) p(x_iG | x_<i, x_iR) p(x_iB | x_<i, x_iR, x_iG)

Causality comes from masked convolutions (Section 3.4 of 1601.06759): a kernel sees only the rows
above the centre and the pixels left of it; mask A (first layer) also hides the centre, mask B
(later layers) shows it. With colours the feature maps are split into three groups and, at the
centre, group g sees input groups < g (mask A) or <= g (mask B).

A stack of masked convolutions has a blind spot: pixels above and to the right of the current one
that no depth reaches. The Gated PixelCNN removes it with two stacks (Section 2.2 of 1606.05328):
a vertical stack that sees every row above, and a horizontal stack that sees the current row to
the left and takes the vertical stack's features through a 1x1 link. Units are gated,

    y = tanh(W_f * x + V_f^T h) ⊙ sigma(W_g * x + V_g^T h),

with an optional class embedding h (Section 2.3).

Outputs are a 256-way softmax per sub-pixel (8-bit images) or one Bernoulli logit per sub-pixel
(`levels=2`, binarized MNIST). Sampling draws every uniform up front, so that the plain sampler
(one full pass per sub-pixel) and the cached samplers of both models (in the spirit of
Ramachandran et al. 2017, arXiv 1704.06001: only what a new sub-pixel can change is recomputed)
turn the same random numbers into the same image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def spatial_mask(kernel_size: int | tuple[int, int], mask_type: str) -> Tensor:
    """The [kh, kw] 0/1 mask of a masked convolution: every row above the centre, the centre row
    left of the centre, and the centre itself for mask B only."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = _pair(kernel_size)
    mask = torch.zeros(kh, kw)
    mask[: kh // 2] = 1
    mask[kh // 2, : kw // 2 + (mask_type == "B")] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose output at a pixel sees only earlier sub-pixels (mask A) or earlier
    sub-pixels and the same one (mask B).

    With `colors` > 1 the input and output channels are split into `colors` consecutive groups
    (R, G, B); at the kernel centre output group g sees input groups < g (A) or <= g (B). The
    padding defaults to kernel_size // 2 so that H and W are preserved.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str,
        colors: int = 1,
        **conv_kwargs,
    ) -> None:
        kh, kw = _pair(kernel_size)
        conv_kwargs.setdefault("padding", (kh // 2, kw // 2))
        super().__init__(in_channels, out_channels, (kh, kw), **conv_kwargs)
        if colors > 1 and (in_channels % colors or out_channels % colors):
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by colors ({colors})"
            )
        self.mask_type = mask_type
        self.colors = colors
        mask = spatial_mask((kh, kw), mask_type).expand(out_channels, in_channels, kh, kw).clone()
        group_out = torch.arange(out_channels) // (out_channels // colors)
        group_in = torch.arange(in_channels) // (in_channels // colors)
        # centre: output group g sees input groups < g (mask A) or <= g (mask B)
        if mask_type == "A":
            centre = group_in[None, :] < group_out[:, None]
        else:
            centre = group_in[None, :] <= group_out[:, None]
        mask[:, :, kh // 2, kw // 2] = centre.to(mask.dtype)
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class MaskedConvCache:
    """The input of one masked convolution while sampling: a zero-padded map that each step
    writes at its own pixel, and the convolution evaluated at that pixel alone. The rows below
    the centre are masked out, so neither the map nor the kernel keeps them."""

    def __init__(self, conv: MaskedConv2d, n: int, height: int, width: int) -> None:
        kh, kw = conv.kernel_size
        self.top, self.side = kh // 2, kw // 2
        weight = (conv.weight * conv.mask)[:, :, : self.top + 1]
        self.weight, self.bias = weight.reshape(conv.out_channels, -1), conv.bias
        self.map = conv.weight.new_zeros(
            n, conv.in_channels, height + self.top, width + 2 * self.side
        )

    def __call__(self, value: Tensor, i: int, j: int) -> Tensor:
        """Write `value` ([n, C_in]) at pixel (i, j); the convolution's output there, [n, C_out]."""
        self.map[:, :, i + self.top, j + self.side] = value
        window = self.map[:, :, i : i + self.top + 1, j : j + 2 * self.side + 1]
        return F.linear(window.reshape(len(window), -1), self.weight, self.bias)


def pointwise(conv: MaskedConv2d, x: Tensor) -> Tensor:
    """A 1x1 masked convolution at one pixel: x [n, C_in] -> [n, C_out]."""
    return F.linear(x, (conv.weight * conv.mask)[:, :, 0, 0], conv.bias)


def down_shift(x: Tensor) -> Tensor:
    """Move every row one down (zeros enter at the top): row i then holds row i - 1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def scale_input(x: Tensor, levels: int) -> Tensor:
    """Integer levels 0..levels-1 to [-1, 1], so that zero padding reads as mid-grey."""
    return x * (2.0 / (levels - 1)) - 1.0


def categorical_nll(logits: Tensor, x: Tensor, levels: int) -> Tensor:
    """-log p(x) in nats per example, summed over sub-pixels.

    `logits` is [B, C, H, W] (one Bernoulli logit per sub-pixel) for levels = 2 and
    [B, C, levels, H, W] (a softmax over the values) otherwise.
    """
    if levels == 2:
        # -log Bernoulli(x; sigmoid(l)) = softplus(l) - x l
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        nll = F.cross_entropy(logits.transpose(1, 2), x.long(), reduction="none")
    return nll.flatten(1).sum(1)


def draw(logits: Tensor, u: Tensor, levels: int) -> Tensor:
    """Inverse-CDF draw of one sub-pixel per example from uniforms `u` ([n], float64).

    `logits` is [n] (levels = 2) or [n, levels]. Drawing from given uniforms makes every sampler
    that computes the same logits return the same values.
    """
    if levels == 2:
        return (u < torch.sigmoid(logits.double())).to(logits.dtype)
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(-1)
    return (cdf < u[:, None]).sum(-1).clamp(max=levels - 1).to(logits.dtype)


def uniforms(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """float64 uniforms drawn on the generator's device (CPU without one), moved to `device`."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=where).to(device)


class _Autoregressive(nn.Module):
    """What the likelihood task calls, shared by the models here: forward/nll/sample over
    `logits(x, y)` ([B, C, H, W] or [B, C, levels, H, W])."""

    shape: tuple[int, int, int]
    levels: int
    n_classes: int
    capabilities = frozenset({"sample", "naive_sampler"})  # bench/contracts.py

    def _init_contract(self, shape: tuple[int, int, int], levels: int, n_classes: int) -> None:
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.shape = tuple(shape)
        self.levels = levels
        self.n_classes = n_classes
        self.input_kind = "binary" if levels == 2 else "discrete256"

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def _check_y(self, y: Tensor | None) -> None:
        if (y is None) != (self.n_classes == 0):
            raise ValueError(f"y must be given exactly when n_classes > 0 ({self.n_classes})")

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """-log p(x | y) in nats per example: exact, differentiable, the training loss."""
        return categorical_nll(self.logits(x, y), x, self.levels)

    @torch.no_grad()
    def nll(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Test -log p(x | y) in nats per example; the same exact value as forward."""
        return self.forward(x, y)

    def _uniforms(self, n: int, generator: torch.Generator | None) -> Tensor:
        return uniforms((n, *self.shape), generator, next(self.parameters()).device)

    def _empty(self, n: int) -> Tensor:
        p = next(self.parameters())
        return torch.zeros((n, *self.shape), dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def sample_naive(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """One full pass of the network per sub-pixel: H * W * C passes."""
        self._check_y(y)
        u = self._uniforms(n, generator)
        x = self._empty(n)
        C, H, W = self.shape
        for i in range(H):
            for j in range(W):
                for c in range(C):
                    logits = self.logits(x, y)[:, c, ..., i, j]
                    x[:, c, i, j] = draw(logits, u[:, c, i, j], self.levels)
        return x

    def sample_cached(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
        naive: bool = False,
    ) -> Tensor:
        """n images in the input space (0/1 or integer-valued 0..levels-1 floats); `naive=True`
        reruns the whole network per sub-pixel, the default caches. Both draw the same image
        from the same generator state."""
        if naive:
            return self.sample_naive(n, generator, y)
        return self.sample_cached(n, generator, y)


class ResidualBlock(nn.Module):
    """Residual block of the PixelCNN (Figure 5 of 1601.06759): 2h -> 1x1 -> h -> kxk mask B ->
    h -> 1x1 -> 2h with ReLUs, added to its input; an optional class bias before the kxk conv."""

    def __init__(self, hidden: int, kernel: int, colors: int, n_classes: int) -> None:
        super().__init__()
        self.reduce = MaskedConv2d(2 * hidden, hidden, 1, "B", colors)
        self.conv = MaskedConv2d(hidden, hidden, kernel, "B", colors)
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, "B", colors)
        self.embed = nn.Embedding(n_classes, hidden) if n_classes else None

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.reduce(F.relu(x))
        if self.embed is not None:
            h = h + self.embed(y)[:, :, None, None]
        h = self.expand(F.relu(self.conv(F.relu(h))))
        return x + h

    def step(self, x: Tensor, conv: MaskedConvCache, i: int, j: int, y: Tensor | None) -> Tensor:
        """`forward` at pixel (i, j) alone, x [n, 2h]; `conv` caches the kxk convolution's input."""
        h = pointwise(self.reduce, F.relu(x))
        if self.embed is not None:
            h = h + self.embed(y)
        h = pointwise(self.expand, F.relu(conv(F.relu(h), i, j)))
        return x + h


class PixelCNN(_Autoregressive):
    """The plain PixelCNN: a 7x7 mask-A convolution, residual blocks of mask-B convolutions and
    two 1x1 output layers; 256-way softmax per sub-pixel, or one Bernoulli logit (levels=2).

    paper_config (CIFAR-10, 3.14 bits/dim; our reading of Section 5 of 1601.06759, to re-check
    against the paper before quoting): 15 layers of h = 128 (2h = 256 feature maps) with 3x3
    mask-B kernels, 1024 units in the two 1x1 output layers. It has the blind spot that
    `GatedPixelCNN` removes.
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (1, 28, 28),
        levels: int = 256,
        hidden: int = 36,
        n_blocks: int = 5,
        first_kernel: int = 7,
        kernel: int = 3,
        out_hidden: int = 96,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self._init_contract(shape, levels, n_classes)
        C = shape[0]
        self.first = MaskedConv2d(C, 2 * hidden, first_kernel, "A", C)
        self.blocks = nn.ModuleList(
            ResidualBlock(hidden, kernel, C, n_classes) for _ in range(n_blocks)
        )
        self.out1 = MaskedConv2d(2 * hidden, out_hidden, 1, "B", C)
        self.out2 = MaskedConv2d(out_hidden, C * (1 if levels == 2 else levels), 1, "B", C)

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self._check_y(y)
        h = self.first(scale_input(x, self.levels))
        for block in self.blocks:
            h = block(h, y)
        out = self.out2(F.relu(self.out1(F.relu(h))))
        B, C, H, W = x.shape
        return out if self.levels == 2 else out.view(B, C, self.levels, H, W)

    @torch.no_grad()
    def sample_cached(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """The sampler of `sample_naive`, running the network at the new pixel only.

        Every layer's output at a pixel depends on that pixel and earlier ones only, so once a
        pixel is drawn its activations never change: each kxk convolution keeps its input in a
        `MaskedConvCache`, and each sub-pixel computes every layer at its own pixel, reading the
        earlier pixels from the caches (Ramachandran et al. 2017). Once the pixel's last colour
        is drawn, one more step writes its final activations.
        """
        self._check_y(y)
        u = self._uniforms(n, generator)
        x = self._empty(n)
        C, H, W = self.shape
        caches = self.caches(n)
        for i in range(H):
            for j in range(W):
                for c in range(C):
                    logits = self.pixel_logits(x, i, j, caches, y)[:, c]
                    x[:, c, i, j] = draw(logits, u[:, c, i, j], self.levels)
                self.pixel_features(x, i, j, caches, y)
        return x

    def caches(self, n: int) -> list[MaskedConvCache]:
        """Empty caches of the first convolution and of each block's kxk convolution."""
        _, H, W = self.shape
        convs = [self.first, *(block.conv for block in self.blocks)]
        return [MaskedConvCache(conv, n, H, W) for conv in convs]

    def pixel_features(
        self, x: Tensor, i: int, j: int, caches: list[MaskedConvCache], y: Tensor | None = None
    ) -> Tensor:
        """The last block's output at pixel (i, j), [n, 2h], as in a full pass, provided that the
        caches hold every earlier pixel; writes pixel (i, j) into the caches."""
        h = caches[0](scale_input(x[:, :, i, j], self.levels), i, j)
        for block, cache in zip(self.blocks, caches[1:]):
            h = block.step(h, cache, i, j, y)
        return h

    def pixel_logits(
        self, x: Tensor, i: int, j: int, caches: list[MaskedConvCache], y: Tensor | None = None
    ) -> Tensor:
        """The logits of pixel (i, j) as in a full pass, [n, C] or [n, C, levels]."""
        h = self.pixel_features(x, i, j, caches, y)
        out = pointwise(self.out2, F.relu(pointwise(self.out1, F.relu(h))))
        return out if self.levels == 2 else out.view(len(out), self.shape[0], self.levels)


def gate(a: Tensor, colors: int) -> Tensor:
    """tanh(a_f) ⊙ sigmoid(a_g) for 2p channels laid out as `colors` groups of [f, g] halves, so
    that the p outputs keep the consecutive colour groups of MaskedConv2d."""
    B, C2, H, W = a.shape
    a = a.view(B, colors, 2, C2 // (2 * colors), H, W)
    # y = tanh(W_f * x) ⊙ sigma(W_g * x)
    return (torch.tanh(a[:, :, 0]) * torch.sigmoid(a[:, :, 1])).reshape(B, C2 // 2, H, W)


class GatedLayer(nn.Module):
    """One layer of the Gated PixelCNN (Figure 2 of 1606.05328).

    The vertical stack convolves a (k//2 + 1) x k window: the rows above and the current one. Its
    pre-activation, shifted one row down so that it holds only rows above, enters the horizontal
    stack through a 1x1 link. The horizontal stack convolves a 1 x k masked window of the
    current row, gates, applies a 1x1 mask-B convolution and adds its input (not in the first,
    mask-A layer, whose input is the image).
    """

    def __init__(
        self, in_channels: int, hidden: int, kernel: int, mask_type: str, colors: int, n_classes
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.colors = colors
        self.residual = mask_type == "B"
        self.vertical = nn.Conv2d(in_channels, 2 * hidden, (kernel // 2 + 1, kernel))
        self.horizontal = MaskedConv2d(in_channels, 2 * hidden, (1, kernel), mask_type, colors)
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", colors)
        self.v_embed = nn.Embedding(n_classes, 2 * hidden) if n_classes else None
        self.h_embed = nn.Embedding(n_classes, 2 * hidden) if n_classes else None

    def vertical_step(self, v: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """The pre-activation and the gated output of the vertical stack."""
        k = self.kernel
        pre = self.vertical(F.pad(v, (k // 2, k // 2, k // 2, 0)))
        if self.v_embed is not None:
            # y = tanh(W_f * x + V_f^T h) ⊙ sigma(W_g * x + V_g^T h)
            pre = pre + self.v_embed(y)[:, :, None, None]
        return pre, gate(pre, self.colors)

    def horizontal_step(self, h: Tensor, link: Tensor, y: Tensor | None) -> Tensor:
        """`link` is self.link of the down-shifted vertical pre-activation."""
        pre = self.horizontal(h) + link
        if self.h_embed is not None:
            pre = pre + self.h_embed(y)[:, :, None, None]
        out = self.out(gate(pre, self.colors))
        return h + out if self.residual else out


class GatedPixelCNN(_Autoregressive):
    """Gated PixelCNN without blind spot (1606.05328), with an optional class condition.

    paper_config (CIFAR-10 3.03 bits/dim, Table 1 of 1606.05328; our reading of Section 3, to
    re-check against the paper before quoting): 20 layers of 384 hidden units with 5x5 filters,
    256-way softmax. The defaults here are a ~0.25M-parameter network for CPU runs.
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (1, 28, 28),
        levels: int = 256,
        hidden: int = 36,
        n_layers: int = 6,
        first_kernel: int = 7,
        kernel: int = 3,
        out_hidden: int = 96,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self._init_contract(shape, levels, n_classes)
        C = shape[0]
        if hidden % C:
            raise ValueError(f"hidden ({hidden}) must be divisible by the channels ({C})")
        self.layers = nn.ModuleList(
            GatedLayer(
                C if i == 0 else hidden,
                hidden,
                first_kernel if i == 0 else kernel,
                "A" if i == 0 else "B",
                C,
                n_classes,
            )
            for i in range(n_layers)
        )
        self.out1 = MaskedConv2d(hidden, out_hidden, 1, "B", C)
        self.out2 = MaskedConv2d(out_hidden, C * (1 if levels == 2 else levels), 1, "B", C)
        # rows (vertical) and columns (horizontal) that one output can reach back
        self.reach = sum(layer.kernel // 2 for layer in self.layers)

    def _head(self, h: Tensor) -> Tensor:
        out = self.out2(F.relu(self.out1(F.relu(h))))
        B, _, H, W = out.shape
        return out if self.levels == 2 else out.view(B, self.shape[0], self.levels, H, W)

    def _vertical_links(self, x: Tensor, y: Tensor | None) -> list[Tensor]:
        """Per layer, the link input of the horizontal stack: rows of x strictly above."""
        v = scale_input(x, self.levels)
        links = []
        for layer in self.layers:
            pre, v = layer.vertical_step(v, y)
            links.append(layer.link(down_shift(pre)))
        return links

    def _horizontal(self, x: Tensor, links: list[Tensor], y: Tensor | None) -> Tensor:
        h = scale_input(x, self.levels)
        for layer, link in zip(self.layers, links):
            h = layer.horizontal_step(h, link, y)
        return self._head(h)

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self._check_y(y)
        return self._horizontal(x, self._vertical_links(x, y), y)

    @torch.no_grad()
    def sample_cached(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """The sampler of `sample_naive`, recomputing only what a new sub-pixel can change.

        The horizontal stack's link at row i depends on rows < i only, so the vertical stack
        runs once per row (`row_links`). Inside the row, each sub-pixel reruns the horizontal
        stack on the window of columns its output can see (`window_logits`).
        """
        self._check_y(y)
        u = self._uniforms(n, generator)
        x = self._empty(n)
        C, H, W = self.shape
        for i in range(H):
            links = self.row_links(x, i, y)
            for j in range(W):
                for c in range(C):
                    logits = self.window_logits(x, i, j, links, y)[:, c]
                    x[:, c, i, j] = draw(logits, u[:, c, i, j], self.levels)
        return x

    def row_links(self, x: Tensor, i: int, y: Tensor | None = None) -> list[Tensor]:
        """Per layer, the link into the horizontal stack at row i, [n, 2 * hidden, 1, W], as
        in a full pass: the vertical stack at row i - 1 sees rows i - 1 - reach .. i - 1 only,
        so it runs on those rows (zeros above the image are the full pass's padding)."""
        if i == 0:
            # the down-shifted vertical stack holds zeros in the first row
            zeros = x.new_zeros(x.shape[0], self.layers[0].link.in_channels, 1, x.shape[-1])
            return [layer.link(zeros) for layer in self.layers]
        v = scale_input(x[:, :, max(0, i - 1 - self.reach) : i], self.levels)
        links = []
        for layer in self.layers:
            pre, v = layer.vertical_step(v, y)
            links.append(layer.link(pre[:, :, -1:]))
        return links

    def window_logits(
        self, x: Tensor, i: int, j: int, links: list[Tensor], y: Tensor | None = None
    ) -> Tensor:
        """The logits of pixel (i, j) as in a full pass, [n, C] or [n, C, levels], from the
        horizontal stack on columns j - reach .. j of row i: no column further left reaches
        column j, and the zero padding left of the window only alters columns that do not."""
        lo = max(0, j - self.reach)
        window = [link[..., lo : j + 1] for link in links]
        return self._horizontal(x[:, :, i : i + 1, lo : j + 1], window, y)[..., 0, -1]
