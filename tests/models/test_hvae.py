"""Hierarchical VAE and PixelVAE: closed-form KLs against Monte Carlo, the one-level model against
the IWAE table's VAE, log w against torch.distributions, the ELBO against the k=5000 bound, active
units per level, and the PixelVAE decoder's causality, normalisation and sampler."""

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from models.hvae import HierarchicalVAE, PixelVAE, gaussian_kl
from models.iwae import IWAE


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def binary_data(n: int, shape=(1, 4, 4), seed: int = 0) -> torch.Tensor:
    """Binary images with per-pixel rates in (0, 1), so the data have some structure."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(shape, generator=g)
    return (torch.rand(n, *shape, generator=g) < rates).float()


def sharpen(model: HierarchicalVAE) -> None:
    """Posterior means that vary with x and sigmas below one, so each KL is a few nats."""
    with torch.no_grad():
        for q in model.q:
            q.mu.weight.mul_(3.0)
            q.log_sigma.bias.fill_(-1.0)


def test_gaussian_kl_closed_form_against_torch_and_monte_carlo():
    """Equal to torch.distributions' KL to 1e-12; equal to the mean of log q - log p over 200000
    draws within 4 standard errors. The same Monte Carlo check rejects two classic slips (variance
    for std in the log; KL(p || q) for KL(q || p)) by more than 20 standard errors."""
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    sigma_q, sigma_p = torch.exp(0.5 * torch.randn(2, 3, 4, generator=g, dtype=torch.float64))
    kl = gaussian_kl(mu_q, sigma_q, mu_p, sigma_p)
    q, p = Normal(mu_q, sigma_q), Normal(mu_p, sigma_p)
    torch.testing.assert_close(kl, kl_divergence(q, p).sum(-1), rtol=0, atol=1e-12)

    z = q.sample((200000,))
    terms = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(len(terms))
    assert torch.all((kl - mc).abs() < 4 * se)
    assert torch.all(se < 0.05)
    wrong_log = kl + (torch.log(sigma_p) - torch.log(sigma_q)).sum(-1)
    reversed_kl = gaussian_kl(mu_p, sigma_p, mu_q, sigma_q)
    for wrong in (wrong_log, reversed_kl):
        assert ((wrong - mc).abs() / se).max() > 20


def test_parameter_counts():
    """Two levels (defaults), 784 -> q(z1|x) 100 and q(z2|x) 50, p(z1|z2), p(x|z1):
      q(z1|x): 784*200+200 + 200*200+200 + 2*(200*100+100) = 157000 + 40200 + 40200 = 237400
      q(z2|x): 157000 + 40200 + 2*(200*50+50)              = 217300
      p(z1|z2): 50*100+100 + 100*100+100 + 2*(100*100+100)  = 35400
      p(x|z1): 100*200+200 + 40200 + 200*784+784           = 217984,  total 708084.
    One level is the IWAE table's VAE: 425284.
    PixelVAE (one level, z1 of 16, 16 channels, 3 mask-B 5x5 layers):
      q(z1|x): 157000 + 40200 + 2*(200*16+16)              = 203632
      convs: 7*7*16+16 + 3*(5*5*16*16+16) + 16+1           = 800 + 19248 + 17 = 20065
      z1 maps: 17*(784+1) + 4*17*(784+16)                  = 13345 + 54400 = 67745
      per-pixel logit bias 784,  total 292226."""
    two = HierarchicalVAE((1, 28, 28))
    assert [count(two.q[0]), count(two.q[1]), count(two.p_z[0]), count(two.p_x)] == [
        237400,
        217300,
        35400,
        217984,
    ]
    assert count(two) == 708084
    assert count(HierarchicalVAE((1, 28, 28), levels=1)) == count(IWAE(1)) == 425284
    pixel = PixelVAE((1, 28, 28))
    assert count(pixel.q) == 203632
    assert sum(count(c) for c in pixel.p_x.convs) == 20065
    assert count(pixel.p_x.cond) == 67745
    assert count(pixel) == 292226
    assert pixel.input_kind == two.input_kind == "binary"


def test_one_level_model_is_the_iwae_vae():
    """IWAE(layers=1)'s weights copied into HierarchicalVAE(levels=1), on the same noise:
    (a) the importance weights are the same numbers, so nll is the IWAE table's estimator, and
    IWAE.loss(x, 1, "vae") is the batch mean of our rec plus the one-sample KL log q - log p;
    (b) with eps [k, B, 50], rec equals -log w_IWAE - (log q(z1|x) - log p(z1)), the latter
    rebuilt with torch.distributions, so our reconstruction term is theirs;
    (c) the closed-form KL (about 110 nats here) equals the mean of the IWAE's Monte Carlo KL,
    log q - log p, over k = 4000 draws within 4 standard errors (about 0.13 nat); so the expected
    losses agree: E[-log w_IWAE] - E[rec + kl1] = mean(MC KL) - KL is zero within 4 standard
    errors, while a KL that dropped the log-variance term would be off by more than 20."""
    torch.manual_seed(0)
    iwae = IWAE(1)
    model = HierarchicalVAE((1, 28, 28), levels=1)
    model.load_state_dict({k.replace("q_z1.", "q.0."): v for k, v in iwae.state_dict().items()})
    sharpen(model)
    iwae.load_state_dict({k.replace("q.0.", "q_z1."): v for k, v in model.state_dict().items()})
    x = binary_data(6, (1, 28, 28))

    with torch.no_grad():
        torch.manual_seed(1)
        log_w_iwae = iwae.log_weights(x.flatten(1), 3)
        torch.manual_seed(1)
        log_w = model.log_weights(x, 3)
        torch.testing.assert_close(log_w, log_w_iwae, rtol=0, atol=0)
        torch.manual_seed(5)
        vae_loss = iwae.loss(x.flatten(1), 1, "vae")
        torch.manual_seed(5)
        rec = model.elbo_terms(x)["rec"]
        torch.manual_seed(5)
        mu, sigma = model.q[0](x.flatten(1))
        z1 = mu + sigma * torch.randn_like(mu)
        mc_kl = (Normal(mu, sigma).log_prob(z1) - Normal(0.0, 1.0).log_prob(z1)).sum(-1)
        torch.testing.assert_close(vae_loss, (rec + mc_kl).mean(), rtol=0, atol=1e-3)

        k = 4000
        torch.manual_seed(2)
        log_w_iwae = iwae.log_weights(x.flatten(1), k)
        torch.manual_seed(2)
        mu, sigma = model.q[0](x.flatten(1))
        eps = torch.randn(k, *mu.shape)
        terms = model.elbo_terms(x, eps=[eps])
        z1 = mu + sigma * eps
        mc_kl = (Normal(mu, sigma).log_prob(z1) - Normal(0.0, 1.0).log_prob(z1)).sum(-1)
        torch.testing.assert_close(terms["rec"], -log_w_iwae - mc_kl, rtol=0, atol=2e-3)

        assert set(terms) == {"rec", "kl1"} and terms["kl1"].shape == (k, 6)
        kl = terms["kl1"][0]
        assert torch.all(kl > 50)
        se = mc_kl.std(0) / math.sqrt(k)
        assert torch.all(se < 0.2)
        assert torch.all((mc_kl.mean(0) - kl).abs() < 4 * se)
        diff = -log_w_iwae - (terms["rec"] + terms["kl1"])
        assert torch.all(diff.mean(0).abs() < 4 * diff.std(0) / math.sqrt(k))
        no_log_var = kl + torch.log(sigma).sum(-1)
        assert torch.all((mc_kl.mean(0) - no_log_var).abs() > 20 * se)


@pytest.mark.parametrize("levels", [2, 3])
def test_log_weights_match_torch_distributions(levels):
    """Rebuild log w from the same noise: q(z_i|x) reads x only, p(z_i|z_i+1) reads the level
    above, p(zL) = N(0, I), p(x|z1) Bernoulli."""
    torch.manual_seed(0)
    model = HierarchicalVAE(
        (1, 3, 4), levels=levels, hidden=16, hidden_z=8, z_dims=[6, 4, 3][:levels]
    )
    x = binary_data(5, (1, 3, 4))
    k = 7
    torch.manual_seed(3)
    log_w = model.log_weights(x, k)

    torch.manual_seed(3)
    zs, log_q = [], 0
    for q in model.q:
        mu, sigma = q(x.flatten(1))
        zs.append(mu + sigma * torch.randn(k, *mu.shape))
        log_q = log_q + Normal(mu, sigma).log_prob(zs[-1]).sum(-1)
    log_prior = Normal(0.0, 1.0).log_prob(zs[-1]).sum(-1)
    for i in range(levels - 1):
        log_prior = log_prior + Normal(*model.p_z[i](zs[i + 1])).log_prob(zs[i]).sum(-1)
    log_px = Bernoulli(logits=model.p_x(zs[0])).log_prob(x.flatten(1).expand(k, -1, -1)).sum(-1)
    assert log_w.shape == (k, 5)
    torch.testing.assert_close(log_w, log_px + log_prior - log_q, rtol=1e-5, atol=1e-4)


def test_each_level_kl_is_its_monte_carlo_estimate_given_the_level_above():
    """Three levels, float64, one fixed draw of each z_i+1: kl_i equals the mean over 100000 draws
    z_i ~ q(z_i|x) of log q(z_i|x) - log p(z_i|z_i+1) within 4 standard errors, and changes with
    the draw of z_i+1 (the outer expectation is the one reparameterised sample)."""
    torch.manual_seed(0)
    model = HierarchicalVAE((1, 3, 4), levels=3, hidden=16, hidden_z=8, z_dims=[6, 4, 3]).double()
    sharpen(model)
    x = binary_data(4, (1, 3, 4)).double()
    posteriors = model.posteriors(x)
    eps = [torch.randn_like(mu) for mu, _ in posteriors]
    with torch.no_grad():
        terms = model.elbo_terms(x, eps=eps)
        other = model.elbo_terms(x, eps=[e.flip(0) for e in eps])
        zs = [mu + sigma * e for (mu, sigma), e in zip(posteriors, eps)]
        for i in range(3):
            mu, sigma = posteriors[i]
            prior = Normal(*model.p_z[i](zs[i + 1])) if i < 2 else Normal(0.0, 1.0)
            z = Normal(mu, sigma).sample((100000,))
            mc = (Normal(mu, sigma).log_prob(z) - prior.log_prob(z)).sum(-1)
            se = mc.std(0) / math.sqrt(len(mc))
            assert torch.all((terms[f"kl{i + 1}"] - mc.mean(0)).abs() < 4 * se), i
            assert torch.all(terms[f"kl{i + 1}"] > 0)
        assert (terms["kl1"] - other["kl1"]).abs().max() > 0.01
        assert (terms["kl2"] - other["kl2"]).abs().max() > 0.01
        torch.testing.assert_close(terms["kl3"], other["kl3"])  # the top KL has no level above


def test_elbo_is_the_mean_log_weight_and_below_the_k5000_bound():
    """E_q[log w] = ELBO: the mean of 20000 log-weights per image equals -(rec + sum KL) averaged
    over as many draws, within 4 standard errors; and averaged over the batch the ELBO is below
    the k = 5000 importance-sampled log-likelihood (nll below -ELBO) by a clear margin."""
    torch.manual_seed(0)
    model = HierarchicalVAE((1, 4, 4), levels=2, hidden=32, hidden_z=16, z_dims=[8, 4]).double()
    sharpen(model)
    x = binary_data(16, (1, 4, 4)).double()
    model.set_output_bias(x.mean(0))
    with torch.no_grad():
        x_rep = x.repeat(1000, 1, 1, 1)
        neg_elbo = model(x_rep).view(1000, 16)
        log_w = torch.cat([model.log_weights(x, 5000) for _ in range(4)])
    gap = log_w.mean(0) + neg_elbo.mean(0)
    se = torch.sqrt(log_w.var(0) / len(log_w) + neg_elbo.var(0) / len(neg_elbo))
    assert torch.all(gap.abs() < 4 * se)

    torch.manual_seed(4)
    nll = model.nll(x, k=5000, chunk=1024)
    assert nll.dtype == torch.float64 and nll.shape == (16,) and not nll.requires_grad
    assert nll.mean() < neg_elbo.mean() - 1.0
    assert torch.all(nll > 0)


def test_active_units_per_level():
    """Zeroing the mean weights of 10 of 40 level-1 units and 5 of 20 level-2 units (constant
    means) leaves exactly 30 and 15 active; the rest vary with x by far more than 0.01."""
    torch.manual_seed(0)
    model = HierarchicalVAE((1, 8, 8), levels=2, hidden=32, hidden_z=16, z_dims=[40, 20])
    x = binary_data(300, (1, 8, 8))
    with torch.no_grad():
        for q, dead in zip(model.q, (10, 5)):
            q.mu.weight.mul_(4.0)
            q.mu.weight[:dead] = 0
            q.mu.bias[:dead] = 1.5
    assert model.active_units(x) == [30, 15]
    assert model.active_units(x, threshold=1e9) == [0, 0]
    full, chunked = model.posterior_means(x), model.posterior_means(x, batch=7)
    for a, b in zip(full, chunked):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", [HierarchicalVAE, PixelVAE])
@pytest.mark.parametrize("levels", [1, 2])
def test_loss_is_the_sum_of_terms_and_reaches_every_parameter(cls, levels):
    torch.manual_seed(0)
    kwargs = {"layers": 1, "channels": 4} if cls is PixelVAE else {}
    model = cls((1, 5, 5), levels=levels, hidden=16, hidden_z=8, z_dims=[6, 3][:levels], **kwargs)
    x = binary_data(4, (1, 5, 5))
    torch.manual_seed(1)
    loss = model(x)
    torch.manual_seed(1)
    terms = model.elbo_terms(x)
    assert list(terms) == ["rec"] + [f"kl{i + 1}" for i in range(levels)]
    assert loss.shape == (4,)
    torch.testing.assert_close(loss, sum(terms.values()))
    loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("cls", [HierarchicalVAE, PixelVAE])
def test_samples_are_binary_and_reproducible(cls):
    torch.manual_seed(0)
    kwargs = {"layers": 1, "channels": 4} if cls is PixelVAE else {}
    model = cls((1, 5, 6), levels=2, hidden=16, hidden_z=8, z_dims=[6, 3], **kwargs)
    a = model.sample(7, generator=torch.Generator().manual_seed(5))
    b = model.sample(7, generator=torch.Generator().manual_seed(5))
    assert a.shape == (7, 1, 5, 6)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def pixel_model(shape=(1, 28, 28), **kwargs) -> PixelVAE:
    torch.manual_seed(0)
    return PixelVAE(shape, **kwargs).double()


def test_pixelvae_decoder_is_causal():
    """For a fixed z1, d logit(i, j) / d x(i', j') is exactly zero for every (i', j') at or after
    (i, j) in raster order and nonzero for some earlier pixel (every pixel but the first); every
    logit depends on z1, the first one only through it."""
    model = pixel_model()
    x = binary_data(1, (1, 28, 28)).double()
    z1 = torch.randn(1, 16, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(
        lambda v: model.p_x(v.view(1, 1, 28, 28), z1).flatten(), x.flatten(), vectorize=True
    )
    assert jac.shape == (784, 784)
    assert torch.equal(jac.triu(), torch.zeros_like(jac))
    assert torch.all(jac.tril(-1).abs().amax(1)[1:] > 0)
    jac_z = torch.autograd.functional.jacobian(
        lambda z: model.p_x(x.double(), z).flatten(), z1, vectorize=True
    )
    assert torch.all(jac_z.abs().flatten(1).amax(1) > 0)


def test_pixelvae_decoder_is_normalised_and_sampler_follows_it():
    """For a fixed z1, p(x|z1) summed over all 512 binary 3x3 images is 1 (only a causal decoder
    gives that). On 2x2 images, 20000 autoregressive samples fall on the 16 images as p(x|z1)
    says: Pearson's chi-square (15 degrees of freedom: mean 15, sd 5.5) stays below 45, while
    sampling each pixel from its logit at an all-zero context scores in the hundreds."""
    model = pixel_model((1, 3, 3), hidden=8, z_dims=[4], channels=8, layers=2, kernel_size=3)
    z1 = torch.randn(1, 4, dtype=torch.float64)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.float64)
    with torch.no_grad():
        p = torch.exp(model.decoder_log_prob(images.view(512, 1, 3, 3), z1.expand(512, 4)))
    assert abs(float(p.sum()) - 1) < 1e-12

    model = pixel_model((1, 2, 2), hidden=8, z_dims=[4], channels=8, layers=2, kernel_size=3)
    with torch.no_grad():
        for conv in model.p_x.convs:  # pixels depend strongly on earlier ones
            conv.weight.mul_(5.0)
        for cond in model.p_x.cond:  # z1 is fixed here: keep its maps from swamping that
            cond.weight.zero_()
        n, z1 = 20000, torch.randn(1, 4, dtype=torch.float64)
        images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
        p = torch.exp(model.decoder_log_prob(images.view(16, 1, 2, 2), z1.expand(16, 4)))
        samples = model.decoder_sample(z1.expand(n, 4), torch.Generator().manual_seed(0))
        logits = model.p_x(torch.zeros(n, 1, 2, 2, dtype=torch.float64), z1.expand(n, 4))
        naive = torch.bernoulli(torch.sigmoid(logits), generator=torch.Generator().manual_seed(0))

    def chi_square(x: torch.Tensor) -> float:
        codes = (x.flatten(1) * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=x.dtype)).sum(-1)
        counts = torch.bincount(codes.long(), minlength=16).double()
        return float(((counts - n * p) ** 2 / (n * p)).sum())

    assert abs(float(p.sum()) - 1) < 1e-12 and p.max() / p.min() > 5
    assert chi_square(samples) < 45
    assert chi_square(naive) > 200


def test_pixelvae_decoder_batches_and_sample_dims():
    """log p(x|z1) for z1 [k, B, d] equals the k separate [B, d] evaluations, with or without
    splitting the k*B decoder passes into batches of 3."""
    model = pixel_model((1, 5, 5), hidden=8, z_dims=[4], channels=4, layers=1)
    x = binary_data(4, (1, 5, 5)).double()
    z1 = torch.randn(3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        whole = model.decoder_log_prob(x, z1)
        model.decoder_batch = 3
        split = model.decoder_log_prob(x, z1)
        rows = torch.stack([model.decoder_log_prob(x, z) for z in z1])
    assert whole.shape == (3, 4)
    torch.testing.assert_close(whole, rows, rtol=0, atol=1e-12)
    torch.testing.assert_close(split, rows, rtol=0, atol=1e-12)


def test_pixelvae_nll_is_below_its_elbo():
    model = pixel_model((1, 5, 5), hidden=16, z_dims=[4], channels=4, layers=1)
    sharpen(model)
    x = binary_data(8, (1, 5, 5)).double()
    model.set_output_bias(x.mean(0))
    with torch.no_grad():
        neg_elbo = model(x.repeat(200, 1, 1, 1)).mean()
    torch.manual_seed(0)
    nll = model.nll(x, k=500, chunk=250)
    assert nll.shape == (8,) and nll.dtype == torch.float64
    assert nll.mean() < neg_elbo - 0.5


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        HierarchicalVAE((1, 4, 4), levels=0)
    with pytest.raises(ValueError):
        HierarchicalVAE((1, 4, 4), levels=3)
    with pytest.raises(ValueError):
        HierarchicalVAE((1, 4, 4), levels=2, z_dims=[5])
    with pytest.raises(ValueError):
        PixelVAE((3, 4, 4))
    with pytest.raises(ValueError):
        PixelVAE((1, 4, 4), levels=3, z_dims=[4, 3, 2])
    model = HierarchicalVAE((1, 4, 4), levels=2, hidden=8, hidden_z=8, z_dims=[4, 2])
    with pytest.raises(ValueError):
        model.elbo_terms(binary_data(2), eps=[torch.zeros(2, 4)])
