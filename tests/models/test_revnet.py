"""RevNet: exact inverses, the memory-saving backward against plain autograd (gradients,
BatchNorm statistics, dropout masks, leaf inputs, float32 drift), stored bytes flat in depth,
depth and parameter counts against the paper."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.activations import count_saved_bytes
from models import count_parameters
from models.resnet import BasicResidual, BottleneckResidual, depth
from models.revnet import (
    DownsampleBlock,
    ReversibleBlock,
    ReversibleSequence,
    RevNet,
    revnet38,
    revnet56_imagenet,
    revnet104_imagenet,
    revnet110,
    revnet164,
    without_reversible_blocks,
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def sequence(n: int, half: int = 8, residual=BasicResidual, dropout: float = 0.0):
    def fn():
        return nn.Sequential(residual(half, half), nn.Dropout(dropout))

    torch.manual_seed(0)
    return ReversibleSequence([ReversibleBlock(fn(), fn()) for _ in range(n)])


def train_step(model: nn.Module, memory_saving: bool, x: torch.Tensor, loss_fn, seed: int = 0):
    """One forward/backward on a copy of `model`; returns (copy, input leaf)."""
    model = copy.deepcopy(model).train()
    model.memory_saving = memory_saving
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    loss_fn(model(x), x).backward()
    return model, x


def assert_same_gradients(model, x, loss_fn, tol: float):
    saving, x_saving = train_step(model, True, x, loss_fn)
    plain, x_plain = train_step(model, False, x, loss_fn)
    assert rel_err(x_saving.grad, x_plain.grad) < tol
    for (name, p), q in zip(saving.named_parameters(), plain.parameters(), strict=True):
        assert rel_err(p.grad, q.grad) < tol, name


def projection_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1, 1, out[0].numel(), dtype=out.dtype).view_as(out[0])
    return (out * w).sum()


def class_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, torch.arange(len(out)) % out.shape[1])


@pytest.mark.parametrize("residual", [BasicResidual, BottleneckResidual])
@pytest.mark.parametrize("train", [True, False])
def test_inverse_recovers_the_input(residual, train):
    torch.manual_seed(0)
    block = ReversibleBlock(residual(16, 16), residual(16, 16)).train(train)
    x = torch.randn(4, 32, 8, 8)
    with torch.no_grad():
        y = block(x)
        assert (y - x).abs().max() > 0.1
        assert (block.inverse(y) - x).abs().max() < 1e-5


def test_single_block_gradients_match_autograd():
    model = sequence(1).double()
    assert_same_gradients(
        model, torch.randn(2, 16, 8, 8, dtype=torch.float64), projection_loss, 1e-6
    )


def test_revnet38_gradients_match_autograd():
    torch.manual_seed(0)
    model = revnet38().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert_same_gradients(model, x, class_loss, 1e-6)


def test_bottleneck_imagenet_shaped_revnet_gradients_match_autograd():
    torch.manual_seed(0)
    model = RevNet(BottleneckResidual, (2, 2, 2, 2), (8, 8, 8, 16, 16), 5, imagenet=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    assert_same_gradients(model.double(), x, class_loss, 1e-6)


def test_batchnorm_statistics_move_once_per_step():
    torch.manual_seed(0)
    model = RevNet(BasicResidual, (2, 2, 2), (8, 8, 16, 16), 5)
    x = torch.randn(4, 3, 16, 16)
    saving, _ = train_step(model, True, x, class_loss)
    plain, _ = train_step(model, False, x, class_loss)
    for (name, a), b, before in zip(
        saving.named_buffers(), plain.buffers(), model.buffers(), strict=True
    ):
        assert torch.equal(a, b), name
        assert not torch.equal(a, before), name
    tracked = [
        m.num_batches_tracked.item() for m in saving.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    assert set(tracked) == {1}


def test_dropout_masks_are_replayed_in_backward():
    model = sequence(3, dropout=0.5).double()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    assert_same_gradients(model, x, projection_loss, 1e-6)
    # The replay must not move the global RNG stream either.
    train_step(model, True, x, projection_loss, seed=1)
    after_saving = torch.rand(4)
    train_step(model, False, x, projection_loss, seed=1)
    assert torch.equal(after_saving, torch.rand(4))


def test_leaf_input_used_elsewhere_gets_its_gradient_once():
    model = sequence(2).double()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    x_before = x.clone()

    def loss(out, x):
        return projection_loss(out, x) + (x * x_before.flip(0)).sum()

    assert_same_gradients(model, x, loss, 1e-6)
    _, x_saving = train_step(model, True, x, loss)
    assert torch.equal(x_saving.detach(), x_before)


def test_float32_drift_through_many_blocks_stays_small():
    model = sequence(18)
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        y = model(x)
        assert (model.inverse(y) - x).abs().max() < 1e-4
    # Float32 gradient error depends on the machine, so the memory-saving backward is held to
    # plain autograd's own float32 error against float64 (10x, plus a floor of a few epsilons).
    exact, x_exact = train_step(model.double(), False, x.double(), projection_loss)
    saving, x_saving = train_step(model.float(), True, x, projection_loss)
    plain, x_plain = train_step(model, False, x, projection_loss)
    grads = zip(saving.parameters(), plain.parameters(), exact.parameters(), strict=True)
    for s, p, e in [(x_saving, x_plain, x_exact), *grads]:
        plain_error = rel_err(p.grad.double(), e.grad)
        assert rel_err(s.grad.double(), e.grad) <= 10 * plain_error + 1e-6


def test_a_reversible_run_stores_only_its_output():
    model = sequence(6).train()
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    stored, tensors, y = count_saved_bytes(lambda: model(x), exclude=model.parameters())
    assert (stored, tensors) == (y.nbytes, 1)
    model.memory_saving = False
    assert count_saved_bytes(lambda: model(x), exclude=model.parameters())[0] > 20 * y.nbytes


def saved_bytes(model: nn.Module) -> int:
    x = torch.randn(2, 3, 32, 32)
    return count_saved_bytes(lambda: model.train()(x), exclude=model.parameters())[0]


def test_stored_activations_are_flat_in_depth():
    models = [RevNet(BasicResidual, (n, n, n), (32, 32, 64, 128)) for n in (3, 9, 18)]
    stored = [saved_bytes(m) for m in models]
    assert max(stored) <= 1.1 * min(stored)
    # The floor (stem, downsampling units, head) is the same at every depth, and the
    # reversible runs add at most their outputs (batch 2, float32) to it.
    floors = [saved_bytes(without_reversible_blocks(m)) for m in models]
    assert len(set(floors)) == 1
    outputs = 2 * 4 * (32 * 32 * 32 + 64 * 16 * 16 + 128 * 8 * 8)
    assert floors[0] <= min(stored) and max(stored) <= floors[0] + outputs
    models[-1].memory_saving = False
    assert saved_bytes(models[-1]) > 3 * max(stored)


@pytest.mark.parametrize(
    "build, layers, published",
    [(revnet38, 38, 0.46e6), (revnet110, 110, 1.73e6), (revnet164, 164, 1.75e6)],
)
def test_cifar_depth_and_parameter_count_match_the_paper(build, layers, published):
    model = build()
    assert depth(model) == layers
    assert abs(count_parameters(model) - published) / published < 0.02


@pytest.mark.parametrize("build, layers", [(revnet56_imagenet, 56), (revnet104_imagenet, 104)])
def test_imagenet_depths(build, layers):
    with torch.device("meta"):
        model = build()
    assert depth(model) == layers
    assert model.fc.in_features == 832 * 4


def test_imagenet_revnet56_has_the_28m_parameters_of_i_revnet_table_1():
    with torch.device("meta"):
        assert abs(count_parameters(revnet56_imagenet()) - 28e6) / 28e6 < 0.02


def test_units_that_change_shape_are_the_only_non_reversible_ones():
    model = revnet164()
    downsampling = [m for m in model.modules() if isinstance(m, DownsampleBlock)]
    reversible = [m for m in model.modules() if isinstance(m, ReversibleBlock)]
    assert (len(downsampling), len(reversible)) == (3, 24)
    model = revnet38()  # 32 -> 32 channels at stride 1: the first stage is all reversible
    assert sum(isinstance(m, DownsampleBlock) for m in model.modules()) == 2


def test_memory_saving_switch_reaches_every_run():
    model = revnet110(memory_saving=False)
    runs = [m for m in model.modules() if isinstance(m, ReversibleSequence)]
    assert len(runs) == 3 and not any(r.memory_saving for r in runs)
    model.memory_saving = True
    assert all(r.memory_saving for r in runs) and model.memory_saving
