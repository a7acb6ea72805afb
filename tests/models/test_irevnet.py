"""i-RevNet: exact inverses (each piece and whole networks), dimension, counts against Table 1."""

import pytest
import torch
import torch.nn.functional as F

from models import count_parameters
from models.irevnet import (
    InjectivePad,
    IRevBlock,
    IRevNet,
    SpaceToDepth,
    irevnet_a,
    irevnet_b,
    irevnet_cifar,
    irevnet_released_imagenet,
)


def calibrated(model: IRevNet, x: torch.Tensor) -> IRevNet:
    """Eval mode with BatchNorm statistics from one train-mode pass on x."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_space_to_depth_is_a_permutation_with_exact_inverse():
    x = torch.randn(2, 5, 8, 12)
    y = SpaceToDepth(2)(x)
    assert y.shape == (2, 20, 4, 6)
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)
    assert torch.equal(SpaceToDepth(2).inverse(y), x)
    # A 2x2 patch lands in one spatial position: the map is local, not a reshape.
    assert torch.equal(y[0, :, 0, 0].sort().values, x[0, :, :2, :2].flatten().sort().values)


def test_injective_pad_appends_zeros_and_drops_them_exactly():
    x = torch.randn(2, 3, 4, 4)
    pad = InjectivePad(3, 16)
    y = pad(x)
    assert y.shape == (2, 16, 4, 4)
    assert torch.equal(y[:, :3], x) and not y[:, 3:].any()
    assert torch.equal(pad.inverse(y), x)


@pytest.mark.parametrize(
    "in_ch, width, stride, hw",
    [
        ((8, 8), 8, 1, 8),  # plain block
        ((8, 8), 32, 2, 8),  # psi inside the block
        ((1, 2), 16, 1, 8),  # injective padding of unequal halves (the CIFAR input)
        ((6, 6), 48, 2, 8),  # psi then padding
    ],
)
def test_block_inverts_exactly_in_float64(in_ch, width, stride, hw):
    torch.manual_seed(0)
    block = IRevBlock(in_ch, width, stride, kernels=(1, 3, 1)).double()
    x = torch.randn(4, in_ch[0], hw, hw, dtype=torch.float64)
    x_tilde = torch.randn(4, in_ch[1], hw, hw, dtype=torch.float64)
    block.train()
    with torch.no_grad():
        block((x, x_tilde))
    block.eval()
    with torch.no_grad():
        x_next, x_tilde_next = block((x, x_tilde))
        assert x_next.shape == x_tilde_next.shape == (4, width, hw // stride, hw // stride)
        # x_{j+1} = S x̃_j exactly; x̃_{j+1} really carries F(x̃_j).
        assert torch.equal(x_next, block.s_tilde(x_tilde))
        assert (x_tilde_next - block.s(x)).abs().max() > 1e-2
        x_rec, x_tilde_rec = block.inverse((x_next, x_tilde_next))
    assert (x_rec - x).abs().max() < 1e-12
    assert (x_tilde_rec - x_tilde).abs().max() < 1e-12


@pytest.mark.slow
def test_irevnet_b_is_bijective_and_inverts_at_224_float32():
    torch.manual_seed(0)
    model_b = irevnet_b().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits, z = model_b(x)
        x_rec = model_b.inverse(z)
    assert logits.shape == (1, 1000)
    assert z.shape == (1, 3072, 7, 7) and z.numel() == x.numel()
    assert (x_rec - x).abs().max() < 1e-4


@pytest.mark.slow
def test_irevnet_a_is_injective_and_inverts_at_224_float32():
    torch.manual_seed(0)
    model = irevnet_a().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _, z = model(x)
        x_rec = model.inverse(z)
    assert z.shape == (1, 12288, 7, 7) and z.numel() == 4 * x.numel()
    assert (x_rec - x).abs().max() < 1e-4


def test_bijective_layout_inverts_in_float64():
    """(b)'s reshuffles and widths with fewer blocks, at 64x64: float64 leaves only rounding."""
    torch.manual_seed(0)
    model = IRevNet([1, 2, 2, 1], [2, 2, 2, 2], [24, 96, 384, 1536], init_ds=2).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    calibrated(model, x)
    with torch.no_grad():
        _, z = model(x)
        x_rec = model.inverse(z)
    assert z.numel() == x.numel()
    assert (x_rec - x).abs().max() < 1e-10


def test_injective_layout_pads_and_inverts_in_float64():
    """(a)'s structure (4x4 reshuffle to 48 channels, zero-padded in the first block, which
    does not downsample) at half its width and fewer blocks: z is twice the size of x, and the
    inverse drops the padding to return x itself."""
    torch.manual_seed(0)
    model = IRevNet([1, 1, 2, 1], [1, 2, 2, 2], [48, 192, 768, 3072], init_ds=4).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    calibrated(model, x)
    with torch.no_grad():
        _, z = model(x)
        x_rec = model.inverse(z)
    assert z.numel() == 2 * x.numel()
    assert x_rec.shape == x.shape
    assert (x_rec - x).abs().max() < 1e-10


def test_parameter_counts_match_table_1():
    """Table 1: i-RevNet (a) 181M, (b) 29M. (b) is the released layout with the paper's
    1x1-3x3-1x1 bottleneck; (a)'s configuration is a fit to its count (see `irevnet_a`)."""
    with torch.device("meta"):
        assert abs(count_parameters(irevnet_a()) / 181e6 - 1) < 0.02
        assert abs(count_parameters(irevnet_b()) / 29e6 - 1) < 0.02


def test_parameter_count_of_released_code():
    """The released ILSVRC_main.py model (3x3-3x3-3x3): 125,120,356 parameters, the 125.12M
    reported in jhjacobsen/pytorch-i-revnet issue #19."""
    with torch.device("meta"):
        assert count_parameters(irevnet_released_imagenet()) == 125_120_356


def test_cifar_model_shapes_and_inverse():
    torch.manual_seed(0)
    model = irevnet_cifar()
    x = torch.randn(2, 3, 32, 32)
    calibrated(model, x)
    with torch.no_grad():
        logits, z = model(x)
        x_rec = model.inverse(z)
    assert logits.shape == (2, 10)
    assert z.shape == (2, 512, 8, 8) and z.numel() > x.numel()
    assert (x_rec - x).abs().max() < 1e-4
    # Released CIFAR layout counts 6,274,826 with its padding before F; ours reads the
    # 2 unpadded channels of x̃_0 in the first convolution instead of 16 (see module docstring).
    assert count_parameters(model) == 6_274_322


def test_gradients_reach_every_parameter():
    """On the CIFAR model with 2 blocks a stage: padding x̃_0 before F, as the released code
    does, would leave the first convolution without gradient."""
    torch.manual_seed(0)
    model = IRevNet(
        [2, 2, 2], [1, 2, 2], [16, 64, 256], init_ds=1, in_shape=(3, 32, 32), kernels=(3, 3, 3)
    ).train()
    x = torch.randn(4, 3, 32, 32)
    logits, _ = model(x)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead
