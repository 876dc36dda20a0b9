"""Spherical posteriors (the ER VAE's peers): von Mises–Fisher and Power Spherical.

Statistical tests use fixed seeds; tolerances are multiples of the estimators' standard errors.
"""
import math

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

from tests.helpers import build
from manifold_vae.distributions import HypersphericalUniform, VonMisesFisher, log_sphere_volume, sphere_posterior
from manifold_vae.distributions.bessel import log_iv_and_ratio
from manifold_vae.evaluation import per_example_bounds
from manifold_vae.manifolds import parse_latent

from .stats import mean_and_se

scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("v", [0.0, 0.5, 1.0, 3.5, 12.0, 24.5, 63.0])
def test_log_bessel_and_ratio_match_scipy(v):
    x = torch.logspace(-4, 5, 40, dtype=torch.float64)
    log_i, ratio = log_iv_and_ratio(v, x)
    xn = x.numpy()
    ive_v, ive_v1 = scipy_special.ive(v, xn), scipy_special.ive(v + 1, xn)
    ok = (ive_v > 1e-300) & (ive_v1 > 1e-300)          # scipy underflows for tiny x, large v
    ref_log = np.log(ive_v[ok]) + xn[ok]
    np.testing.assert_allclose(log_i.numpy()[ok], ref_log, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ratio.numpy()[ok], ive_v1[ok] / ive_v[ok], rtol=1e-8)


def _h(x, a, b):
    """A test function that is not symmetric about the mean direction."""
    return (x @ a) ** 2 + x @ b


@pytest.mark.parametrize("n", [1, 2, 4, 9])
@pytest.mark.parametrize("kappa", [1.5, 20.0])
def test_vmf_rsample_gradients_are_unbiased(n, kappa):
    """Pathwise d/dκ E[h(x)] and d/dμ E[h(x)] (implicit reparameterization) against the score
    function estimator E[h(x) ∇ log q(x)], which is unbiased by construction. Both are means
    of i.i.d. terms; tolerance 4 standard errors of their difference."""
    p = n + 1
    gen = torch.Generator().manual_seed(p * 100 + int(kappa))
    a = torch.randn(p, generator=gen, dtype=torch.float64)
    b = torch.randn(p, generator=gen, dtype=torch.float64)
    v = torch.randn(p, generator=gen, dtype=torch.float64)
    k = torch.tensor(kappa, dtype=torch.float64)
    batches, size = 40, 4000
    path = []
    for _ in range(batches):   # batch means of the pathwise gradient (its standard error)
        kk, vv = k.clone().requires_grad_(), v.clone().requires_grad_()
        q = VonMisesFisher(vv / vv.norm(), kk)
        x = q.rsample((size,), generator=gen)
        g = torch.autograd.grad(_h(x, a, b).mean(), (kk, vv))
        path.append(torch.cat([g[0].reshape(1), g[1]]))
    path = torch.stack(path)
    # score function: per-sample h(x) ∂ log q(x)/∂(κ, v)
    mu = v / v.norm()
    x = VonMisesFisher(mu, k).sample((batches * size,))
    w = x @ mu
    mean_w = log_iv_and_ratio(p / 2 - 1, k)[1]
    s_kappa = w - mean_w
    s_v = kappa * (x - w[:, None] * mu) / v.norm()
    score = _h(x, a, b)[:, None] * torch.cat([s_kappa[:, None], s_v], 1)
    se = torch.sqrt(path.var(0) / batches + score.var(0) / len(score))
    diff = path.mean(0) - score.mean(0)
    assert (diff.abs() < 4 * se).all(), (diff, se)


@pytest.mark.parametrize("family", ["vmf", "powerspherical"])
@pytest.mark.parametrize("spec", ["S1", "S2"])
@pytest.mark.parametrize("kappa", [0.3, 5.0, 60.0])
def test_log_prob_integrates_to_one(family, spec, kappa):
    """∫ q dσ = vol(M) · E_U[q] by the manifold's quadrature rule (deterministic, fine level)."""
    m = parse_latent(spec)
    pts, log_w = m.quadrature(14 if spec == "S1" else 9)
    loc = torch.randn(m.ambient_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = sphere_posterior(family, loc / loc.norm(), torch.tensor(kappa, dtype=torch.float64))
    total = torch.logsumexp(q.log_prob(pts) + log_w, 0) + math.log(m.volume())
    assert abs(float(total)) < 1e-6


@pytest.mark.parametrize("family", ["vmf", "powerspherical"])
@pytest.mark.parametrize("p,kappa", [(2, 0.5), (3, 4.0), (5, 30.0), (10, 200.0), (65, 1e3)])
def test_closed_form_kl_matches_monte_carlo(family, p, kappa):
    # KL(q||U) = E_q[log q(x)] + log vol(S^{p-1}); 100k samples, 5 standard errors
    torch.manual_seed(0)
    loc = torch.zeros(p, dtype=torch.float64)
    loc[0] = 1
    q = sphere_posterior(family, loc, torch.tensor(kappa, dtype=torch.float64))
    kl = float(kl_divergence(q, HypersphericalUniform(p, dtype=torch.float64)))
    x = q.sample((100_000,))
    mc, se = mean_and_se(q.log_prob(x) + log_sphere_volume(p))
    assert kl >= 0
    assert abs(kl - mc) < 5 * se + 1e-9


def test_vmf_sample_mean_matches_bessel_ratio():
    # E[μᵀx] = I_{p/2}(κ)/I_{p/2-1}(κ); 50k samples, 5 standard errors
    for p, kappa in [(2, 1.0), (3, 10.0), (20, 50.0)]:
        loc = torch.zeros(p, dtype=torch.float64)
        loc[-1] = 1
        q = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64))
        torch.manual_seed(p)
        w = q.sample((50_000,))[:, -1]
        mean, se = mean_and_se(w)
        assert abs(mean - float(q.mean[-1])) < 5 * se


@pytest.mark.parametrize("family", ["vmf", "powerspherical"])
def test_no_nan_over_concentrations_and_dimensions(family):
    for p in [2, 3, 10, 65, 129]:
        for kappa in [1e-4, 1e-2, 1.0, 1e2, 1e4, 1e5]:
            k = torch.tensor([kappa], requires_grad=True)
            v = torch.randn(1, p, generator=torch.Generator().manual_seed(p), requires_grad=True)
            q = sphere_posterior(family, v / v.norm(dim=-1, keepdim=True), k)
            x = q.rsample((32,))
            lp = q.log_prob(x)
            kl = kl_divergence(q, HypersphericalUniform(p))
            grads = torch.autograd.grad(_h(x, torch.ones(p), torch.ones(p)).sum() + lp.sum() + kl.sum(),
                                        (k, v))
            for t in (x, lp, kl, *grads):
                assert torch.isfinite(t).all(), (family, p, kappa)
            assert torch.allclose(x.norm(dim=-1), torch.ones(()), atol=1e-4)


@pytest.mark.parametrize("latent", ["vmf:S2", "powerspherical:S2", "vmf:S1"])
def test_spherical_vae_trains_and_evaluates(latent):
    torch.manual_seed(0)
    model = build(6, latent, hidden=[16])
    x = torch.randn(32, 6)
    out = model.loss(x)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    elbo, iwae = per_example_bounds(model, x, k=64)[:2]
    assert torch.isfinite(iwae).all()
    assert float(iwae.mean()) >= float(elbo.mean()) - 0.05
    assert model.embed(x).shape == (32, model.manifold.ambient_dim)


@pytest.mark.parametrize("bad", ["vmf:T2", "vmf:SO3", "gauss:S2", "vmf:S0"])
def test_bad_spherical_latents_are_rejected(bad):
    from manifold_vae import ManifoldLatent
    from manifold_vae.errors import UsageError

    with pytest.raises(ValueError, match="sphere|Valid forms|posterior family"):
        ManifoldLatent(bad)
    with pytest.raises(ValueError, match="takes no --group-action and no learned embedding"):
        ManifoldLatent("vmf:S2", group_action=True)
    with pytest.raises(UsageError, match="sphere|Valid forms|posterior family"):
        build(4, bad)          # through a model config: the same message, as a usage error
