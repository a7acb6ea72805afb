"""i-RevNet (Jacobsen, Smeulders, Oyallon 2018, "i-RevNet: Deep Invertible Networks").

A RevNet loses information wherever it downsamples. i-RevNet replaces every such step by an
invertible one, so the whole network up to the final projection onto the classes is a
one-to-one map with an explicit inverse. Each block carries a pair (x_j, x̃_j), runs one
bottleneck F on x̃_j and swaps the halves (the paper's Eq. 1, as the authors' code computes it):

    x_{j+1} = S_{j+1} x̃_j                           x̃_j = S_{j+1}^{-1} x_{j+1}
    x̃_{j+1} = S_{j+1} x_j + F_{j+1}(x̃_j)            x_j = S_{j+1}^{-1}(x̃_{j+1} - F_{j+1}(x̃_j))

S_j is the identity, a space-to-depth reshuffle ("psi": each 2x2 patch becomes 4 channels) where
F has stride 2, and/or a zero padding of the channels where the block widens (injective
i-RevNet). The network first reshuffles the image (S̃: a space-to-depth by `init_ds`), splits
the channels in two, runs the blocks, and concatenates the last pair (M̃) into the
representation z; a BN-ReLU, global average pool and linear layer give the logits.

F is pre-activation (BN-ReLU before each convolution; the first block skips its leading
BN-ReLU since it sees the raw input): conv k1 (stride) to width/mult, conv k2, conv k3 back to
width. The paper's bottleneck is 1x1-3x3-1x1; the authors' released PyTorch code
(jhjacobsen/pytorch-i-revnet) uses 3x3-3x3-3x3, which is why it builds 125M parameters where
the paper's Table 1 says 29M (the authors confirm this in that repository's issue #19).

Differences from the released code, both deliberate: the channel padding sits in S_j, after F
has read the unpadded x̃_j (the paper's equation; the released code pads before F, so in its
CIFAR model x̃ of the first block is all zeros, F of that block is constant and none of its
parameters ever gets a gradient), and the final BatchNorm uses PyTorch's default momentum
(the released 0.9 reads as a TensorFlow decay).

Parameter counts (ImageNet, 1000 classes; Table 1: ResNet 26M, RevNet 28M, (a) 181M, (b) 29M):

    irevnet_b                  bijective, released layout, 1x1-3x3-1x1     29.20M  (Table 1: 29M)
    irevnet_released_imagenet  bijective, released layout, 3x3-3x3-3x3     125.12M (released code)
    irevnet_a                  injective, 3/4/23/3 blocks, 4x wider, 1x1-3x3-1x1
                               183.56M (Table 1: 181M; fitted, see irevnet_a)
    irevnet_cifar              injective, released CIFAR layout            6.27M
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpaceToDepth(nn.Module):
    """Invertible downsampling psi: every block x block patch becomes block^2 channels."""

    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.block) if self.block > 1 else x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(y, self.block) if self.block > 1 else y


class InjectivePad(nn.Module):
    """Zero channels appended to reach `out_ch`: injective, its left inverse drops them."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.out_ch - self.in_ch))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, : self.in_ch]


class Reshuffle(nn.Module):
    """S_j: space-to-depth by `stride`, then zero-pad the channels up to `out_ch`."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if in_ch * stride**2 > out_ch:
            raise ValueError(f"{in_ch} channels at stride {stride} do not fit in {out_ch}")
        self.psi = SpaceToDepth(stride)
        self.pad = InjectivePad(in_ch * stride**2, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pad(self.psi(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.psi.inverse(self.pad.inverse(y))


def bottleneck(
    in_ch: int,
    width: int,
    stride: int,
    mult: int,
    kernels: tuple[int, int, int],
    first: bool,
    dropout: float,
) -> nn.Sequential:
    """F: pre-activation convolutions k1 (stride) -> width/mult -> k2 -> k3 -> width."""
    mid = width // mult
    k1, k2, k3 = kernels
    layers: list[nn.Module] = [] if first else [nn.BatchNorm2d(in_ch), nn.ReLU()]
    layers += [
        nn.Conv2d(in_ch, mid, k1, stride=stride, padding=k1 // 2, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Conv2d(mid, mid, k2, padding=k2 // 2, bias=False),
        nn.Dropout(dropout),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Conv2d(mid, width, k3, padding=k3 // 2, bias=False),
    ]
    return nn.Sequential(*layers)


class IRevBlock(nn.Module):
    """One i-RevNet block on the pair (x, x̃), with x of `in_ch[0]` and x̃ of `in_ch[1]` channels.

    Both outputs have `width` channels at 1/stride the resolution. The halves differ in width
    only at the network's input (an odd number of channels); S_j pads each one separately.
    """

    def __init__(
        self,
        in_ch: tuple[int, int],
        width: int,
        stride: int = 1,
        mult: int = 4,
        kernels: tuple[int, int, int] = (1, 3, 1),
        first: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.s = Reshuffle(in_ch[0], width, stride)
        self.s_tilde = Reshuffle(in_ch[1], width, stride)
        self.f = bottleneck(in_ch[1], width, stride, mult, kernels, first, dropout)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]):
        x, x_tilde = pair
        # x_{j+1} = S x̃_j ;  x̃_{j+1} = S x_j + F(x̃_j)
        return self.s_tilde(x_tilde), self.s(x) + self.f(x_tilde)

    def inverse(self, pair: tuple[torch.Tensor, torch.Tensor]):
        x_next, x_tilde_next = pair
        # x̃_j = S^{-1} x_{j+1}
        x_tilde = self.s_tilde.inverse(x_next)
        # x_j = S^{-1}(x̃_{j+1} - F(x̃_j))
        x = self.s.inverse(x_tilde_next - self.f(x_tilde))
        return x, x_tilde


class IRevNet(nn.Module):
    """i-RevNet: S̃, stages of i-RevNet blocks, M̃, then BN-ReLU-pool-linear on the result.

    n_blocks, n_strides, n_channels: blocks, stride of each stage's first block, and the width
    of each half per stage. init_ds: space-to-depth factor of S̃ (1: none; the released code's
    `--init_ds 2` is 2 here and its `--init_ds 0` is 1). in_shape: (C, H, W) of the input; only C
    shapes the model, H and W must divide by init_ds * 2^(stride-2 stages). A stage widens
    injectively when its width exceeds what its input reshuffles to.

    forward(x) -> (logits, z), z the last invertible representation; inverse(z) -> x. The
    inverse is exact in eval mode (in train mode, dropout masks and running statistics change).
    """

    capabilities = frozenset({"inverse"})  # bench/contracts.py

    def __init__(
        self,
        n_blocks: list[int],
        n_strides: list[int],
        n_channels: list[int],
        init_ds: int = 2,
        in_shape: tuple[int, int, int] = (3, 224, 224),
        mult: int = 4,
        kernels: tuple[int, int, int] = (1, 3, 1),
        num_classes: int = 1000,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.init_psi = SpaceToDepth(init_ds)
        ch = in_shape[0] * init_ds**2
        self.split = ch // 2
        in_ch = (ch // 2, ch - ch // 2)
        blocks = []
        for depth, stride, width in zip(n_blocks, n_strides, n_channels, strict=True):
            for i in range(depth):
                s = stride if i == 0 else 1
                blocks.append(IRevBlock(in_ch, width, s, mult, kernels, not blocks, dropout))
                in_ch = (width, width)
        self.blocks = nn.ModuleList(blocks)
        self.bn = nn.BatchNorm2d(2 * n_channels[-1])
        self.linear = nn.Linear(2 * n_channels[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The invertible part: x -> z."""
        x = self.init_psi(x)
        # S̃: split the reshuffled input into (x_0, x̃_0)
        pair = (x[:, : self.split], x[:, self.split :])
        for block in self.blocks:
            pair = block(pair)
        # M̃: concatenate the last pair
        return torch.cat(pair, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.embed(x)
        h = F.relu(self.bn(z))
        logits = self.linear(h.mean(dim=(2, 3)))
        return logits, z

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        pair = z.chunk(2, dim=1)
        for block in reversed(self.blocks):
            pair = block.inverse(pair)
        return self.init_psi.inverse(torch.cat(pair, dim=1))


# Released ImageNet layout (ILSVRC_main.py, checkpoint info "i-RevNet 301"): 3*100+1 layers.
# S̃ maps 3x224x224 to 12x112x112; each stage's psi quadruples the channels, so the widths
# 24-96-384-1536 keep every representation at 3*224*224 = 150528 numbers: bijective.
IMAGENET_LAYOUT = dict(
    n_blocks=[6, 16, 72, 6], n_strides=[2, 2, 2, 2], n_channels=[24, 96, 384, 1536], init_ds=2
)


def irevnet_b(num_classes: int = 1000) -> IRevNet:
    """Bijective i-RevNet (b): the released layout with the paper's 1x1-3x3-1x1 bottleneck."""
    return IRevNet(**IMAGENET_LAYOUT, kernels=(1, 3, 1), num_classes=num_classes)


def irevnet_released_imagenet(num_classes: int = 1000) -> IRevNet:
    """The released PyTorch ImageNet model: layout of (b), 3x3-3x3-3x3 bottlenecks (125M)."""
    return IRevNet(**IMAGENET_LAYOUT, kernels=(3, 3, 3), num_classes=num_classes)


def irevnet_a(num_classes: int = 1000) -> IRevNet:
    """Injective i-RevNet (a), sized to Table 1's 181M; the published description is incomplete.

    Neither the paper's text that we could consult nor the released code fixes (a)'s depth and
    widths, only its count (181M) and that it pads channels with zeros. With the paper's
    bottleneck (1x1-3x3-1x1, middle width/4) and psi stages (widths x4 per stage), the
    parameters grow as width^2, and (b)'s 300-layer layout reaches 181M only at an
    irregular width (~62 per half in stage 1; 64 gives 193M). The simplest regular fit we found:
    ResNet-101's 3/4/23/3 blocks at 4x the widths of (b), 96-384-1536-6144, the 4x4 reshuffled
    input (48 channels) zero-padded to 2*96 in the first block: 183.56M, +1.4%.
    z has 4x the input's dimension (12288x7x7).
    """
    return IRevNet(
        n_blocks=[3, 4, 23, 3],
        n_strides=[1, 2, 2, 2],
        n_channels=[96, 384, 1536, 6144],
        init_ds=4,
        kernels=(1, 3, 1),
        num_classes=num_classes,
    )


def irevnet_cifar(num_classes: int = 10, dropout: float = 0.1) -> IRevNet:
    """The released CIFAR model (CIFAR_main.py, README): 18/18/18 blocks, strides 1/2/2,
    widths 16-64-256, no initial reshuffle, 3x3-3x3-3x3 bottlenecks with mult 4, dropout 0.1.
    The 3 input channels (split 1 + 2) are zero-padded to 16 + 16 in the first block: injective.
    """
    return IRevNet(
        n_blocks=[18, 18, 18],
        n_strides=[1, 2, 2],
        n_channels=[16, 64, 256],
        init_ds=1,
        in_shape=(3, 32, 32),
        kernels=(3, 3, 3),
        num_classes=num_classes,
        dropout=dropout,
    )
