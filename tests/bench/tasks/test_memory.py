"""bench.tasks.memory: the gradient and reconstruction checks of the RevNet memory table."""

import torch
from torch import nn

from bench.tasks.memory import gradient_errors, reconstruction_drift
from models.revnet import revnet_cifar


def small_revnet() -> nn.Module:
    torch.manual_seed(0)
    return revnet_cifar(3, "basic").train()


def test_gradient_errors_compare_the_two_backward_paths():
    model = small_revnet()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    errors = gradient_errors(model, x, y)
    # float32 noise only: a RevNet-38 at this batch stays far below 1e-3 either way.
    assert 0 < errors["grad_error"] < 1e-4
    assert errors["grad_error_f64"] < 1e-4 and errors["plain_grad_error_f64"] < 1e-4
    assert model.memory_saving  # measured on copies


def test_gradient_errors_see_a_broken_backward():
    model = small_revnet()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    block = model.stages[0][-1].blocks[0]
    block.g = nn.Sequential(block.g, _Scale(0.5))
    assert gradient_errors(model, x, y)["grad_error"] < 1e-4  # a consistent change is fine
    block.g[1].scale_in_backward = True
    assert gradient_errors(model, x, y)["grad_error"] > 1e-2


def test_reconstruction_drift_is_float32_round_off():
    model = small_revnet()
    drift = reconstruction_drift(model, torch.randn(4, 3, 16, 16))
    assert 0 < drift < 1e-5


class _Scale(nn.Module):
    """Multiplies by `scale`; with `scale_in_backward`, only while grad is disabled. The
    memory-saving path runs forward without grad and recomputes with it, so it then sees two
    different functions, as it would with a broken replay."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.scale_in_backward = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_in_backward and torch.is_grad_enabled():
            return x
        return x * self.scale
