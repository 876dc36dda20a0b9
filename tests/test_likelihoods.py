"""The continuous Bernoulli likelihood: a normalized, bounded density at every logit the decoder
can emit, the same values as torch.distributions where that is accurate, and the exact mean."""
import math

import pytest
import torch
from torch.distributions import ContinuousBernoulli

from manifold_vae.likelihoods import ContinuousBernoulliLikelihood
from manifold_vae.likelihoods.continuous_bernoulli import (SQUEEZE, continuous_bernoulli_log_norm,
                                                           continuous_bernoulli_mean)

# the extremes matter: |ℓ| ≈ 0 is where the closed forms cancel, |ℓ| ≫ 1 where λ rounds to 0 or 1
LOGITS = [-80.0, -25.0, -3.0, -0.5, -0.019, -1e-4, 0.0, 1e-4, 0.021, 0.5, 3.0, 25.0, 80.0]
LO = -SQUEEZE / (1 - 2 * SQUEEZE)       # the model's support in data units is [LO, 1 − LO]


def _quadrature(logit: float, n: int = 200_000):
    """∫ p(x|ℓ) dx and ∫ x p(x|ℓ) dx over the support in data units, midpoint rule in float64
    (relative error ~ ℓ²/(24 n²) < 1e-8 here, plus the float32 log-density's rounding)."""
    x = LO + (1 - 2 * LO) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    lik = ContinuousBernoulliLikelihood(1)
    lp = lik.log_prob(lik.transform(x[:, None]).float(), torch.full((n, 1), logit))
    p = lp.double().exp() * (1 - 2 * LO)
    return float(p.mean()), float((x * p).mean())


@pytest.mark.parametrize("logit", LOGITS)
def test_density_integrates_to_one_and_mean_is_exact(logit):
    total, first = _quadrature(logit)
    # float32 log-density: relative error ≲ 1e-5 at |ℓ| = 80 (|ℓ x| up to 80, spacing 8e-6)
    assert total == pytest.approx(1.0, abs=2e-5 * max(1.0, abs(logit) / 10))
    lik = ContinuousBernoulliLikelihood(1)
    mean = float(lik.mean(torch.tensor([[logit]])))
    assert mean == pytest.approx(first / total, abs=1e-5)


def test_pixels_at_zero_or_one_have_a_bounded_density():
    # without the squeeze p(0 | ℓ) ≈ |ℓ| grows without bound as ℓ → −∞; with it the log-density
    # of a pixel at exactly 0 or 1 peaks near log(1/ε) and then falls
    lik = ContinuousBernoulliLikelihood(1)
    logits = -torch.logspace(0, 5, 400)
    lp0 = lik.log_prob(lik.transform(torch.zeros(400, 1)), logits[:, None])
    lp1 = lik.log_prob(lik.transform(torch.ones(400, 1)), -logits[:, None])
    for lp in (lp0, lp1):
        assert float(lp.max()) < math.log(1 / SQUEEZE) and float(lp[-1]) < 0


def test_matches_torch_distributions_where_it_is_accurate():
    # torch clamps λ to [eps, 1 − eps], which is exact only while |ℓ| stays below ~30
    g = torch.Generator().manual_seed(0)
    logits = torch.cat([8 * torch.randn(200, generator=g), torch.tensor([0.0, 1e-3, -1e-3, 0.019])])
    x = torch.rand(logits.shape, generator=g)
    lik = ContinuousBernoulliLikelihood(1)
    xs = lik.transform(x)
    ref = (ContinuousBernoulli(logits=logits.double()).log_prob(xs.double())
           + math.log(1 - 2 * SQUEEZE))
    ours = lik.log_prob(xs[:, None], logits[:, None])
    assert torch.allclose(ours.double(), ref, atol=1e-4)
    assert torch.allclose(continuous_bernoulli_mean(logits).double(),
                          ContinuousBernoulli(logits=logits.double()).mean, atol=1e-5)


def test_log_normalizer_closed_form_and_series_agree_at_the_switch():
    l = torch.tensor([0.0199999, 0.0200001], dtype=torch.float64)
    assert abs(float(continuous_bernoulli_log_norm(l).diff())) < 1e-8
    assert float(continuous_bernoulli_log_norm(torch.tensor(0.0))) == pytest.approx(math.log(2))


def test_gradients_are_finite_everywhere():
    logits = torch.tensor(LOGITS, requires_grad=True)
    x = torch.rand(len(LOGITS), generator=torch.Generator().manual_seed(1))
    lik = ContinuousBernoulliLikelihood(1)
    lp = lik.log_prob(lik.transform(x)[:, None], logits[:, None])
    (lp.sum() + continuous_bernoulli_mean(logits).sum()).backward()
    assert torch.isfinite(logits.grad).all()
