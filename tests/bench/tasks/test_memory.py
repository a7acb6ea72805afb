"""bench.tasks.memory: the gradient and reconstruction checks of the RevNet memory table."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bench.tasks.memory import gradient_errors, logits_of, reconstruction_drift
from models.revnet import revnet_cifar


def small_revnet() -> nn.Module:
    torch.manual_seed(0)
    return revnet_cifar(3, "basic").train()


# Float32 gradient error depends on the machine (summation order, SIMD width): a small RevNet's
# plain autograd measured 4e-6 on one CPU and 1e-2 on another. So the memory-saving path's
# float32 error is judged against plain autograd's own, and exactness is checked in float64.
FLOAT32_FLOOR = 1e-6  # a few float32 epsilons, for when plain autograd happens to be exact


def float32_bound(errors: dict[str, float]) -> float:
    """What the memory-saving backward may add on top of plain autograd's float32 error."""
    return 10 * errors["plain_grad_error_f64"] + FLOAT32_FLOOR


def float64_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Worst relative gap between the two backward paths' gradients in float64."""

    def grads(memory_saving: bool) -> list[torch.Tensor]:
        m = copy.deepcopy(model).double()
        m.memory_saving = memory_saving
        F.cross_entropy(logits_of(m(x.double())), y).backward()
        return [p.grad for p in m.parameters()]

    pairs = zip(grads(True), grads(False), strict=True)
    return max(((g - r).norm() / r.norm()).item() for g, r in pairs if r.norm() > 0)


def test_gradient_errors_compare_the_two_backward_paths():
    model = small_revnet()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    errors = gradient_errors(model, x, y)
    assert 0 < errors["grad_error_f64"] <= float32_bound(errors)
    assert 0 < errors["grad_error"] <= errors["grad_error_f64"] + errors["plain_grad_error_f64"]
    assert model.memory_saving  # measured on copies
    assert float64_gap(small_revnet(), x, y) < 1e-10


def test_gradient_errors_see_a_broken_backward():
    model = small_revnet()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    block = model.stages[0][-1].blocks[0]
    block.g = nn.Sequential(block.g, _Scale(0.5))
    consistent = gradient_errors(model, x, y)  # a consistent change is fine
    assert consistent["grad_error_f64"] <= float32_bound(consistent)
    block.g[1].scale_in_backward = True
    broken = gradient_errors(model, x, y)
    assert broken["grad_error"] > 1e-2 and broken["grad_error"] > 10 * float32_bound(consistent)


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
