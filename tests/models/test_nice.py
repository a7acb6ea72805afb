"""NICE: exact inverse, log-det against the autograd Jacobian, the density against closed forms
(a scaled logistic, and normalisation on a 2-D grid), partitions, sampling and the paper's size."""

import math

import pytest
import torch

from models.nice import NICE, logistic_log_prob


def make_model(shape=(1, 2, 3), hidden=8, depth=2, couplings=4, seed=0, gain=1.0) -> NICE:
    """A float64 model with non-trivial couplings (weights scaled by `gain`) and scaling."""
    torch.manual_seed(seed)
    model = NICE(shape, couplings=couplings, hidden=hidden, depth=depth).double()
    with torch.no_grad():
        for p in model.couplings.parameters():
            p.mul_(gain)
        model.s.copy_(0.5 * torch.randn(model.dim, dtype=torch.float64))
    return model


def test_parameter_count_of_the_paper_model():
    """Section 5.1 on MNIST (D = 784): each coupling maps 392 -> 1000 x5 -> 392,
      392*1000+1000 + 4*(1000*1000+1000) + 1000*392+392 = 393000 + 4004000 + 392392 = 4789392,
    four of them and the 784 scales: 4 * 4789392 + 784 = 19158352."""
    model = NICE((1, 28, 28))
    assert model.input_kind == "continuous"
    assert sum(p.numel() for p in model.couplings[0].parameters()) == 4789392
    assert sum(p.numel() for p in model.parameters()) == 19158352
    hidden = [m for m in model.couplings[0].m if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in hidden] == [(392, 1000)] + [
        (1000, 1000)
    ] * 4 + [(1000, 392)]


def test_partitions_alternate_and_one_half_passes_through():
    """Layer i keeps the even (i even) or odd (i odd) pixel indices; those come out unchanged and
    the other half is shifted by m of the kept half."""
    model = make_model(shape=(1, 3, 3))
    x = torch.rand(5, 9, dtype=torch.float64)
    for i, layer in enumerate(model.couplings):
        assert layer.keep.tolist() == list(range(i % 2, 9, 2))
        assert sorted(layer.keep.tolist() + layer.shift.tolist()) == list(range(9))
        z = layer(x)
        assert torch.equal(z[:, layer.keep], x[:, layer.keep])
        torch.testing.assert_close(
            z[:, layer.shift], x[:, layer.shift] + layer.m(x[:, layer.keep]), rtol=0, atol=0
        )
        assert (z[:, layer.shift] - x[:, layer.shift]).abs().min() > 0


def test_inverse_is_exact_in_float64():
    model = make_model(shape=(1, 4, 5), hidden=16, gain=2.0)
    x = torch.rand(8, 1, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        h, _ = model.encode(x)
        x_back = model.inverse(h)
        h_back, _ = model.encode(model.inverse(h))
    assert x_back.shape == x.shape
    assert (x_back - x).abs().max() < 1e-10
    assert (h_back - h).abs().max() < 1e-10
    assert (h - x.flatten(1)).abs().max() > 0.1  # f is far from the identity


def test_log_det_equals_autograd_jacobian():
    """log |det J| of f at D = 6 from torch.autograd.functional.jacobian equals sum_d s_d, and
    log p = log p_H(f(x)) + log |det J|. J is dense below its diagonal blocks, so the couplings
    are really exercised."""
    model = make_model(shape=(1, 2, 3), gain=2.0)
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        h, log_det = model.encode(x)
        log_p = model.log_prob(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(
            lambda v: model.encode(v.view(1, 1, 2, 3))[0][0], x[i].flatten()
        )
        sign, log_abs_det = torch.linalg.slogdet(jac)
        assert sign != 0
        assert abs(float(log_abs_det - log_det[i])) < 1e-10
        assert abs(float(log_p[i] - (logistic_log_prob(h[i]) + log_abs_det))) < 1e-10
        assert (jac - torch.diag(jac.diagonal())).abs().max() > 0.05


def test_log_prob_of_a_scaled_logistic_is_closed_form():
    """With m = 0 the model is h = exp(s) x, so each x_d is logistic with scale b_d = exp(-s_d):
    log p(x) = sum_d [ -x_d / b_d - log b_d - 2 log(1 + exp(-x_d / b_d)) ]; also checked against
    torch.distributions (logistic = logit of a uniform, then an affine map)."""
    model = make_model(shape=(1, 2, 4))
    with torch.no_grad():
        for layer in model.couplings:
            layer.m[-1].weight.zero_()
            layer.m[-1].bias.zero_()
    x = 4 * torch.randn(7, 1, 2, 4, dtype=torch.float64)
    b = torch.exp(-model.s.detach())
    v = x.flatten(1) / b
    closed = (-v - torch.log(b) - 2 * torch.log1p(torch.exp(-v))).sum(-1)
    torch.testing.assert_close(model.log_prob(x).detach(), closed, rtol=0, atol=1e-10)

    dist = torch.distributions
    zero, one = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    logistic = dist.TransformedDistribution(
        dist.Uniform(zero, one),
        [dist.SigmoidTransform().inv, dist.AffineTransform(loc=zero, scale=b)],
    )
    torch.testing.assert_close(
        model.log_prob(x).detach(), logistic.log_prob(x.flatten(1)).sum(-1), rtol=0, atol=1e-9
    )


def test_density_integrates_to_one_in_two_dimensions():
    """p(x) of a D = 2 model with a non-trivial coupling, summed over a fine grid: one within the
    grid error. A missing or doubled log-det, or the wrong sign of s, gives exp(+-sum s) != 1."""
    model = make_model(shape=(1, 1, 2), hidden=16, gain=0.5, seed=3)
    with torch.no_grad():
        model.s.copy_(torch.tensor([0.4, -0.1]))
    step = 0.2
    grid = torch.arange(-40, 40, step, dtype=torch.float64) + step / 2
    x1, x2 = torch.meshgrid(grid, grid, indexing="ij")
    x = torch.stack([x1.flatten(), x2.flatten()], -1).view(-1, 1, 1, 2)
    with torch.no_grad():
        mass = float(torch.exp(model.log_prob(x)).sum() * step**2)
        h, _ = model.encode(x)
    assert h.abs().amax(0).min() > 35  # the grid reaches far into both tails of the prior
    assert (h * torch.exp(-model.s.detach()) - x.flatten(1)).abs().max() > 1  # couplings shear
    assert abs(mass - 1) < 1e-4
    assert abs(mass * math.exp(-0.3) - 1) > 0.2


def test_samples_are_finite_reproducible_and_map_to_logistic_codes():
    """Codes of the samples are the logistic draws: mean 0 and variance pi^2 / 3 within about
    four standard errors (4000 x 6 draws)."""
    model = make_model(shape=(1, 2, 3), gain=2.0)
    a = model.sample(4000, generator=torch.Generator().manual_seed(1))
    b = model.sample(4000, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4000, 1, 2, 3) and a.dtype == torch.float64
    assert torch.isfinite(a).all() and torch.equal(a, b)
    with torch.no_grad():
        h, _ = model.encode(a)
    assert abs(float(h.mean())) < 0.1
    assert abs(float(h.var()) - math.pi**2 / 3) < 0.25


def test_extreme_uniform_draws_give_finite_samples(monkeypatch):
    """u = 0, the smallest value torch.rand can return, still maps to a finite code."""
    model = make_model(shape=(1, 1, 2))
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros_like(real_rand(*a, **k)))
    assert torch.isfinite(model.sample(3)).all()


def test_loss_is_differentiable_and_nll_is_float64():
    model = NICE((1, 4, 4), hidden=16, depth=2)
    x = torch.rand(6, 1, 4, 4)
    loss = model(x)
    assert loss.shape == (6,)
    loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    nll = model.nll(x)
    assert nll.dtype == torch.float64 and not nll.requires_grad
    torch.testing.assert_close(nll, loss.detach().double())


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        NICE((1, 1, 1))
    with pytest.raises(ValueError):
        NICE((1, 4, 4), couplings=0)


def spread_batch(n=400, shape=(1, 4, 5), seed=1) -> torch.Tensor:
    """Inputs whose units spread over very different scales, as dequantized MNIST does (a black
    pixel over 1/256, an inked one over most of [0, 1))."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-3, 0, math.prod(shape), dtype=torch.float64).view(shape)
    return torch.rand(n, *shape, generator=g, dtype=torch.float64) * scales


def test_data_init_starts_every_code_as_the_prior_and_keeps_f_exact():
    """init = "data": each code h_d of the init batch has mean 0 and the standard logistic's
    standard deviation pi / sqrt 3, the inverse is still exact and the log-det still equals the
    autograd Jacobian's; only s and the couplings' output biases changed."""
    torch.manual_seed(0)
    model = NICE((1, 4, 5), hidden=16, depth=2, init="data").double()
    x = spread_batch()
    before = {k: v.clone() for k, v in model.state_dict().items() if k != "s"}
    model.init_from_batch(x)
    with torch.no_grad():
        h, log_det = model.encode(x)
        x_back = model.inverse(h)
    prior_sd = torch.full((20,), math.pi / math.sqrt(3), dtype=torch.float64)
    torch.testing.assert_close(h.std(0), prior_sd, rtol=1e-10, atol=0)
    assert h.mean(0).abs().max() < 1e-10
    assert (
        float(model.s.detach().max() - model.s.detach().min()) > 4
    )  # the scales really differ by ~1000x
    assert (x_back - x).abs().max() < 1e-10
    jac = torch.autograd.functional.jacobian(
        lambda v: model.encode(v.view(1, 1, 4, 5))[0][0], x[0].flatten()
    )
    assert abs(float(torch.linalg.slogdet(jac)[1] - log_det[0])) < 1e-9
    assert abs(float(log_det[0] - model.s.detach().sum())) < 1e-12
    changed = {
        n for n, v in model.state_dict().items() if n != "s" and not torch.equal(v, before[n])
    }
    assert changed == {f"couplings.{i}.m.4.bias" for i in range(4)}  # m's linear output layer


def test_zero_init_is_the_papers_start():
    """init = "zero" (the default) ignores the batch: s stays 0, the identity scaling."""
    model = NICE((1, 4, 5), hidden=16, depth=2).double()
    model.init_from_batch(spread_batch())
    assert model.init == "zero" and torch.equal(model.s, torch.zeros(20, dtype=torch.float64))


def test_param_groups_put_s_alone_at_its_own_rate():
    """Every parameter in exactly one group; s alone carries lr_scale = s_lr."""
    model = NICE((1, 4, 4), hidden=8, depth=1, s_lr=10)
    couplings, scaling = model.param_groups()
    assert "lr_scale" not in couplings and scaling["lr_scale"] == 10.0
    assert len(scaling["params"]) == 1 and scaling["params"][0] is model.s
    grouped = [id(p) for g in (couplings, scaling) for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("kwargs", [{"init": "ones"}, {"s_lr": 0}, {"s_lr": -1.0}, {"s_lr": True}])
def test_bad_init_or_s_lr_raise(kwargs):
    with pytest.raises(ValueError, match="init|s_lr"):
        NICE((1, 4, 4), hidden=8, depth=1, **kwargs)
