"""models.kernels: each fused kernel against the plain PyTorch expression it replaces, by
gradcheck in float64 and, in float32, within a few times plain autograd's own float32 error
(both measured against float64), so that the bound holds on any CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.kernels import Tanh, bernoulli_log_prob

EPS = torch.finfo(torch.float32).eps  # the unit of a float32 error where plain autograd has none


def _bernoulli_plain(x, logits):
    return (x * logits - F.softplus(logits)).sum(-1)


def _inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(5, 4, 7, generator=g) * 3).to(dtype).requires_grad_()
    x = (torch.rand(4, 7, generator=g) < 0.4).to(dtype)
    return x, logits


def test_the_fused_bernoulli_log_prob_and_tanh_pass_gradcheck_in_float64():
    x, logits = _inputs(torch.float64)
    assert torch.autograd.gradcheck(lambda lg: bernoulli_log_prob(x.expand_as(lg), lg), (logits,))
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Tanh(), (a,))


def _errors(fused, plain, make):
    """Max |fused - float64| and |plain - float64| of the value and the gradient, in float32."""
    out = []
    for fn in (fused, plain):
        args32, args64 = make(torch.float32), make(torch.float64)
        value32, value64 = fn(*args32), plain(*args64)
        (g32,) = torch.autograd.grad(value32.sum(), args32[-1])
        (g64,) = torch.autograd.grad(value64.sum(), args64[-1])
        out.append(
            max(
                (value32.double() - value64).abs().max().item(),
                (g32.double() - g64).abs().max().item(),
            )
        )
    return out


def test_in_float32_they_are_within_a_few_times_plain_autogradss_own_error():
    def bern(dtype):
        x, logits = _inputs(dtype)
        return x.expand_as(logits).contiguous(), logits

    fused, plain = _errors(bernoulli_log_prob, _bernoulli_plain, bern)
    assert fused <= 4 * max(plain, EPS), (fused, plain)  # measured: equal

    def tanh_inputs(dtype):
        g = torch.Generator().manual_seed(1)
        return ((torch.randn(64, 32, generator=g) * 2).to(dtype).requires_grad_(),)

    fused, plain = _errors(Tanh(), torch.tanh, tanh_inputs)
    # 2 sigmoid(2a) - 1 rounds differently from tanh: 3.4e-7 measured against tanh's 6e-8
    assert fused <= 16 * max(plain, EPS), (fused, plain)
