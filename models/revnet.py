"""Reversible residual networks (Gomez et al. 2017, "The Reversible Residual Network").

A reversible block splits its input along channels into (x1, x2) and couples two residual
functions F and G so that its input can be recomputed from its output:

    y1 = x1 + F(x2)          x2 = y2 - G(y1)
    y2 = x2 + G(y1)          x1 = y1 - F(x2)

Backpropagation therefore need not store the activations of reversible blocks. Each run of
reversible blocks inside a stage goes through `_ReversibleFunction`, which keeps only the run's
output and, in backward, rebuilds each block's input while recomputing F and G (the paper's
Algorithm 1). Only the first unit of a stage that changes width or resolution (`DownsampleBlock`),
the stem and the head store activations the usual way, so activation memory does not grow with
depth.

Reconstruction is exact in exact arithmetic; in float32, x1 = y1 - F(x2) loses the digits of x1
that F(x2) outweighs. With BatchNorm in train mode the runs stay normalised and the rebuilt
inputs are within ~1e-5 (relative) of the real ones (`bench run revnet-memory`, drift column);
a run whose output grows far beyond its input (e.g. BatchNorm in eval mode with statistics that
do not fit the data) rebuilds them less accurately, and its gradients with them.

Architectures follow the official code (renmengye/revnet-public, resnet/configs): pre-activation
residual functions from `models.resnet`, F and G acting on half the channels, and the first
unit of a stage downsampling both halves like a ResNet shortcut.

    RevNet-38    basic       3/3/3 units        widths 32-32-64-112          0.46M parameters
    RevNet-110   basic       9/9/9 units        widths 32-32-64-128          1.73M
    RevNet-164   bottleneck  9/9/9 units        widths 32-128-256-512        1.75M
    RevNet-56    bottleneck  2/2/3/2 units      widths 128-512-1024-2048-3328  27.6M (ImageNet)
    RevNet-104   bottleneck  2/2/11/2 units     widths 128-512-1024-2048-3328  45.4M (ImageNet)

RevNet-56 is the ~28M-parameter RevNet of the i-RevNet paper's Table 1 (next to ResNet-50);
RevNet-104 is sized like ResNet-101 (44.5M), its counterpart in the RevNet paper.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.resnet import (
    RESIDUALS,
    BasicResidual,
    BottleneckResidual,
    Residual,
    StagedNet,
    bn_relu,
    cifar_stem,
)


class ReversibleBlock(nn.Module):
    """Additive coupling of two residual functions; F and G map half the channels to half."""

    def __init__(self, f: nn.Module, g: nn.Module):
        super().__init__()
        self.f = f
        self.g = g

    def couple(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # y1 = x1 + F(x2)
        y1 = x1 + self.f(x2)
        # y2 = x2 + G(y1)
        y2 = x2 + self.g(y1)
        return y1, y2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.couple(*halves(x)), dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y.chunk(2, dim=1)
        # x2 = y2 - G(y1)
        x2 = y2 - self.g(y1)
        # x1 = y1 - F(x2)
        x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two channel halves as contiguous tensors: convolutions and BatchNorm run faster on
    them than on strided views, and both backward paths then reduce in the same order."""
    x1, x2 = x.chunk(2, dim=1)
    return x1.contiguous(), x2.contiguous()


class DownsampleBlock(nn.Module):
    """First unit of a stage that changes width or resolution.

    Shaped like a reversible block, but the shortcuts h (pool and pad, or a strided projection)
    discard information, so it cannot be inverted and autograd stores its activations.
    """

    def __init__(self, f: nn.Module, g: nn.Module, h1: nn.Module, h2: nn.Module):
        super().__init__()
        self.f = f
        self.g = g
        self.h1 = h1
        self.h2 = h2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        # y1 = h(x1) + F(x2)
        y1 = self.h1(x1) + self.f(x2)
        # y2 = h(x2) + G(y1)
        y2 = self.h2(x2) + self.g(y1)
        return torch.cat([y1, y2], dim=1)


class _Replay:
    """The state a recomputation must restore to redo a forward step exactly.

    The RNG state makes dropout draw the same masks; the autocast state makes mixed-precision
    runs recompute in the precision of the forward pass. Like torch.utils.checkpoint, the RNG
    states are small CPU tensors held here, not activations.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.autocast = torch.is_autocast_enabled(device.type)
        self.autocast_dtype = torch.get_autocast_dtype(device.type)
        self.rng = True  # False once the run is known to have drawn no random numbers

    def drew_random_numbers(self) -> bool:
        """Whether the RNG moved since this state was taken (dropout in a block, say)."""
        if not torch.equal(self.cpu_rng, torch.get_rng_state()):
            return True
        return self.cuda_rng is not None and not torch.equal(
            self.cuda_rng, torch.cuda.get_rng_state(self.device)
        )

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if not self.rng and not self.autocast:  # nothing to restore: skip the contexts' cost
            yield
            return
        devices = [self.device] if self.rng and self.cuda_rng is not None else []
        with (
            torch.random.fork_rng(devices=devices, enabled=self.rng),
            torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast),
        ):
            if self.rng:
                torch.set_rng_state(self.cpu_rng)
                if self.cuda_rng is not None:
                    torch.cuda.set_rng_state(self.cuda_rng, self.device)
            yield


@contextmanager
def _frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Keep buffers as they are while recomputing, so BatchNorm's running statistics move once
    per step (in the forward pass), not again in backward. BatchNorm in train mode is told not
    to track them (it normalises with the batch's statistics either way), which costs nothing;
    any other buffer is copied and restored after backpropagating through the recomputation
    (autograd checks that the buffers it recorded are unchanged)."""
    norms, others = [], []
    for m in _modules(module):
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            norms.append(m)
        else:
            others += [b for b in m._buffers.values() if b is not None]
    saved = [b.clone() for b in others]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
        with torch.no_grad():
            for b, s in zip(others, saved, strict=True):
                b.copy_(s)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    """module.parameters() that require grad, in its order: walked directly, because the
    backward pass asks for them twice per block and parameters()' generators cost a tenth of
    a 54-block stack's step (`bench perf --only reversible`)."""
    seen: set[int] = set()
    out = []
    for m in _modules(module):
        for p in m._parameters.values():
            if p is not None and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _modules(module: nn.Module) -> list[nn.Module]:
    """module.modules() in its order, without its generators' cost."""
    out, stack, seen = [], [module], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return out


class _ReversibleFunction(torch.autograd.Function):
    """A run of reversible blocks that saves only its output for backward.

    `params` are the blocks' trainable parameters, passed so that autograd routes their
    gradients through this function. Inside the run the halves travel as separate tensors,
    split once and concatenated once, not at every block.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: nn.ModuleList, *params: torch.Tensor):
        ctx.blocks = blocks
        ctx.params = params
        ctx.replays = []
        x1, x2 = halves(x)
        for block in blocks:  # autograd runs forward under no_grad: nothing is stored
            replay_f = _Replay(x.device)
            # y1 = x1 + F(x2)
            y1 = x1 + block.f(x2)
            replay_g = _Replay(x.device)
            # y2 = x2 + G(y1)
            y2 = x2 + block.g(y1)
            x1, x2 = y1, y2
            ctx.replays.append((replay_f, replay_g))
        if ctx.replays and not ctx.replays[0][0].drew_random_numbers():
            for replay in (r for pair in ctx.replays for r in pair):
                replay.rng = False  # no block drew random numbers: nothing to replay
        y = torch.cat([x1, x2], dim=1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        """Algorithm 1 of the paper, block by block from the last: reconstruct the block's input
        from its output while re-running G and F with grad enabled, then backpropagate."""
        (y,) = ctx.saved_tensors
        y1, y2 = halves(y)
        dy1, dy2 = halves(dy)
        grads: dict[nn.Parameter, torch.Tensor] = {}
        for block, (replay_f, replay_g) in zip(
            reversed(ctx.blocks), reversed(ctx.replays), strict=True
        ):
            w_f, w_g = _trainable(block.f), _trainable(block.g)
            with _frozen_buffers(block):
                with torch.enable_grad():
                    z1 = y1.detach().requires_grad_()
                    with replay_g():
                        g_z1 = block.g(z1)
                    # x2 = y2 - G(z1)
                    x2 = (y2 - g_z1.detach()).requires_grad_()
                    with replay_f():
                        f_x2 = block.f(x2)
                # x1 = z1 - F(x2)
                x1 = y1 - f_x2.detach()
                # z1_bar = y1_bar + (dG/dz1)^T y2_bar,  wG_bar = (dG/dwG)^T y2_bar
                dz1, *dw_g = torch.autograd.grad(g_z1, (z1, *w_g), dy2, allow_unused=True)
                dz1 = dy1 if dz1 is None else dy1 + dz1
                # x2_bar = y2_bar + (dF/dx2)^T z1_bar,  wF_bar = (dF/dwF)^T z1_bar,  x1_bar = z1_bar
                dx2, *dw_f = torch.autograd.grad(f_x2, (x2, *w_f), dz1, allow_unused=True)
                dx2 = dy2 if dx2 is None else dy2 + dx2
            for w, dw in zip((*w_g, *w_f), (*dw_g, *dw_f), strict=True):
                if dw is not None:
                    grads[w] = dw if w not in grads else grads[w] + dw
            y1, y2, dy1, dy2 = x1, x2.detach(), dz1, dx2
        dx = torch.cat([dy1, dy2], dim=1)
        return (dx, None, *(grads.get(w) for w in ctx.params))


class ReversibleSequence(nn.Module):
    """Reversible blocks run one after another.

    With `memory_saving` (and grad enabled) the run stores only its output for backward;
    without it, plain autograd stores every activation. Both give the same gradients.
    """

    def __init__(self, blocks: list[ReversibleBlock], memory_saving: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_saving and torch.is_grad_enabled():
            return _ReversibleFunction.apply(x, self.blocks, *_trainable(self.blocks))
        x1, x2 = halves(x)
        for block in self.blocks:
            x1, x2 = block.couple(x1, x2)
        return torch.cat([x1, x2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y


class RevNet(StagedNet):
    """Stem, one stage per entry of `units`, BN-ReLU, global pool, linear.

    `widths[0]` is the stem's width; stage i outputs `widths[i + 1] * residual.expansion`
    channels and every stage after the first halves the resolution. The ImageNet stem is a
    strided 7x7 convolution and a max-pool; the CIFAR stem a 3x3 convolution.
    """

    capabilities = frozenset({"memory_saving", "reversible_floor"})  # bench/contracts.py

    def __init__(
        self,
        residual: Residual,
        units: tuple[int, ...],
        widths: tuple[int, ...],
        num_classes: int = 10,
        imagenet: bool = False,
        memory_saving: bool = True,
    ):
        super().__init__()
        if imagenet:
            conv = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
            stem = nn.Sequential(conv, *bn_relu(widths[0]), nn.MaxPool2d(3, 2, padding=1))
        else:
            stem = cifar_stem(widths[0])
        stages = []
        in_ch = widths[0]
        for i, n in enumerate(units):
            out_ch = widths[i + 1] * residual.expansion
            stage, reversible = [], []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                preact = not (i == 0 and j == 0)  # the stem already ends in BN-ReLU
                f = residual(in_ch // 2, out_ch // 2, stride, preact)
                g = residual(out_ch // 2, out_ch // 2)
                if stride == 1 and in_ch == out_ch:
                    reversible.append(ReversibleBlock(f, g))
                else:
                    h1, h2 = (residual.shortcut(in_ch // 2, out_ch // 2, stride) for _ in "12")
                    stage.append(DownsampleBlock(f, g, h1, h2))
                in_ch = out_ch
            if reversible:
                stage.append(ReversibleSequence(reversible, memory_saving))
            stages.append(nn.Sequential(*stage))
        self.finish(stem, stages, in_ch, num_classes)

    @property
    def memory_saving(self) -> bool:
        return all(s.memory_saving for s in self.modules() if isinstance(s, ReversibleSequence))

    @memory_saving.setter
    def memory_saving(self, enabled: bool) -> None:
        for s in self.modules():
            if isinstance(s, ReversibleSequence):
                s.memory_saving = enabled

    def without_reversible_blocks(self) -> RevNet:
        """This model without its reversible blocks: its memory floor (`reversible_floor`)."""
        return without_reversible_blocks(self)


def without_reversible_blocks(model: RevNet) -> RevNet:
    """A copy of `model` with every run of reversible blocks removed (they preserve shape).

    What it stores for backward is the memory floor of `model`: the activations of the stem,
    the downsampling units and the head, which a RevNet keeps whatever its depth.
    """
    stripped = copy.deepcopy(model)
    for stage in stripped.stages:
        for k, unit in enumerate(stage):
            if isinstance(unit, ReversibleSequence):
                stage[k] = nn.Identity()
    return stripped


def revnet_cifar(
    units: int, block: str = "basic", num_classes: int = 10, memory_saving: bool = True
) -> RevNet:
    """A CIFAR RevNet of any depth with RevNet-110's widths: `units` per stage."""
    widths = (32, 32, 64, 128)
    return RevNet(RESIDUALS[block], (units,) * 3, widths, num_classes, False, memory_saving)


def revnet38(num_classes: int = 10, memory_saving: bool = True) -> RevNet:
    return RevNet(BasicResidual, (3, 3, 3), (32, 32, 64, 112), num_classes, False, memory_saving)


def revnet110(num_classes: int = 10, memory_saving: bool = True) -> RevNet:
    return RevNet(BasicResidual, (9, 9, 9), (32, 32, 64, 128), num_classes, False, memory_saving)


def revnet164(num_classes: int = 10, memory_saving: bool = True) -> RevNet:
    return RevNet(
        BottleneckResidual, (9, 9, 9), (32, 32, 64, 128), num_classes, False, memory_saving
    )


IMAGENET_WIDTHS = (128, 128, 256, 512, 832)


def revnet56_imagenet(num_classes: int = 1000, memory_saving: bool = True) -> RevNet:
    return RevNet(
        BottleneckResidual, (2, 2, 3, 2), IMAGENET_WIDTHS, num_classes, True, memory_saving
    )


def revnet104_imagenet(num_classes: int = 1000, memory_saving: bool = True) -> RevNet:
    return RevNet(
        BottleneckResidual, (2, 2, 11, 2), IMAGENET_WIDTHS, num_classes, True, memory_saving
    )
