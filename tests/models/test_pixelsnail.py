"""Tests for models/pixelsnail.py: causal attention, causality of the whole model, its
receptive field, the model contract and the cached sampler."""

import pytest
import torch

from models.pixelcnnpp import mixture_terms
from models.pixelsnail import PixelSNAIL, attention_step, causal_attention

from .cached import assert_cached_params_equal_full_pass


def make(shape, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"nr_filters": 8, "n_blocks": 2, "nr_resnet": 1, "key_size": 4, **kwargs}
    return PixelSNAIL(shape=shape, nr_logistic_mix=2, **kwargs).double().eval()


def images(shape, n=2, seed=0):
    return torch.randint(
        0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed)
    ).double()


@pytest.mark.parametrize("n_heads", [1, 2])
def test_attention_reads_strictly_earlier_positions(n_heads):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 4, 3, 4, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = causal_attention(q, k, v, n_heads)
    assert out.shape == (2, 6, 3, 4)
    assert torch.all(out[:, :, 0, 0] == 0)  # nothing precedes the first position
    for p in range(1, 12):
        grads = torch.autograd.grad(out.flatten(2)[:, :, p].sum(), (q, k, v), retain_graph=True)
        gq, gk, gv = (t.abs().sum((0, 1)).flatten() for t in grads)
        assert torch.all(gk[p:] == 0) and torch.all(gv[p:] == 0), p
        assert torch.all(gv[:p] != 0), p  # every earlier value is read
        assert torch.all(gq[:p] == 0) and torch.all(gq[p + 1 :] == 0), p
        assert gq[p] != 0 or p == 1, p  # a single earlier position gets weight 1 whatever q is
    if n_heads == 1:
        # position (1, 1) = 5: softmax(q K^T / sqrt(d_k)) V over positions 0..4
        weights = torch.softmax(q[0, :, 1, 1] @ k[0].flatten(1)[:, :5] / 2.0, dim=0)
        torch.testing.assert_close(out[0, :, 1, 1], v[0].flatten(1)[:, :5] @ weights)


@pytest.mark.parametrize("colors, n_heads", [(1, 1), (3, 2)])
def test_causality_and_full_receptive_field(colors, n_heads):
    """Sub-pixel (i, j, c)'s distribution has zero gradient w.r.t. every input at or after it;
    through the attention it depends on every earlier pixel, even with one residual layer."""
    H, W = 5, 6
    shape = (colors, H, W)
    model = make(shape, n_heads=n_heads)
    x = images(shape).requires_grad_()
    log_pi, means, log_scales = mixture_terms(x, model.params(x))
    for i in range(H):
        for j in range(W):
            for c in range(colors):
                out = log_pi[:, :, i, j].sum() + means[:, c, :, i, j].sum()
                out = out + log_scales[:, c, :, i, j].sum()
                (grad,) = torch.autograd.grad(out, x, retain_graph=True)
                g = grad.abs().sum(0).permute(1, 2, 0).reshape(-1)
                k = (i * W + j) * colors + c
                assert torch.all(g[k:] == 0), (i, j, c)
                earlier_pixels = g[: (i * W + j) * colors].reshape(-1, colors).sum(1)
                assert torch.all(earlier_pixels != 0), (i, j, c)


def test_forward_equals_nll_with_finite_gradients():
    shape = (3, 4, 4)
    model = make(shape, n_classes=2)
    assert model.input_kind == "discrete256"
    x, y = images(shape, n=3), torch.tensor([0, 1, 1])
    loss = model(x, y)
    assert loss.shape == (3,)
    assert torch.equal(loss.detach(), model.nll(x, y))
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert not torch.equal(model.nll(x, torch.tensor([1, 0, 0])), loss.detach())
    with pytest.raises(ValueError):
        PixelSNAIL(shape=(3, 4, 4), key_size=6, n_heads=4)


@pytest.mark.parametrize("n_heads", [1, 2])
def test_attention_step_equals_causal_attention(n_heads):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 4, 3, 4, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    full = causal_attention(q, k, v, n_heads).flatten(2)
    for p in range(12):
        query = q.flatten(2)[:, :, p, None, None]
        out = attention_step(query, k.flatten(2)[..., :p], v.flatten(2)[..., :p], n_heads)
        torch.testing.assert_close(out[:, :, 0, 0], full[..., p], rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "shape, kwargs", [((3, 4, 5), {}), ((1, 4, 5), dict(n_heads=2, n_classes=2))]
)
def test_cached_params_equal_full_pass(shape, kwargs):
    """The stream run at each pixel alone, from the convolutions' caches and the keys and
    values of the pixels drawn before, gives the full pass's parameters at every pixel."""
    model = make(shape, **kwargs)
    x, y = images(shape), (torch.tensor([0, 1]) if kwargs.get("n_classes") else None)
    assert_cached_params_equal_full_pass(model, x, y)


@pytest.mark.parametrize(
    "shape, kwargs", [((3, 4, 5), {}), ((1, 5, 4), dict(n_heads=2, n_classes=2))]
)
def test_cached_sampler_equals_naive_bit_for_bit(shape, kwargs):
    """With dropout 0.5 in eval mode, two heads and a class condition."""
    model = make(shape, **kwargs)
    y = torch.tensor([0, 1, 1]) if kwargs.get("n_classes") else None
    naive = model.sample(3, torch.Generator().manual_seed(5), y=y, naive=True)
    cached = model.sample(3, torch.Generator().manual_seed(5), y=y)
    assert torch.equal(naive, cached)
    assert len(naive.unique()) > 10
