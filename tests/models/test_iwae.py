"""Tests for models/iwae.py: the bounds, the k=5000 likelihood estimator and active units."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from models.iwae import (
    IWAE,
    active_units_from_halves,
    active_units_from_means,
    log_mean_exp_chunked,
)


def binary_data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Binary vectors with per-pixel rates in (0, 1), so the data have some structure."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(d, generator=g)
    return (torch.rand(n, d, generator=g) < rates).float()


def make_model(layers: int, x_dim: int = 32, seed: int = 0) -> IWAE:
    torch.manual_seed(seed)
    return IWAE(layers, x_dim=x_dim)


def replay(table: torch.Tensor):
    """A log_w_fn that hands out the rows of `table` in order and records each request."""
    state = {"next": 0, "requests": []}

    def log_w_fn(*args) -> torch.Tensor:
        n = args[-1]  # called as log_w_fn(n), or as model.log_weights(x, n)
        start = state["next"]
        state["next"] += n
        state["requests"].append(n)
        return table[start : start + n]

    return log_w_fn, state


def test_parameter_counts():
    """Counts from the layer sizes (weights + biases; each Gaussian layer has a mean and a
    log-sigma head of the same size).

    One stochastic layer, 784-200-200-50:
      q(z|x):  784*200+200 + 200*200+200 + 2*(200*50+50)       = 157000 + 40200 + 20100 = 217300
      p(x|z):  50*200+200 + 200*200+200 + 200*784+784           = 10200 + 40200 + 157584 = 207984
      total 425284.
    Two stochastic layers, 784-200-200-100-100-100-50:
      q(z1|x):  157000 + 40200 + 2*(200*100+100)                = 237400
      q(z2|z1): 100*100+100 + 100*100+100 + 2*(100*50+50)       = 30300
      p(z1|z2): 50*100+100 + 100*100+100 + 2*(100*100+100)      = 35400
      p(x|z1):  100*200+200 + 40200 + 157584                    = 217984
      total 521084.
    """

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    one, two = IWAE(1), IWAE(2)
    assert count(one.q_z1) == 217300
    assert count(one.p_x) == 207984
    assert count(one) == 425284
    assert [count(two.q_z1), count(two.q_z2), count(two.p_z1), count(two.p_x)] == [
        237400,
        30300,
        35400,
        217984,
    ]
    assert count(two) == 521084


def test_glorot_init_and_output_bias():
    model = IWAE(1)
    w = model.q_z1.h[0].weight
    bound = math.sqrt(6 / (784 + 200))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert all(
        float(m.bias.detach().abs().max()) == 0 for m in model.modules() if hasattr(m, "bias")
    )

    mean_x = torch.linspace(0, 1, 784)
    model.set_output_bias(mean_x)
    p = mean_x.clamp(0.001, 0.999)
    torch.testing.assert_close(model.p_x.logits.bias, torch.log(p / (1 - p)))


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        IWAE(3)
    with pytest.raises(ValueError):
        make_model(1).loss(binary_data(2, 32), 1, "elbo")
    with pytest.raises(ValueError):
        log_mean_exp_chunked(lambda n: torch.zeros(n, 1), k=0, chunk=10)


@pytest.mark.parametrize("layers", [1, 2])
def test_log_weights_match_torch_distributions(layers):
    """Rebuild log w from the same noise with torch.distributions: catches std-vs-variance mix-ups,
    missing normalising constants and the wrong conditioning of any factor."""
    model = make_model(layers, x_dim=12)
    x = binary_data(3, 12)
    k = 4
    torch.manual_seed(7)
    log_w = model.log_weights(x, k)

    torch.manual_seed(7)
    mu1, sigma1 = model.q_z1(x)
    z1 = mu1 + sigma1 * torch.randn(k, *mu1.shape)
    q = Normal(mu1, sigma1).log_prob(z1).sum(-1)
    if layers == 1:
        prior = Normal(0.0, 1.0).log_prob(z1).sum(-1)
    else:
        mu2, sigma2 = model.q_z2(z1)
        z2 = mu2 + sigma2 * torch.randn(mu2.shape)
        q = q + Normal(mu2, sigma2).log_prob(z2).sum(-1)
        mu_p, sigma_p = model.p_z1(z2)
        prior = Normal(mu_p, sigma_p).log_prob(z1).sum(-1) + Normal(0.0, 1.0).log_prob(z2).sum(-1)
    px = Bernoulli(logits=model.p_x(z1)).log_prob(x.expand(k, -1, -1)).sum(-1)

    assert log_w.shape == (k, 3)
    torch.testing.assert_close(log_w, px + prior - q, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layers", [1, 2])
def test_loss_matches_definitions_and_jensen(layers):
    """On the same log w: the VAE loss is -mean(log w), the IWAE loss is -(logsumexp - log k), at
    k = 1 they coincide, and per image the IWAE bound is never below the VAE bound."""
    model = make_model(layers)
    x = binary_data(8, 32)

    torch.manual_seed(1)
    iwae_1 = model.loss(x, 1, "iwae")
    torch.manual_seed(1)
    vae_1 = model.loss(x, 1, "vae")
    torch.testing.assert_close(iwae_1, vae_1, rtol=0, atol=1e-5)

    k = 5
    torch.manual_seed(2)
    log_w = model.log_weights(x, k)
    torch.manual_seed(2)
    iwae_k = model.loss(x, k, "iwae")
    torch.manual_seed(2)
    vae_k = model.loss(x, k, "vae")
    iwae_bound = torch.logsumexp(log_w, 0) - math.log(k)
    vae_bound = log_w.mean(0)
    torch.testing.assert_close(iwae_k, -iwae_bound.mean())
    torch.testing.assert_close(vae_k, -vae_bound.mean())
    assert torch.all(iwae_bound >= vae_bound - 1e-5)
    assert iwae_k < vae_k


def test_bound_increases_with_k_and_vae_bound_does_not():
    """E[log (1/k) sum w] rises with k (Theorem 1); the k-sample VAE bound has the same mean for
    every k. Each estimate averages 20 repeats of 64 images; the standard error is about 0.1 nat
    while the gaps for an untrained model are several nats."""
    model = make_model(1, x_dim=64)
    x = binary_data(64, 64)
    model.set_output_bias(x.mean(0))
    x_rep = x.repeat(20, 1)
    with torch.no_grad():
        iwae = {k: -float(model.loss(x_rep, k, "iwae")) for k in (1, 5, 50)}
        vae = {k: -float(model.loss(x_rep, k, "vae")) for k in (1, 5, 50)}
    assert iwae[5] > iwae[1] + 1.0
    assert iwae[50] > iwae[5] + 1.0
    assert max(vae.values()) - min(vae.values()) < 0.5
    assert abs(iwae[1] - vae[1]) < 0.5


def test_iwae_gradient_is_normalised_weight_average():
    """Section 3: grad L_k = sum_i w~_i grad log w_i with w~_i = w_i / sum_j w_j."""
    model = make_model(2).double()
    x = binary_data(6, 32).double()
    params = list(model.parameters())

    torch.manual_seed(3)
    g_loss = torch.autograd.grad(model.loss(x, 5, "iwae"), params)
    torch.manual_seed(3)
    log_w = model.log_weights(x, 5)
    w_tilde = torch.softmax(log_w.detach(), dim=0)
    g_weighted = torch.autograd.grad(-(w_tilde * log_w).sum(0).mean(), params)
    for a, b in zip(g_loss, g_weighted, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("objective", ["vae", "iwae"])
def test_gradient_reaches_every_parameter(layers, objective):
    model = make_model(layers)
    model.loss(binary_data(8, 32), 5, objective).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def linear_gaussian(seed: int = 0):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so p(x) = N(b, W W^T + s^2 I) exactly.

    The proposal is the exact posterior N(m(x), S) with S = (I + W^T W / s^2)^-1 and
    m(x) = S W^T (x - b) / s^2, but with its mean shifted by half a posterior std and its
    covariance doubled, so the importance weights are not constant: KL(q || posterior) is about
    0.8 nat and the relative std of the weights gives a standard error of 0.012 nat at k = 5000.
    Returns log_w_fn, the true log p(x) and the ELBO estimated from 20000 samples.
    """
    g = torch.Generator().manual_seed(seed)
    d_z, d_x, s = 3, 5, 0.5
    W = torch.randn(d_x, d_z, generator=g, dtype=torch.float64)
    b = torch.randn(d_x, generator=g, dtype=torch.float64)
    z = torch.randn(4, d_z, generator=g, dtype=torch.float64)
    x = z @ W.T + b + s * torch.randn(4, d_x, generator=g, dtype=torch.float64)

    S = torch.linalg.inv(torch.eye(d_z, dtype=torch.float64) + W.T @ W / s**2)
    m = (x - b) @ W @ S / s**2
    q = MultivariateNormal(m + 0.5 * S.diagonal().sqrt(), scale_tril=torch.linalg.cholesky(2 * S))
    prior = Normal(torch.zeros(d_z, dtype=torch.float64), 1.0)

    def log_w_fn(n: int) -> torch.Tensor:
        z = q.sample((n,))
        log_px_z = Normal(z @ W.T + b, s).log_prob(x).sum(-1)
        return log_px_z + prior.log_prob(z).sum(-1) - q.log_prob(z)

    true = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(d_x, dtype=torch.float64))
    return log_w_fn, true.log_prob(x), log_w_fn(20000).mean(0)


@pytest.mark.parametrize("chunk", [5000, 512, 999])
def test_estimator_matches_closed_form_marginal(chunk):
    torch.manual_seed(4)
    log_w_fn, log_px, elbo = linear_gaussian()
    estimate = log_mean_exp_chunked(log_w_fn, k=5000, chunk=chunk)
    assert estimate.dtype == torch.float64 and estimate.shape == log_px.shape
    torch.testing.assert_close(estimate, log_px, rtol=0, atol=0.06)
    # The proposal's own bound is far below: the tolerance above is tight by comparison.
    assert torch.all(elbo < log_px - 0.3)


@pytest.mark.parametrize("chunk", [1, 64, 999, 5000, 7000])
def test_chunking_is_exact_on_the_same_samples(chunk):
    """The same 5000 log-weights, however they are chunked, give the one-shot value; exactly k rows
    are requested (the last chunk is smaller when chunk does not divide k). The offset of -3000
    would underflow a naive mean of exp(log w)."""
    table = torch.randn(5000, 3, generator=torch.Generator().manual_seed(5)) * 4 - 3000
    log_w_fn, state = replay(table)
    estimate = log_mean_exp_chunked(log_w_fn, k=5000, chunk=chunk)
    expected = torch.logsumexp(table.double(), 0) - math.log(5000)
    torch.testing.assert_close(estimate, expected, rtol=0, atol=1e-9)
    assert sum(state["requests"]) == 5000
    assert max(state["requests"]) == min(chunk, 5000)
    assert estimate.dtype == torch.float64


def test_nll_single_chunk_is_the_iwae_estimate():
    model = make_model(2)
    x = binary_data(5, 32)
    torch.manual_seed(6)
    nll = model.nll(x, k=50, chunk=50)
    torch.manual_seed(6)
    log_w = model.log_weights(x, 50).detach()
    assert nll.shape == (5,) and nll.dtype == torch.float64
    assert torch.all(nll > 0)
    torch.testing.assert_close(nll, -(torch.logsumexp(log_w.double(), 0) - math.log(50)))


def test_nll_does_not_depend_on_chunk_size(monkeypatch):
    """Replaying the same 100 log-weights per image: chunk 30 (30+30+30+10) equals chunk 100."""
    model = make_model(1)
    x = binary_data(4, 32)
    with torch.no_grad():
        table = model.log_weights(x, 100)
    results = []
    for chunk in (30, 100):
        log_w_fn, state = replay(table)
        monkeypatch.setattr(model, "log_weights", log_w_fn)
        results.append(model.nll(x, k=100, chunk=chunk))
        assert state["requests"] == ([30, 30, 30, 10] if chunk == 30 else [100])
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-9)


def test_nll_is_no_grad_and_lower_with_more_samples():
    """The k=5000-style estimate tightens with k on average: nll(k=200) < nll(k=1) over images."""
    model = make_model(1, x_dim=64)
    x = binary_data(32, 64)
    model.set_output_bias(x.mean(0))
    torch.manual_seed(8)
    nll_200 = model.nll(x, k=200, chunk=64)
    nll_1 = model.nll(x, k=1)
    assert not nll_200.requires_grad
    assert nll_200.mean() < nll_1.mean() - 1.0


def test_active_units_from_means_exact_variances():
    """Column j alternates +a_j, -a_j around an offset, so its population variance is a_j^2."""
    variances = torch.tensor([0.5, 0.001, 0.0101, 0.0099, 2.0, 0.0])
    signs = torch.tensor([1.0, -1.0]).repeat(500)[:, None]
    means = 3.0 + signs * variances.sqrt()
    assert active_units_from_means(means, 0.01) == 3
    assert active_units_from_means(means, 1.0) == 1
    assert active_units_from_means(means, 0.0) == 5


def test_active_units_one_layer_with_dead_encoder_units():
    """Zeroing the mean weights of 10 of the 50 units makes exactly those units inactive."""
    model = make_model(1, x_dim=64)
    x = binary_data(300, 64)
    with torch.no_grad():
        model.q_z1.mu.weight.mul_(4.0)
        model.q_z1.mu.weight[:10] = 0
        model.q_z1.mu.bias[:10] = 1.5
    assert model.active_units(x) == [40]
    full, chunked = model.posterior_means(x)[0], model.posterior_means(x, batch=7)[0]
    torch.testing.assert_close(full, chunked)


def test_active_units_two_layers():
    """Layer 1: 20 of 100 means zeroed. Top layer: 5 of 50 means of q(z2|z1) zeroed; the rest vary
    with x through z1 ~ q(z1|x), made nearly deterministic (sigma = e^-4) so they are clearly
    active."""
    model = make_model(2, x_dim=64)
    x = binary_data(200, 64)
    with torch.no_grad():
        model.q_z1.mu.weight.mul_(4.0)
        model.q_z1.mu.weight[:20] = 0
        model.q_z1.log_sigma.weight.zero_()
        model.q_z1.log_sigma.bias.fill_(-4.0)
        model.q_z2.mu.weight.mul_(4.0)
        model.q_z2.mu.weight[:5] = 0
    assert model.active_units(x, n_samples=20) == [80, 45]


def test_top_layer_inactive_when_z1_ignores_x():
    """If q(z1|x) is the same point for every x, nothing above it can depend on x."""
    model = make_model(2, x_dim=64)
    x = binary_data(200, 64)
    with torch.no_grad():
        model.q_z1.mu.weight.zero_()
        model.q_z1.log_sigma.weight.zero_()
        model.q_z1.log_sigma.bias.fill_(-12.0)
    assert model.active_units(x, n_samples=20) == [0, 0]


def test_active_units_from_halves_is_free_of_the_monte_carlo_noise():
    """True posterior means with Cov_x = 0.008 per unit (inactive at 0.01), estimated from 100
    samples of variance 0.5 each: one estimate's variance is 0.008 + 0.5/100 = 0.013, over the
    threshold, while the covariance of two independent half-sample means stays near 0.008."""
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 30, generator=g, dtype=torch.float64) * 0.008**0.5
    draws = true + torch.randn(100, 4000, 30, generator=g, dtype=torch.float64) * 0.5**0.5
    assert active_units_from_means(draws.mean(0)) == 30  # the noise makes every unit "active"
    assert active_units_from_halves(draws[:50].mean(0), draws[50:].mean(0)) == 0
    assert active_units_from_halves(draws[:50].mean(0) * 2, draws[50:].mean(0) * 2) == 30


@torch.no_grad()
def sampled_posterior_means(model: IWAE, x: torch.Tensor, n: int, chunk: int = 250):
    """E_q[z1|x] and E_q[z2|x] of a two-layer model estimated a second way: the average of n
    ancestral draws z1 ~ q(z1|x), z2 ~ q(z2|z1) (samples, not means), in two independent halves
    of n/2 draws each; and Var_{q(z1|x)}(mean of q(z2|z1)) per image and unit."""
    mu1, sigma1 = model.q_z1(x)
    halves, moments = [], torch.zeros(2, len(x), 50, dtype=torch.float64)
    for _ in range(2):
        sums = [torch.zeros(len(x), d, dtype=torch.float64) for d in (100, 50)]
        for _ in range(n // 2 // chunk):
            z1 = mu1 + sigma1 * torch.randn(chunk, *mu1.shape)
            mu2, sigma2 = model.q_z2(z1)
            z2 = mu2 + sigma2 * torch.randn_like(mu2)
            sums[0] += z1.double().sum(0)
            sums[1] += z2.double().sum(0)
            moments += torch.stack([mu2.double().sum(0), mu2.double().pow(2).sum(0)])
        halves.append([s / (n // 2) for s in sums])
    first, second = moments / n
    return halves, second - first**2


def covariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Cov_x(a, b) per unit, over the N images of the rows
    return ((a - a.mean(0)) * (b - b.mean(0))).mean(0)


def test_active_units_agree_with_monte_carlo_over_q_and_differ_from_the_authors_top_layer():
    """A second computation of Cov_x(E_q[z_u|x]) (Section 5.2): E_q[z|x] as the mean of 4,000
    ancestral samples of q(z1, z2|x), Cov_x between two independent halves. Our count takes
    every unit clearly above 0.01 and none clearly below, in both layers of a two-layer model
    whose units are scaled to straddle the threshold. The authors' get_units_variances (yburda/
    iwae) takes, for the top layer, np.var over images of the mean of q(z2|z1) at ONE sample of
    z1: by the law of total variance that is Cov_x(E_q[z2|x]) + E_x Var_{q(z1|x)}(mean of
    q(z2|z1)), so it counts more top-layer units; for z1 it is our formula (the mean of
    q(z1|x)), on 500 training images rather than test images."""
    model = make_model(2, x_dim=64)
    x = binary_data(400, 64)
    with torch.no_grad():  # per-unit scales from 1/30 to 3: units on both sides of 0.01
        model.q_z1.mu.weight.mul_(torch.logspace(-1.5, 0.5, 100)[:, None])
        model.q_z2.mu.weight.mul_(torch.logspace(-1.0, 1.0, 50)[:, None])
    torch.manual_seed(1)
    ours = model.active_units(x, n_samples=200)
    torch.manual_seed(2)
    (a, b), within = sampled_posterior_means(model, x, n=4000)
    activity = [covariance(a[layer], b[layer]) for layer in range(2)]
    with torch.no_grad():
        exact_z1 = model.q_z1(x)[0].double().var(0, correction=0)
    torch.testing.assert_close(activity[0], exact_z1, atol=2e-3, rtol=0.05)
    for layer, units in enumerate(ours):
        clearly_above = int((activity[layer] > 0.013).sum())
        not_clearly_below = int((activity[layer] > 0.007).sum())
        assert 0 < clearly_above <= units <= not_clearly_below < len(activity[layer]), layer
    # The authors' top layer: one z1 per image, the first 500 images (here all 400).
    torch.manual_seed(3)
    with torch.no_grad():
        mu1, sigma1 = model.q_z1(x)
        theirs = model.q_z2(mu1 + sigma1 * torch.randn_like(mu1))[0].double().var(0, correction=0)
    inflated = activity[1] + within.mean(0)
    assert (theirs.mean() - inflated.mean()).abs() < 0.1 * inflated.mean()
    # Here: ours and the Monte Carlo 43 + 27 units, the authors' top layer 44 of 50.
    assert int((theirs > 0.01).sum()) > ours[1] + 10
