"""Tests for models/pixelcnn.py: masks, causality, the blind spot, the likelihood and the two
samplers of both models."""

import math

import pytest
import torch

from models.pixelcnn import GatedPixelCNN, MaskedConv2d, PixelCNN, spatial_mask

# wide enough output layers that no sub-pixel's ReLUs are all off by chance
TINY = {
    PixelCNN: dict(hidden=12, n_blocks=2, out_hidden=24),
    GatedPixelCNN: dict(hidden=12, n_layers=3, out_hidden=24),
}


def make(cls, shape, levels, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(shape=shape, levels=levels, **{**TINY[cls], **kwargs}).double()


def data(shape, levels, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, *shape), generator=g).double()


def input_gradients(model, x, i, j, c):
    """|d(logits of sub-pixel (i, j, c)) / dx| summed over the logits and the images of the
    batch (ReLUs that happen to be off for one image do not hide a connection), flattened in
    raster order with the channels innermost: index (i * W + j) * C + c."""
    x = x.clone().requires_grad_()
    logits = model.logits(x)
    (grad,) = torch.autograd.grad(logits[:, c, ..., i, j].sum(), x)
    return grad.abs().sum(0).permute(1, 2, 0).reshape(-1)


def test_spatial_mask_5x5():
    above = torch.ones(2, 5)
    below = torch.zeros(2, 5)
    centre_a = torch.tensor([[1.0, 1, 0, 0, 0]])
    centre_b = torch.tensor([[1.0, 1, 1, 0, 0]])
    assert torch.equal(spatial_mask(5, "A"), torch.cat([above, centre_a, below]))
    assert torch.equal(spatial_mask(5, "B"), torch.cat([above, centre_b, below]))
    with pytest.raises(ValueError):
        spatial_mask(5, "C")


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_colour_groups(mask_type):
    conv = MaskedConv2d(3, 6, 3, mask_type, colors=3)
    centre = conv.mask[:, :, 1, 1]
    g_out = torch.arange(6) // 2
    g_in = torch.arange(3)
    expected = g_in[None] < g_out[:, None] if mask_type == "A" else g_in[None] <= g_out[:, None]
    assert torch.equal(centre, expected.float())
    assert torch.equal(conv.mask[:, :, 0], torch.ones(6, 3, 3))  # the row above: every group
    assert conv(torch.randn(1, 3, 5, 7)).shape == (1, 6, 5, 7)
    with pytest.raises(ValueError):
        MaskedConv2d(4, 6, 3, mask_type, colors=3)


def test_masked_conv_applies_mask_in_forward():
    """Weights under the mask may be anything: the output must not depend on them."""
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 1, 3, "A")
    x = torch.randn(1, 1, 4, 4)
    before = conv(x)
    with torch.no_grad():
        conv.weight[:, :, 2] += 100.0  # the row below the centre
        conv.weight[:, :, 1, 1] += 100.0  # the centre itself
    assert torch.equal(conv(x), before)


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("levels", [2, 256])
@pytest.mark.parametrize("colors", [1, 3])
def test_causality(cls, levels, colors):
    """The logits of sub-pixel (i, j, c) have zero gradient w.r.t. every input at or after it
    in raster/channel order and a nonzero one w.r.t. some earlier input."""
    shape = (colors, 5, 5)
    model = make(cls, shape, levels)
    x = data(shape, levels, n=4)
    for i in range(5):
        for j in range(5):
            for c in range(colors):
                g = input_gradients(model, x, i, j, c)
                k = (i * 5 + j) * colors + c
                assert torch.all(g[k:] == 0), (i, j, c)
                if k > 0:
                    assert torch.any(g[:k] != 0), (i, j, c)


def earlier_pixels_seen(model, x, i, j):
    """The earlier pixels (raster order) whose value reaches pixel (i, j)'s logits."""
    W = x.shape[-1]
    g = input_gradients(model, x, i, j, 0).reshape(-1, x.shape[1]).abs().sum(1)
    return {divmod(k, W): bool(g[k] != 0) for k in range(i * W + j)}


def test_blind_spot_of_pixelcnn_and_none_in_gated():
    """Stacked 3x3 masks never reach (i - 1, j + 2) however deep (Figure 1 of 1606.05328); the
    vertical and horizontal stacks reach every earlier pixel of a 5x5 image in 5 layers."""
    shape = (1, 6, 6)
    plain = make(PixelCNN, shape, 2, first_kernel=3, n_blocks=5)
    seen = earlier_pixels_seen(plain, data(shape, 2, n=4), 3, 1)
    assert not seen[(2, 3)] and not seen[(2, 5)]
    assert seen[(0, 1)] and seen[(2, 2)] and seen[(3, 0)]

    shape = (1, 5, 5)
    gated = make(GatedPixelCNN, shape, 2, first_kernel=3, n_layers=5)
    x = data(shape, 2, n=4)
    for i in range(5):
        for j in range(5):
            assert all(earlier_pixels_seen(gated, x, i, j).values()), (i, j)


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("levels, bits", [(256, 8.0), (2, 1.0)])
def test_uniform_model_scores_log2_levels_bits_per_dim(cls, levels, bits):
    shape = (3, 4, 4)
    model = make(cls, shape, levels)
    with torch.no_grad():
        model.out2.weight.zero_()
        model.out2.bias.zero_()
    x = data(shape, levels)
    bits_per_dim = model.nll(x) / (x[0].numel() * math.log(2))
    torch.testing.assert_close(bits_per_dim, torch.full((2,), bits, dtype=torch.float64))


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("levels", [2, 256])
def test_forward_equals_nll_with_finite_gradients(cls, levels):
    shape = (3, 4, 4)
    model = make(cls, shape, levels, n_classes=3)
    assert model.input_kind == ("binary" if levels == 2 else "discrete256")
    x, y = data(shape, levels, n=3), torch.tensor([0, 1, 2])
    loss = model(x, y)
    assert loss.shape == (3,)
    assert torch.equal(loss.detach(), model.nll(x, y))
    loss.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    other = model.nll(x, torch.tensor([1, 2, 0]))
    assert not torch.equal(other, loss.detach())  # the class enters the likelihood
    with pytest.raises(ValueError):
        model(x)


@pytest.mark.parametrize(
    "shape, levels, kwargs",
    [
        ((3, 7, 7), 256, dict(first_kernel=3)),  # reach 3 < 7: the windows are cropped
        ((3, 5, 5), 256, dict()),  # reach 5 >= 5: the windows cover the image
        ((1, 7, 7), 2, dict(first_kernel=3, n_classes=2)),
    ],
)
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_cached_sampler_equals_naive_bit_for_bit(cls, shape, levels, kwargs):
    model = make(cls, shape, levels, **kwargs)
    y = torch.tensor([0, 1, 1]) if kwargs.get("n_classes") else None
    naive = model.sample(3, torch.Generator().manual_seed(5), y=y, naive=True)
    cached = model.sample(3, torch.Generator().manual_seed(5), y=y)
    assert torch.equal(naive, cached)
    assert len(naive.unique()) > 1


@pytest.mark.parametrize("first_kernel, n_classes", [(3, 0), (5, 2)])
def test_cached_logits_equal_full_pass(first_kernel, n_classes):
    """The row links and the column windows of the cached sampler give the full pass's logits
    at every pixel; a window or a row crop one too small would not (samples alone rarely show
    a small change of the logits)."""
    shape = (3, 7, 8)
    model = make(GatedPixelCNN, shape, 256, first_kernel=first_kernel, n_classes=n_classes)
    assert model.reach < 7
    x, y = data(shape, 256), (torch.tensor([0, 1]) if n_classes else None)
    full = model.logits(x, y)
    for i in range(7):
        links = model.row_links(x, i, y)
        for j in range(8):
            cached = model.window_logits(x, i, j, links, y)
            torch.testing.assert_close(cached, full[..., i, j], rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels, colors, n_classes", [(256, 3, 0), (2, 1, 2)])
def test_pixelcnn_cached_logits_equal_full_pass(levels, colors, n_classes):
    """Each layer computed at one pixel from the caches of the earlier pixels gives the full
    pass's logits at every pixel (7x7 first kernel: a cache's padding reaches past the
    image's edges); a cache that kept a stale or wrong neighbour would not."""
    shape = (colors, 6, 7)
    model = make(PixelCNN, shape, levels, n_classes=n_classes)
    x, y = data(shape, levels), (torch.tensor([0, 1]) if n_classes else None)
    full = model.logits(x, y)
    caches = model.caches(2)
    for i in range(6):
        for j in range(7):
            cached = model.pixel_logits(x, i, j, caches, y)
            torch.testing.assert_close(cached, full[..., i, j], rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("levels", [2, 256])
def test_sample_shape_range_and_generator(cls, levels):
    shape = (3, 3, 4)
    model = make(cls, shape, levels)
    x = model.sample(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, *shape)
    assert torch.equal(x, x.round()) and x.min() >= 0 and x.max() <= levels - 1
    assert torch.equal(x, model.sample(2, torch.Generator().manual_seed(0)))
    assert not torch.equal(x, model.sample(2, torch.Generator().manual_seed(1)))
    assert torch.isfinite(model.nll(x)).all()


def test_hidden_must_split_into_colour_groups():
    with pytest.raises(ValueError):
        GatedPixelCNN(shape=(3, 4, 4), hidden=8)
