"""PixelSNAIL (Chen, Mishra, Rohaninejad, Abbeel 2017, arXiv 1712.09763).

A PixelCNN++-style causal convolution stream interleaved with causal self-attention (Section 2):
each block is a residual block of gated, down-right-shifted convolutions followed by an
attention block in which every position reads the earlier positions of the whole image,

    A(q, K, V) = softmax(q K^T / sqrt(d_k) + mask) V,   mask_{ij} = 0 if j < i else -inf,

with positions in raster order. Keys and values come from the stream, the input image and a
positional background; queries from the stream and the background. The stream at a position sees
only earlier pixels, and the input at a position enters only the keys and values, which a query
reads from strictly earlier positions, so the model stays autoregressive over pixels. The first
position has no earlier one and reads zero.

The output is the discretized logistic mixture of PixelCNN++ (`models.pixelcnnpp`), whole pixel
by whole pixel with the linear dependence between colour channels.

Following the authors' code (neocxi/pixelsnail-public, `h12_noup_smallkey`), keys and queries
are small (16) and values are half the filters wide; attention here may be split into heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pixelcnnpp import (
    Conv2d,
    DownRightShiftedConv2d,
    DownShiftedConv2d,
    GatedResnet,
    LogisticMixtureModel,
    n_mixture_params,
    scale_pixels,
)
from models.pixelcnnpp_sampler import At, Cache, PixelSNAILState


def causal_attention(query: Tensor, key: Tensor, value: Tensor, n_heads: int) -> Tensor:
    """Multi-head attention over positions in raster order, each query reading strictly earlier
    positions only. query, key [B, d_k, H, W], value [B, d_v, H, W] -> [B, d_v, H, W]."""
    B, d_k, H, W = key.shape
    d_v = value.shape[1]
    N = H * W
    q = query.reshape(B, n_heads, d_k // n_heads, N).transpose(2, 3)
    k = key.reshape(B, n_heads, d_k // n_heads, N)
    v = value.reshape(B, n_heads, d_v // n_heads, N).transpose(2, 3)
    allowed = torch.ones(N, N, dtype=torch.bool, device=key.device).tril(-1)
    # the first position has no earlier one: it may see itself here, and its output is zeroed
    allowed[0, 0] = True
    # A = softmax(q K^T / sqrt(d_k) + mask) V
    out = F.scaled_dot_product_attention(q, k.transpose(2, 3), v, attn_mask=allowed)
    has_earlier = (torch.arange(N, device=key.device) > 0).to(out.dtype)[:, None]
    return (out * has_earlier).transpose(2, 3).reshape(B, d_v, H, W)


def attention_step(query: Tensor, keys: Tensor, values: Tensor, n_heads: int) -> Tensor:
    """`causal_attention` at one position from the keys [n, d_k, p] and values [n, d_v, p] of
    the p positions before it: query [n, d_k, 1, 1] -> [n, d_v, 1, 1]."""
    n, d_k, p = keys.shape
    d_v = values.shape[1]
    if p == 0:
        # the first position reads zero
        return values.new_zeros(n, d_v, 1, 1)
    q = query.reshape(n, n_heads, 1, d_k // n_heads)
    k = keys.reshape(n, n_heads, d_k // n_heads, p)
    v = values.reshape(n, n_heads, d_v // n_heads, p).transpose(2, 3)
    # A = softmax(q K^T / sqrt(d_k)) V
    weights = torch.softmax(q @ k / math.sqrt(d_k // n_heads), dim=-1)
    return (weights @ v).reshape(n, d_v, 1, 1)


def nin(cin: int, cout: int) -> nn.Conv2d:
    """A 1x1 convolution ("network in network")."""
    return Conv2d(cin, cout, 1)


class AttentionBlock(nn.Module):
    """Keys and values from [x, stream, background], queries from [stream, background], each
    through a 1x1 gated residual layer; the attention output enters the stream through a
    gated residual layer with a 1x1 shortcut (the authors' code)."""

    def __init__(
        self, nf: int, channels: int, key_size: int, n_heads: int, dropout: float, n_classes: int
    ) -> None:
        super().__init__()
        kv_in = channels + nf + 2
        self.n_heads = n_heads
        self.key_size = key_size
        self.kv_resnet = GatedResnet(nin, kv_in, 0, dropout, n_classes)
        self.kv = nin(kv_in, key_size + nf // 2)
        self.q_resnet = GatedResnet(nin, nf + 2, 0, dropout, n_classes)
        self.q = nin(nf + 2, key_size)
        self.out = GatedResnet(nin, nf, nf // 2, dropout, n_classes)

    def forward(self, ul: Tensor, xs: Tensor, background: Tensor, y: Tensor | None) -> Tensor:
        key, value = self.keys_values(ul, xs, background, y)
        return self.out(
            ul, causal_attention(self.query(ul, background, y), key, value, self.n_heads), y
        )

    def keys_values(
        self, ul: Tensor, xs: Tensor, background: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        kv = self.kv(self.kv_resnet(torch.cat([xs, ul, background], dim=1), y=y))
        return kv[:, : self.key_size], kv[:, self.key_size :]

    def query(self, ul: Tensor, background: Tensor, y: Tensor | None) -> Tensor:
        return self.q(self.q_resnet(torch.cat([ul, background], dim=1), y=y))

    def step(
        self, ul: Tensor, background: Tensor, keys: Tensor, values: Tensor, y: Tensor | None
    ) -> Tensor:
        """`forward` at one position alone (ul, background [n, C, 1, 1]) from the keys and
        values of the positions before it, [n, d, p]."""
        query = self.query(ul, background, y)
        return self.out(ul, attention_step(query, keys, values, self.n_heads), y)


class PixelSNAIL(LogisticMixtureModel):
    """PixelSNAIL for 8-bit images ("discrete256").

    paper_config (CIFAR-10, 2.85 bits/dim; the authors' `h12_noup_smallkey`): n_blocks=12,
    nr_resnet=5, nr_filters=256, key_size=16 (values 128), n_heads=1, nr_logistic_mix=10,
    dropout=0.5. The defaults are a CPU-sized network of the same shape (one head, like the
    authors: on CPU, masked attention runs head by head, and two heads take twice as long).
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (3, 32, 32),
        n_blocks: int = 2,
        nr_resnet: int = 2,
        nr_filters: int = 32,
        key_size: int = 16,
        n_heads: int = 1,
        nr_logistic_mix: int = 5,
        dropout: float = 0.5,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        C = shape[0]
        if key_size % n_heads or (nr_filters // 2) % n_heads:
            raise ValueError("key_size and nr_filters // 2 must be divisible by n_heads")
        self.shape = tuple(shape)
        self.n_classes = n_classes
        nf = nr_filters
        self.init_down = DownShiftedConv2d(C + 1, nf, (1, 3), shift=True)
        self.init_right = DownRightShiftedConv2d(C + 1, nf, (2, 1), shift=True)
        self.resnets = nn.ModuleList(
            nn.ModuleList(
                GatedResnet(DownRightShiftedConv2d, nf, 0, dropout, n_classes)
                for _ in range(nr_resnet)
            )
            for _ in range(n_blocks)
        )
        self.attention = nn.ModuleList(
            AttentionBlock(nf, C, key_size, n_heads, dropout, n_classes) for _ in range(n_blocks)
        )
        self.out = nin(nf, nr_logistic_mix * n_mixture_params(C))

    def params(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mixture parameters [B, K * n_mixture_params(C), H, W]; those of pixel (i, j) depend
        on the pixels before (i, j) in raster order only."""
        self._check_y(y)
        B, _, H, W = x.shape
        xs = scale_pixels(x)
        background = self.background(H, W, x).expand(B, 2, H, W)
        # a channel of ones tells the image from the zero padding
        padded = torch.cat([xs, torch.ones_like(xs[:, :1])], dim=1)
        ul = self.init_down(padded) + self.init_right(padded)
        for resnets, attention in zip(self.resnets, self.attention):
            for resnet in resnets:
                ul = resnet(ul, y=y)
            ul = attention(ul, xs, background, y)
        return self.out(F.elu(ul))

    @staticmethod
    def background(H: int, W: int, like: Tensor) -> Tensor:
        """The positional input, [2, H, W]: each position's row and column, centred and scaled."""
        rows = (torch.arange(H, dtype=like.dtype, device=like.device) - H / 2) / H
        cols = (torch.arange(W, dtype=like.dtype, device=like.device) - W / 2) / W
        return torch.stack([rows[:, None].expand(H, W), cols[None, :].expand(H, W)])

    # Cached sampling. The stream at a position depends on earlier pixels only, so it runs at
    # the new pixel alone: the causal convolutions read their neighbours from caches of their
    # inputs, and each attention block reads the keys and values of the earlier positions,
    # cached as each pixel is drawn (a position's keys and values depend on its own pixel).

    def sampling_state(self, n: int) -> PixelSNAILState:
        C, H, W = self.shape
        like = next(self.parameters())
        nf = self.out.in_channels
        return PixelSNAILState(
            x=Cache(like, n, C + 1, H, W),
            convs={
                resnet: (Cache(like, n, 2 * nf, H, W), Cache(like, n, 2 * nf, H, W))
                for resnets in self.resnets
                for resnet in resnets
            },
            background=self.background(H, W, like),
            # keys and values of every position; the stream entering a block at the new pixel
            # (its keys and values wait for the pixel to be drawn)
            keys=[like.new_zeros(n, a.key_size, H * W) for a in self.attention],
            values=[like.new_zeros(n, nf // 2, H * W) for a in self.attention],
            streams=[None for _ in self.attention],
        )

    def pixel_params(self, state: PixelSNAILState, i: int, j: int, y: Tensor | None) -> Tensor:
        at, p = At(i, j, j + 1), i * self.shape[2] + j
        background = state.background[None, :, i : i + 1, j : j + 1]
        ul = self.init_down.step(state.x, at) + self.init_right.step(state.x, at)
        for b, (resnets, attention) in enumerate(zip(self.resnets, self.attention)):
            for resnet in resnets:
                ul = resnet.step(ul, state.convs[resnet], at, y=y)
            state.streams[b] = ul
            keys, values = state.keys[b][..., :p], state.values[b][..., :p]
            ul = attention.step(ul, background.expand(len(ul), -1, -1, -1), keys, values, y)
        return self.out(F.elu(ul))[:, :, 0, 0]

    def pixel_drawn(
        self, state: PixelSNAILState, x: Tensor, i: int, j: int, y: Tensor | None
    ) -> None:
        p = i * self.shape[2] + j
        xs = scale_pixels(x[:, :, i : i + 1, j : j + 1])
        # the input of params: the pixel in [-1, 1] and a channel of ones
        state.x.write(At(i, j, j + 1), torch.cat([xs, torch.ones_like(xs[:, :1])], dim=1))
        background = state.background[None, :, i : i + 1, j : j + 1].expand(len(xs), -1, -1, -1)
        for b, attention in enumerate(self.attention):
            key, value = attention.keys_values(state.streams[b], xs, background, y)
            state.keys[b][..., p] = key[:, :, 0, 0]
            state.values[b][..., p] = value[:, :, 0, 0]
