"""The cached sampler of PixelCNN++ (and the caches PixelSNAIL's uses): which positions of the
network each new pixel completes, and the maps they read (Ramachandran et al. 2017, arXiv
1704.06001). The models (models/pixelcnnpp.py, models/pixelsnail.py) give it their layers,
whose `step` methods compute a layer at the positions asked for; a model's `sample` draws the
same images with this engine as with its naive sampler, one full pass per pixel (tested bit for
bit in tests/models/).

Cached sampling. Every map of `params` at a position depends on earlier pixels only, so a
position is computed once, when the pixels it depends on are drawn. The u stream sees the
rows above only: at the start of image row i it runs on whole rows, row i >> L at each
level L where i is a multiple of 2^L (`u_rows`). The ul stream also sees the pixels to the
left: it runs at pixel (i, j), and at (i >> L, j >> L) where both are multiples of 2^L
(`ul_pixel`). Up and down pass meet at the same positions in the same step, so the ul
stream's skip connections need no cache; the caches hold the causal convolutions'
inputs, the u stream (read by ul), and what the up-sampling reads.

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class At(NamedTuple):
    """Positions of one row of a map, columns start .. stop - 1: where a sampling step runs."""

    row: int
    start: int
    stop: int


class Cache:
    """One map of the network while sampling, [n, C, H, W] zero-padded by a row above and a
    column on each side (enough for every causal filter here): positions are written once the
    pixels they depend on are drawn, and are read back, or convolved by a causal convolution
    (`DownShiftedConv2d.step`), at the positions a step asks for."""

    def __init__(self, like: Tensor, n: int, channels: int, height: int, width: int) -> None:
        self.map = like.new_zeros(n, channels, height + 1, width + 2)

    def write(self, at: At, value: Tensor) -> None:
        self.map[:, :, at.row + 1 : at.row + 2, at.start + 1 : at.stop + 1] = value

    def read(self, at: At) -> Tensor:
        return self.map[:, :, at.row + 1 : at.row + 2, at.start + 1 : at.stop + 1]

    def window(self, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        """Rows and columns lo .. hi - 1 of the map, where -1 is the padding."""
        return self.map[:, :, rows[0] + 1 : rows[1] + 1, cols[0] + 1 : cols[1] + 1]


@dataclass
class PixelCNNppState:
    """PixelCNN++'s caches while sampling."""

    x: Cache  # the input: the drawn pixels in [-1, 1] and a channel of ones
    ul_init_down: Cache  # the part of ul's first map that sees the rows above only (run with u)
    convs: dict[nn.Module, tuple[Cache, Cache]]  # a GatedResnet -> its causal convolutions' inputs
    u_up: list[list[Cache]]  # per level, the up pass's u maps: the first, then after each block
    u_down: list[Cache]  # the down pass's u maps, per block
    ul_up: list[Cache]  # per level, the up pass's last ul map (down-sampled)
    ul_down: list[Cache | None]  # per level, the down pass's ul map (up-sampled)


@dataclass
class PixelSNAILState:
    """PixelSNAIL's caches while sampling."""

    x: Cache  # the input: the drawn pixels in [-1, 1] and a channel of ones
    convs: dict[nn.Module, tuple[Cache, Cache]]  # a GatedResnet -> its causal convolutions' inputs
    background: Tensor  # the positional channels, [2, H, W]
    keys: list[Tensor]  # per attention block, the keys of every position, [n, key_size, H * W]
    values: list[Tensor]  # ... and its values, [n, nf // 2, H * W]
    streams: list[Tensor | None]  # the stream entering each block at the new pixel


def pixelcnnpp_state(model, n: int) -> PixelCNNppState:
    """Empty caches for drawing n images with PixelCNN++ `model`."""
    C, H, W = model.shape
    nf, n_res = model.up_u[0].conv_in.conv.out_channels, model.nr_resnet
    like = next(model.parameters())

    def cache(level: int, channels: int = nf) -> Cache:
        return Cache(like, n, channels, H >> level, W >> level)

    blocks = [(model.up_u[k], model.up_ul[k], k // n_res) for k in range(3 * n_res)]
    for level, ks in model.down_blocks.items():
        blocks += [(model.down_u[k], model.down_ul[k], level) for k in ks]
    return PixelCNNppState(
        x=cache(0, C + 1),
        ul_init_down=cache(0),
        convs={b: (cache(lv, 2 * nf), cache(lv, 2 * nf)) for *bs, lv in blocks for b in bs},
        u_up=[[cache(level) for _ in range(n_res + 1)] for level in range(3)],
        u_down=[cache(level) for *_, level in blocks[3 * n_res :]],
        ul_up=[cache(level) for level in range(2)],
        ul_down=[None, cache(1), cache(2)],
    )


def u_rows(model, state: PixelCNNppState, i: int, y: Tensor | None) -> None:
    """The u stream of `params` on the rows that image row i completes."""
    n, W = model.nr_resnet, model.shape[2]
    levels = [level for level in range(3) if i % (1 << level) == 0]
    u_up, u_down = state.u_up, state.u_down
    for level in levels:
        at = At(i >> level, 0, W >> level)
        if level == 0:
            u = model.u_init.step(state.x, at)
            state.ul_init_down.write(at, model.ul_init_down.step(state.x, at))
        else:
            u = model.down_size_u[level - 1].step(u_up[level - 1][n], at)
        u_up[level][0].write(at, u)
        for r in range(n):
            block = model.up_u[level * n + r]
            u = block.step(u, state.convs[block], at, y=y)
            u_up[level][r + 1].write(at, u)
    for level in reversed(levels):
        at = At(i >> level, 0, W >> level)
        skips = u_up[level][::-1]
        if level == 2:
            u, skips = skips[0].read(at), skips[1:]
        else:
            u = model.up_size_u[1 - level].step(u_down[model.down_blocks[level + 1][-1]], at)
        for k, skip in zip(model.down_blocks[level], skips):
            u = model.down_u[k].step(u, state.convs[model.down_u[k]], at, skip.read(at), y)
            u_down[k].write(at, u)


def ul_pixel(model, state: PixelCNNppState, i: int, j: int, y: Tensor | None) -> Tensor:
    """The ul stream of `params` at the positions that pixel (i, j) completes, and the
    mixture parameters of pixel (i, j), [n, P]."""
    n = model.nr_resnet
    levels = [level for level in range(3) if i % (1 << level) == 0 and j % (1 << level) == 0]
    ul_up, ul_down = state.ul_up, state.ul_down
    ups = {}
    for level in levels:
        at = At(i >> level, j >> level, (j >> level) + 1)
        if level == 0:
            ul = state.ul_init_down.read(at) + model.ul_init_right.step(state.x, at)
        else:
            ul = model.down_size_ul[level - 1].step(ul_up[level - 1], at)
        ups[level] = [ul]
        for r in range(n):
            block = model.up_ul[level * n + r]
            a = state.u_up[level][r + 1].read(at)
            ul = block.step(ul, state.convs[block], at, a, y)
            ups[level].append(ul)
        if level < 2:
            ul_up[level].write(at, ul)
    for level in reversed(levels):
        at = At(i >> level, j >> level, (j >> level) + 1)
        skips = ups[level][::-1]
        if level == 2:
            ul, skips = skips[0], skips[1:]
        else:
            ul = model.up_size_ul[1 - level].step(ul_down[level + 1], at)
        for k, skip in zip(model.down_blocks[level], skips):
            a = torch.cat([state.u_down[k].read(at), skip], dim=1)
            ul = model.down_ul[k].step(ul, state.convs[model.down_ul[k]], at, a, y)
        if level > 0:
            ul_down[level].write(at, ul)
    return model.out(F.elu(ul))[:, :, 0, 0]
