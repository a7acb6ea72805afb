"""CIFAR ResNets (He et al. 2016), the baselines of the RevNet paper (Gomez et al. 2017, Table 1).

Units are pre-activation ("v2", He et al. 2016b: BN-ReLU before each convolution), as in the
official RevNet code (renmengye/revnet-public), whose RevNets reuse the same residual functions.
The first unit of the network skips its pre-activation because the stem already ends in BN-ReLU.
Shortcuts that change shape are parameter-free for basic units (average-pool, then zero-pad the
new channels: He et al.'s option A) and a strided 1x1 projection for bottleneck units.

    ResNet-32   basic       5/5/5 units     widths 16-16-32-64       0.46M parameters
    ResNet-110  basic      18/18/18 units   widths 16-16-32-64       1.73M
    ResNet-164  bottleneck 18/18/18 units   widths 16-64-128-256     1.70M
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


def bn_relu(ch: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(ch), nn.ReLU()]


class PadShortcut(nn.Module):
    """Parameter-free shortcut: average-pool to the new resolution, zero-pad the new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = (out_ch - in_ch) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class BasicResidual(nn.Sequential):
    """Residual function of a basic unit: [BN-ReLU]-conv3x3-BN-ReLU-conv3x3."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, preact: bool = True):
        layers = bn_relu(in_ch) if preact else []
        layers += [conv3x3(in_ch, out_ch, stride), *bn_relu(out_ch), conv3x3(out_ch, out_ch)]
        super().__init__(*layers)

    @staticmethod
    def shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
        return PadShortcut(in_ch, out_ch, stride)


class BottleneckResidual(nn.Sequential):
    """Residual function of a bottleneck unit: [BN-ReLU]-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1.

    The inner width is a quarter of the output width; the stride sits on the first 1x1
    convolution, as in the official RevNet code.
    """

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, preact: bool = True):
        mid = out_ch // 4
        layers = bn_relu(in_ch) if preact else []
        layers += [conv1x1(in_ch, mid, stride), *bn_relu(mid), conv3x3(mid, mid)]
        layers += [*bn_relu(mid), conv1x1(mid, out_ch)]
        super().__init__(*layers)

    @staticmethod
    def shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
        return conv1x1(in_ch, out_ch, stride)


Residual = type[BasicResidual] | type[BottleneckResidual]


class ResidualUnit(nn.Module):
    def __init__(self, residual: Residual, in_ch: int, out_ch: int, stride: int, preact: bool):
        super().__init__()
        self.f = residual(in_ch, out_ch, stride, preact)
        same_shape = stride == 1 and in_ch == out_ch
        self.shortcut = nn.Identity() if same_shape else residual.shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x_{l+1} = h(x_l) + F(x_l), h the identity or a shape-matching shortcut
        return self.shortcut(x) + self.f(x)


class StagedNet(nn.Module):
    """What ResNet and RevNet share: stem -> stages -> BN-ReLU, global average pool -> linear,
    He-normal convolutions. Subclasses build their stem and stages, then call `finish`."""

    def finish(self, stem: nn.Module, stages: list[nn.Module], width: int, num_classes: int):
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(*bn_relu(width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.stages(self.stem(x))))


def cifar_stem(width: int) -> nn.Sequential:
    """The CIFAR networks' first layer: a 3x3 convolution and BN-ReLU."""
    return nn.Sequential(conv3x3(3, width), *bn_relu(width))


class ResNet(StagedNet):
    """CIFAR ResNet: 3x3 stem, one stage per entry of `units`, BN-ReLU, global pool, linear.

    `widths[0]` is the stem's width; stage i outputs `widths[i + 1] * residual.expansion`
    channels, and every stage after the first halves the resolution.
    """

    capabilities = frozenset()  # bench/contracts.py

    def __init__(
        self,
        residual: Residual,
        units: tuple[int, ...],
        widths: tuple[int, ...] = (16, 16, 32, 64),
        num_classes: int = 10,
    ):
        super().__init__()
        stem = cifar_stem(widths[0])
        stages = []
        in_ch = widths[0]
        for i, n in enumerate(units):
            out_ch = widths[i + 1] * residual.expansion
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                preact = not (i == 0 and j == 0)
                stage.append(ResidualUnit(residual, in_ch, out_ch, stride if j == 0 else 1, preact))
                in_ch = out_ch
            stages.append(nn.Sequential(*stage))
        self.finish(stem, stages, in_ch, num_classes)


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions (std sqrt(2 / (k*k*out_ch))), as in the official code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def depth(model: nn.Module) -> int:
    """Weighted layers as the papers count them: convolutions and the classifier, not the
    projection shortcuts (`shortcut` in a ResNet unit, `h1`/`h2` in a RevNet downsampling unit)."""
    return sum(
        isinstance(m, nn.Conv2d | nn.Linear)
        for name, m in model.named_modules()
        if name.split(".")[-1] not in ("shortcut", "h1", "h2")
    )


RESIDUALS = {"basic": BasicResidual, "bottleneck": BottleneckResidual}


def resnet_cifar(units: int, block: str = "basic", num_classes: int = 10) -> ResNet:
    """A CIFAR ResNet of any depth: `units` per stage (depth 6n+2 basic, 9n+2 bottleneck)."""
    return ResNet(RESIDUALS[block], (units,) * 3, num_classes=num_classes)


def resnet32(num_classes: int = 10) -> ResNet:
    return ResNet(BasicResidual, (5, 5, 5), num_classes=num_classes)


def resnet110(num_classes: int = 10) -> ResNet:
    return ResNet(BasicResidual, (18, 18, 18), num_classes=num_classes)


def resnet164(num_classes: int = 10) -> ResNet:
    return ResNet(BottleneckResidual, (18, 18, 18), num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision's ImageNet ResNet-50 (the i-RevNet table's reference row), declared a plain
    classifier for bench/contracts.py."""
    from torchvision.models import resnet50 as torchvision_resnet50

    model = torchvision_resnet50(num_classes=num_classes)
    model.capabilities = frozenset()
    return model
