"""Hidden-space distributions: Beta/uniform KL against Monte Carlo, support, gradients."""
import math

import pytest
import torch
from torch.distributions import Independent, Uniform, kl_divergence

from manifold_vae.distributions import (BoxBeta, HiddenSpace, beta_from_mean_concentration,
                                        beta_kl_to_uniform)

from .stats import mean_and_se

PARAMS = [(1.0, 1.0), (2.0, 5.0), (0.5, 0.7), (30.0, 10.0), (2e3, 6e3)]


@pytest.mark.parametrize("a,b", PARAMS)
def test_beta_kl_to_uniform_matches_monte_carlo(a, b):
    # KL(q||U) = E_q[log q(z)]; MC with 200k samples, tolerance 5 standard errors (+ float slack)
    torch.manual_seed(0)
    q = BoxBeta(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    z = q.sample((200_000,))
    mc, se = mean_and_se(q.log_prob(z))
    kl = float(beta_kl_to_uniform(torch.tensor(a), torch.tensor(b)))
    assert kl >= 0
    assert abs(kl - mc) < 5 * se + 1e-3


def test_beta_kl_is_registered_for_torch_kl_divergence():
    a, b = torch.tensor([2.0, 0.5]), torch.tensor([3.0, 0.5])
    kl = kl_divergence(Independent(BoxBeta(a, b), 1), Independent(Uniform(torch.zeros(2), torch.ones(2)), 1))
    torch.testing.assert_close(kl, beta_kl_to_uniform(a, b).sum())
    torch.testing.assert_close(beta_kl_to_uniform(a, b).double(),
                               -torch.distributions.Beta(a.double(), b.double()).entropy(), rtol=1e-5, atol=1e-6)


def test_beta_kl_stays_accurate_for_sharp_posteriors():
    # float32 inputs with a + b ~ 4e5: the result must match the float64 closed form
    a, b = torch.tensor([1e5, 3e5]), torch.tensor([3e5, 1e5])
    ref = -torch.distributions.Beta(a.double(), b.double()).entropy()
    torch.testing.assert_close(beta_kl_to_uniform(a, b).double(), ref, rtol=1e-5, atol=1e-4)


def test_box_samples_stay_strictly_inside_with_finite_log_prob():
    torch.manual_seed(0)
    a = torch.tensor([1e-2, 1e-2, 50.0, 1e6], requires_grad=True)
    b = torch.tensor([1e-2, 5.0, 1e-2, 1.0], requires_grad=True)
    q = BoxBeta(a, b, validate_args=False)
    z = q.rsample((1000,))
    assert bool(((z > 0) & (z < 1)).all())
    lp = q.log_prob(z)
    assert torch.isfinite(lp).all()
    (z.sum() + lp.sum()).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.parametrize("a,b", [(2.0, 3.0), (0.7, 1.5), (40.0, 60.0)])
def test_beta_rsample_gradient_is_unbiased(a, b):
    # d/da E[z] = b/(a+b)^2; MC average of the reparameterized gradient, tolerance 5 SE
    torch.manual_seed(1)
    at = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    n = 100_000
    z = BoxBeta(at.expand(n), bt.expand(n)).rsample()
    grads = torch.autograd.grad(z.sum(), at)[0] / n  # mean gradient
    # per-sample gradients for the standard error
    at2 = at.detach().expand(n).clone().requires_grad_(True)
    z2 = BoxBeta(at2, bt.detach().expand(n)).rsample()
    g_each = torch.autograd.grad(z2.sum(), at2)[0]
    mean, se = mean_and_se(g_each)
    exact = b / (a + b) ** 2
    assert abs(mean - exact) < 5 * se
    assert abs(float(grads) - exact) < 5 * se * 1.5


def test_beta_kl_gradcheck_float64():
    a = torch.tensor([0.7, 2.0, 50.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.3, 0.4, 20.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(beta_kl_to_uniform, (a, b))


def test_mean_concentration_parameterization_bounds():
    a, b = beta_from_mean_concentration(torch.tensor([0.0, 50.0]), torch.tensor([100.0, -100.0]))
    assert torch.isfinite(a).all() and torch.isfinite(b).all() and (a > 0).all() and (b > 0).all()
    assert float(a[0] + b[0]) == pytest.approx(math.exp(14.0), rel=1e-4)


def test_gaussian_posterior_path_gradcheck():
    h = HiddenSpace(("euclidean", "euclidean"))
    raw = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)

    def f(raw):
        torch.manual_seed(0)
        q = h.posterior(raw)
        return q.rsample(), h.kl(q)

    assert torch.autograd.gradcheck(f, (raw,))


def test_mixed_hidden_space_kl_and_log_prob():
    h = HiddenSpace(("box", "euclidean", "euclidean"))
    raw = torch.randn(5, h.param_dim)
    q = h.posterior(raw)
    z = q.rsample((4,))
    assert z.shape == (4, 5, 3)
    assert q.log_prob(z).shape == (4, 5)
    kl = h.kl(q)
    assert kl.shape == (5,) and (kl >= 0).all()
    # KL against MC: E_q[log q - log p]
    torch.manual_seed(0)
    zz = q.sample((40000,))
    lw = q.log_prob(zz) - h.prior_log_prob(zz)
    mc = lw.mean(0)
    se = lw.std(0) / math.sqrt(40000)
    assert ((mc - kl).abs() < 5 * se + 1e-3).all()


def test_hidden_space_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="hidden kinds"):
        HiddenSpace(("box", "sphere"))


def test_fused_beta_kl_equals_closed_form_with_its_gradient():
    # the training fast path's KL (and its analytic gradient) equals the closed form through
    # torch autograd (float64)
    from manifold_vae.distributions.box import beta_rsample_and_kl
    u = torch.randn(500, 2, dtype=torch.float64, requires_grad=True)
    v = (torch.rand(500, 2, dtype=torch.float64) * 13).requires_grad_()
    _, k1 = beta_rsample_and_kl(u, v)
    g1 = torch.autograd.grad(k1.sum(), (u, v))
    a, b = beta_from_mean_concentration(u, v)
    k2 = beta_kl_to_uniform(a, b).sum(-1)
    g2 = torch.autograd.grad(k2.sum(), (u, v))
    torch.testing.assert_close(k1, k2, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(g1[0], g2[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(g1[1], g2[1], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("logit,logk", [(0.0, 0.5), (1.5, 3.0), (-3.0, 6.0), (3.0, 2.0)])
def test_fused_beta_samples_and_gradients_are_unbiased(logit, logk):
    """Samples follow Beta(μκ, (1-μ)κ) (Kolmogorov–Smirnov against the Beta CDF), and the
    pathwise gradients d/d(logit μ, log κ) E[h(z)] match the score-function estimator
    E[h(z) ∇ log q(z)], which is unbiased by construction; 4 standard errors of the difference."""
    from scipy import stats as sps
    from manifold_vae.distributions.box import beta_rsample_and_kl
    torch.manual_seed(11)
    n_batches, size = 40, 5000
    path = []
    for _ in range(n_batches):
        u = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
        v = torch.tensor([logk], dtype=torch.float64, requires_grad=True)
        z, _ = beta_rsample_and_kl(u.expand(size, 1), v.expand(size, 1))
        h = (z - 0.3).pow(2) + z.pow(3)
        path.append(torch.cat(torch.autograd.grad(h.mean(), (u, v))))
    path = torch.stack(path)
    u = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([logk], dtype=torch.float64, requires_grad=True)
    a, b = beta_from_mean_concentration(u, v)
    with torch.no_grad():
        z, _ = beta_rsample_and_kl(u.expand(n_batches * size, 1), v.expand(n_batches * size, 1))
    a, b = a.detach(), b.detach()
    assert sps.kstest(z[:, 0].numpy(), sps.beta(float(a), float(b)).cdf).pvalue > 1e-3
    mu, kappa = torch.sigmoid(torch.tensor(logit, dtype=torch.float64)), math.exp(logk)
    zz = z[:, 0]
    dig = torch.digamma(a + b)
    s_a = torch.log(zz) - torch.digamma(a) + dig            # ∂ log q / ∂a
    s_b = torch.log1p(-zz) - torch.digamma(b) + dig         # ∂ log q / ∂b
    score = torch.stack([(s_a - s_b) * kappa * mu * (1 - mu), s_a * a + s_b * b], 1)
    terms = ((zz - 0.3).pow(2) + zz.pow(3))[:, None] * score
    se = torch.sqrt(path.var(0) / n_batches + terms.var(0) / len(terms))
    assert ((path.mean(0) - terms.mean(0)).abs() < 4 * se).all(), (path.mean(0), terms.mean(0), se)


def test_fused_beta_gradient_is_finite_for_saturated_posteriors():
    # found in a default reproduce run: μ = sigmoid(large) = 1.0 in float32 with κ at its cap
    # (a ≈ 1.2e6, b clamped to 0.01) made the float32 implicit gradient NaN and killed training
    from manifold_vae.distributions.box import beta_rsample_and_kl
    u = torch.tensor([[30.0], [-30.0], [0.0]], requires_grad=True)
    v = torch.tensor([[14.5], [14.5], [14.5]], requires_grad=True)
    torch.manual_seed(0)
    for _ in range(20):
        z, kl = beta_rsample_and_kl(u, v)
        gu, gv = torch.autograd.grad(z.sum() + kl.sum(), (u, v))
        assert torch.isfinite(gu).all() and torch.isfinite(gv).all()
        assert ((z > 0) & (z < 1)).all()


@pytest.mark.parametrize("latent,ga", [("S1", True), ("S1", False), ("R1", False), ("T2", True),
                                       ("S2", True), ("SO3", True), ("S1xR2", True)])
def test_every_parameter_gets_a_finite_gradient(latent, ga):
    from tests.helpers import build
    torch.manual_seed(0)
    model = build(12, latent, group_action=ga, hidden=[16])
    out = model.loss(torch.randn(64, 12))
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_fused_beta_node_supports_a_second_backward():
    # backward must not modify what forward saved: two gradient passes over one graph agree
    from manifold_vae.distributions.box import beta_rsample_and_kl
    u = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    v = torch.rand(6, 3, dtype=torch.float64, requires_grad=True)
    z, kl = beta_rsample_and_kl(u, v)
    out = z.sum() + kl.sum()
    g1 = torch.autograd.grad(out, (u, v), retain_graph=True)
    g2 = torch.autograd.grad(out, (u, v))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
