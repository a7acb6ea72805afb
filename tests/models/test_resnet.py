"""CIFAR ResNet baselines: depth and parameter counts against the paper, shortcuts, memory."""

import pytest
import torch
from torch import nn

from bench.activations import count_saved_bytes
from models import count_parameters
from models.resnet import PadShortcut, depth, resnet32, resnet110, resnet164


@pytest.mark.parametrize(
    "build, layers, published",
    [(resnet32, 32, 0.46e6), (resnet110, 110, 1.73e6), (resnet164, 164, 1.70e6)],
)
def test_depth_and_parameter_count_match_the_paper(build, layers, published):
    model = build()
    assert depth(model) == layers
    assert abs(count_parameters(model) - published) / published < 0.02


def test_head_follows_num_classes():
    model = resnet32(num_classes=100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_pad_shortcut_pools_and_zero_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert not y[:, :8].any() and not y[:, 24:].any()
    torch.testing.assert_close(y[:, 8:24], nn.functional.avg_pool2d(x, 2))


def test_bottleneck_units_project_on_shape_change_only():
    model = resnet164()
    projections = [m for name, m in model.named_modules() if name.endswith("shortcut")]
    convs = [m for m in projections if isinstance(m, nn.Conv2d)]
    # 16 -> 64 channels, then 64 -> 128 and 128 -> 256 with stride 2.
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (16, 64, (1, 1)),
        (64, 128, (2, 2)),
        (128, 256, (2, 2)),
    ]


def saved_bytes(model: nn.Module) -> int:
    x = torch.randn(2, 3, 32, 32)
    return count_saved_bytes(lambda: model.train()(x), exclude=model.parameters())[0]


def test_stored_activations_grow_with_depth():
    assert saved_bytes(resnet110()) >= 3 * saved_bytes(resnet32())
