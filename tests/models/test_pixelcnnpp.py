"""Tests for models/pixelcnnpp.py: the discretized logistic mixture, causality, the model
contract and the cached sampler."""

import math

import pytest
import torch

from models.pixelcnnpp import (
    DownRightShiftedConv2d,
    DownRightShiftedDeconv2d,
    DownShiftedConv2d,
    DownShiftedDeconv2d,
    PixelCNNpp,
    channel_log_probs,
    discretized_logistic_mixture_log_prob,
    mixture_terms,
    sample_pixel,
)
from models.pixelcnnpp_sampler import At, Cache

from .cached import assert_cached_params_equal_full_pass

VALUES = torch.arange(256, dtype=torch.float64)


def random_params(n_sets, K, C, seed=0, log_scale=(-9.0, 3.0), mean=(-3.0, 3.0)):
    """[1, K * (1 + 2C + C(C-1)/2), n_sets, 1] with log-scales and means drawn uniformly
    (log-scales below the clamp of -7 included), coefficients and logits from N(0, 2^2)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: torch.rand(K * C, n_sets, generator=g, dtype=torch.float64) * (hi - lo) + lo  # noqa: E731
    logits = 2 * torch.randn(K, n_sets, generator=g, dtype=torch.float64)
    coeffs = 2 * torch.randn(K * C * (C - 1) // 2, n_sets, generator=g, dtype=torch.float64)
    return torch.cat([logits, u(*mean), u(*log_scale), coeffs])[None, :, :, None]


def sum_over_values(params):
    """sum_v P(x = v) for one-channel params [1, P, S, 1]: [S]."""
    S = params.shape[2]
    x = VALUES[:, None, None, None].expand(256, 1, S, 1)
    log_p = discretized_logistic_mixture_log_prob(x, params.expand(256, -1, -1, -1))
    return torch.logsumexp(log_p[:, :, 0], dim=0).exp()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_probabilities_sum_to_one(dtype):
    """Random mixtures with log-scales from -9 (below the clamp of -7, where the small-probability
    fallback is used) to 3, and means far outside [-1, 1]: the 256 bins sum to 1 within 1e-5."""
    for params in (
        random_params(500, 3, 1, seed=0),
        random_params(50, 2, 1, seed=2, mean=(-50.0, 50.0)),
    ):
        sums = sum_over_values(params.to(dtype)).double()
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)


def test_fallback_loses_at_most_two_bins_of_1e5():
    """The worst case of the paper's fallback: a single sharp component (log-scale -7..-6).
    Only the bins whose mass is below 1e-5 take pdf x width, which underestimates a sharp
    logistic's tail bin; one such bin on each side of the mode holds nearly all the tail, so
    at most 2e-5 is lost (measured up to 1.5e-5 at log-scale -6.9), and never gained."""
    params = random_params(300, 1, 1, seed=1, log_scale=(-7.0, -6.0), mean=(-0.9, 0.9))
    sums = sum_over_values(params)
    assert torch.all(sums <= 1 + 1e-12) and torch.all(sums > 1 - 2e-5)
    assert torch.any(sums < 1 - 1e-5)  # the bound is reached in part, not only in theory


def logistic_cdf(z):
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def brute_force_pixel(x, logits, mu, log_s, coeffs):
    """P(x) of one RGB pixel by the formulas of Section 2 of the paper, in plain Python, and the
    smallest bin mass of any component and channel."""
    xs = [v / 127.5 - 1 for v in x]
    weights = [math.exp(v) for v in logits]
    total, smallest = 0.0, 1.0
    for k in range(len(logits)):
        means = [
            mu[0][k],
            mu[1][k] + math.tanh(coeffs[0][k]) * xs[0],
            mu[2][k] + math.tanh(coeffs[1][k]) * xs[0] + math.tanh(coeffs[2][k]) * xs[1],
        ]
        p = weights[k] / sum(weights)
        for c in range(3):
            s = math.exp(max(log_s[c][k], -7.0))
            hi = 1.0 if x[c] == 255 else logistic_cdf((xs[c] + 1 / 255 - means[c]) / s)
            lo = 0.0 if x[c] == 0 else logistic_cdf((xs[c] - 1 / 255 - means[c]) / s)
            p *= hi - lo
            smallest = min(smallest, hi - lo)
        total += p
    return total, smallest


def test_log_prob_matches_brute_force_rgb():
    """Including both edge bins and the linear dependence between channels."""
    K = 3
    g = torch.Generator().manual_seed(0)
    for x in ([0, 128, 255], [255, 3, 0], [17, 200, 90]):
        logits = torch.randn(K, generator=g, dtype=torch.float64)
        xs = torch.tensor(x, dtype=torch.float64) / 127.5 - 1
        coeffs = torch.randn(3, K, generator=g, dtype=torch.float64)
        a = torch.tanh(coeffs)
        # base means that the linear dependence moves near x, so that every bin has mass
        shift = torch.stack([0 * a[0], a[0] * xs[0], a[1] * xs[0] + a[2] * xs[1]])
        mu = xs[:, None] - shift + 0.1 * torch.randn(3, K, generator=g, dtype=torch.float64)
        log_s = torch.rand(3, K, generator=g, dtype=torch.float64) * 2 - 3
        params = torch.cat([logits, mu.flatten(), log_s.flatten(), coeffs.flatten()])
        log_p = discretized_logistic_mixture_log_prob(
            torch.tensor(x, dtype=torch.float64)[None, :, None, None], params[None, :, None, None]
        )
        expected, smallest = brute_force_pixel(
            x, logits.tolist(), mu.tolist(), log_s.tolist(), coeffs.tolist()
        )
        assert smallest > 1e-5  # every bin is on the exact branch, not the fallback
        torch.testing.assert_close(log_p.exp().item(), expected, rtol=1e-10, atol=0)


def test_tiny_bins_use_the_density_fallback():
    """A bin 0.5 away from a mean with scale e^-7 has mass ~e^-548: the difference of sigmoids
    is 0 in float64, the fallback log(pdf * 2/255) is finite and exact to first order."""
    mu, log_s = 0.0, -7.0
    params = torch.tensor([0.0, mu, log_s], dtype=torch.float64)[None, :, None, None]
    x = torch.tensor([[[[191.0]]]], dtype=torch.float64)  # 191 / 127.5 - 1 = 0.498
    z = (191 / 127.5 - 1 - mu) / math.exp(log_s)
    log_pdf = z - log_s - 2 * math.log1p(math.exp(z))
    log_p = discretized_logistic_mixture_log_prob(x, params).item()
    assert math.isfinite(log_p)
    assert log_p == pytest.approx(log_pdf - math.log(127.5), rel=1e-12)


def test_channel_conditionals_chain_to_the_joint():
    """prod_c P(x_c | x_<c) of the sampler is the mixture over the whole pixel, and each
    conditional is normalised."""
    params = random_params(6, 4, 3, seed=3, log_scale=(-4.0, 0.0), mean=(-1.0, 1.0))[0, :, :, 0].T
    x = torch.randint(0, 256, (6, 3), generator=torch.Generator().manual_seed(0)).double()
    chain = sum(
        channel_log_probs(params, x, c).gather(1, x[:, c, None].long())[:, 0] for c in range(3)
    )
    joint = discretized_logistic_mixture_log_prob(x[:, :, None, None], params[:, :, None, None])
    torch.testing.assert_close(chain, joint[:, 0, 0], atol=1e-6, rtol=0)
    for c in range(3):
        total = channel_log_probs(params, x, c).exp().sum(1)
        torch.testing.assert_close(total, torch.ones_like(total))


def test_sample_pixel_is_the_inverse_cdf():
    params = random_params(5, 3, 1, seed=4, log_scale=(-3.0, 0.0), mean=(-1.0, 1.0))[0, :, :, 0].T
    u = torch.rand(5, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cdf = channel_log_probs(params, torch.zeros(5, 1, dtype=torch.float64), 0).exp().cumsum(1)
    expected = (cdf < u).sum(1).double()
    torch.testing.assert_close(sample_pixel(params, u)[:, 0], expected)


def make(shape, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"nr_filters": 8, "nr_logistic_mix": 2, **kwargs}
    return PixelCNNpp(shape=shape, **kwargs).double().eval()


def images(shape, n=2, seed=0):
    return torch.randint(
        0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed)
    ).double()


@pytest.mark.parametrize("colors", [1, 3])
def test_causality(colors):
    """The distribution of sub-pixel (i, j, c) (mixture weights, means conditioned on earlier
    channels, scales) has zero gradient w.r.t. every input at or after (i, j, c) and a nonzero
    one w.r.t. some earlier input, through all three resolutions."""
    shape = (colors, 8, 8)
    model = make(shape)
    x = images(shape, n=2).requires_grad_()
    log_pi, means, log_scales = mixture_terms(x, model.params(x))
    for i in range(8):
        for j in range(8):
            for c in range(colors):
                out = log_pi[:, :, i, j].sum() + means[:, c, :, i, j].sum()
                out = out + log_scales[:, c, :, i, j].sum()
                (grad,) = torch.autograd.grad(out, x, retain_graph=True)
                g = grad.abs().sum(0).permute(1, 2, 0).reshape(-1)
                k = (i * 8 + j) * colors + c
                assert torch.all(g[k:] == 0), (i, j, c)
                if k > 0:
                    assert torch.any(g[:k] != 0), (i, j, c)


def test_forward_equals_nll_with_finite_gradients_and_dropout():
    shape = (3, 4, 4)
    model = make(shape, n_classes=2)
    assert model.input_kind == "discrete256"
    x, y = images(shape, n=3), torch.tensor([0, 1, 1])
    loss = model(x, y)
    assert loss.shape == (3,)
    assert torch.equal(loss.detach(), model.nll(x, y))
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.train()
    assert not torch.equal(model(x, y), model(x, y))  # dropout is on in training
    with pytest.raises(ValueError):
        PixelCNNpp(shape=(3, 6, 6))


@pytest.mark.parametrize(
    "conv",
    [
        DownShiftedConv2d(4, 5, (2, 3)),
        DownShiftedConv2d(4, 5, (2, 3), shift=True),
        DownShiftedConv2d(4, 5, (1, 3), shift=True),
        DownShiftedConv2d(4, 5, (2, 3), stride=2),
        DownRightShiftedConv2d(4, 5, (2, 2)),
        DownRightShiftedConv2d(4, 5, (2, 1), shift=True),
        DownRightShiftedConv2d(4, 5, (2, 2), stride=2),
        DownShiftedDeconv2d(4, 5),
        DownRightShiftedDeconv2d(4, 5),
    ],
    ids=lambda conv: (
        f"{type(conv).__name__}{getattr(conv.conv, 'stride', '')}-shift{conv.shift}"
        if hasattr(conv, "conv")
        else type(conv).__name__
    ),
)
def test_steps_equal_forward(conv):
    """Each causal layer's `step` on a cached input gives its forward's output at every row
    segment the sampler asks for (whole rows; single positions of the down-right layers)."""
    torch.manual_seed(0)
    conv = conv.double()
    x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    full = conv(x)
    cache = Cache(x, 2, 4, 6, 8)
    for r in range(6):
        cache.write(At(r, 0, 8), x[:, :, r : r + 1])
    H, W = full.shape[-2:]
    segments = (
        [At(r, 0, W) for r in range(H)] if not isinstance(conv, DownRightShiftedDeconv2d) else []
    )
    if isinstance(conv, (DownRightShiftedConv2d, DownRightShiftedDeconv2d)):
        segments += [At(r, c, c + 1) for r in range(H) for c in range(W)]
    for at in segments:
        expected = full[:, :, at.row : at.row + 1, at.start : at.stop]
        torch.testing.assert_close(conv.step(cache, at), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((3, 8, 8), {}),  # every pixel of level 2 is also one of levels 0 and 1
        ((1, 8, 12), dict(nr_resnet=2, n_classes=2)),
    ],
)
def test_cached_params_equal_full_pass(shape, kwargs):
    """The rows of the u stream and the positions of the ul stream computed from the caches
    give the full pass's parameters at every pixel, through all three resolutions."""
    model = make(shape, **kwargs)
    x, y = images(shape), (torch.tensor([0, 1]) if kwargs.get("n_classes") else None)
    assert_cached_params_equal_full_pass(model, x, y)


@pytest.mark.parametrize("shape, n_classes", [((3, 4, 8), 0), ((1, 8, 4), 2)])
def test_cached_sampler_equals_naive_bit_for_bit(shape, n_classes):
    """With dropout 0.5 in eval mode and a class condition."""
    model = make(shape, n_classes=n_classes)
    y = torch.tensor([0, 1, 1]) if n_classes else None
    naive = model.sample(3, torch.Generator().manual_seed(5), y=y, naive=True)
    cached = model.sample(3, torch.Generator().manual_seed(5), y=y)
    assert torch.equal(naive, cached)
    assert len(naive.unique()) > 10
    model.train()
    with pytest.raises(ValueError, match="eval"):
        model.sample(3, y=y)
