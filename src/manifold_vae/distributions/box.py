"""The hidden box ``[0,1]^d``: Beta posterior, uniform prior, and their closed-form KL.

``KL(Beta(a,b) || U(0,1)) = -H(Beta(a,b))
= -log B(a,b) + (a-1)ψ(a) + (b-1)ψ(b) - (a+b-2)ψ(a+b)``  (≥ 0, zero only for ``a = b = 1``).

(The Beta entropy is ``H = log B(a,b) - (a-1)ψ(a) - (b-1)ψ(b) + (a+b-2)ψ(a+b)``; the KL is its
negative. The terms are large and cancel for sharp posteriors, ``a + b ~ 1e6``, so the KL is
evaluated in float64.)

Samples are kept strictly inside ``(0,1)`` by a clamp whose gradient is the identity
(``z + (clamp(z) - z).detach()``), so a sample that rounds to 0 or 1 in floating point still has a
finite log-density and an unbroken reparameterization gradient.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Beta, Uniform, constraints, register_kl


def box_eps(dtype: torch.dtype) -> float:
    """Distance kept from the box's faces: a few ulps of 1 in ``dtype``."""
    return 1e-6 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-12


def squeeze_into_box(z: Tensor) -> Tensor:
    """Clamp into ``[eps, 1-eps]`` with a straight-through (identity) gradient."""
    eps = box_eps(z.dtype)
    return z + (z.clamp(eps, 1.0 - eps) - z).detach()


def beta_kl_to_uniform(a: Tensor, b: Tensor) -> Tensor:
    """``KL(Beta(a,b) || U(0,1))`` elementwise, the negative Beta entropy (computed in float64)."""
    a64, b64 = a.double(), b.double()
    ab = a64 + b64
    kl = (torch.lgamma(ab) - torch.lgamma(a64) - torch.lgamma(b64)
          + (a64 - 1) * torch.digamma(a64) + (b64 - 1) * torch.digamma(b64)
          - (ab - 2) * torch.digamma(ab))
    return kl.to(a.dtype)


def beta_from_mean_concentration(mean_logit: Tensor, log_concentration: Tensor, *,
                                 min_log_concentration: float = 0.0,
                                 max_log_concentration: float = 14.0,
                                 min_param: float = 1e-2) -> tuple[Tensor, Tensor]:
    """Beta parameters ``(a, b) = (μκ, (1-μ)κ)`` from ``μ = sigmoid(u)``, ``log κ`` bounded.

    Mean and concentration are better conditioned for a network than ``a`` and ``b``: a sharp
    posterior needs ``κ`` up to ~1e6, reached as ``log κ ≈ 14``.
    """
    mu = torch.sigmoid(mean_logit)
    kappa = log_concentration.clamp(min_log_concentration, max_log_concentration).exp()
    return (mu * kappa).clamp_min(min_param), ((1 - mu) * kappa).clamp_min(min_param)


class BoxBeta(Beta):
    """``Beta(a, b)`` whose samples stay strictly inside ``(0,1)``.

    Args:
        concentration1: ``a > 0``.
        concentration0: ``b > 0``.

    Example::

        >>> q = BoxBeta(torch.tensor([2.0]), torch.tensor([5.0]))
        >>> z = q.rsample((3,))
        >>> bool(((z > 0) & (z < 1)).all())
        True
    """

    support = constraints.unit_interval

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return squeeze_into_box(super().rsample(sample_shape))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BoxBeta, _instance)
        return super().expand(batch_shape, _instance=new)


@register_kl(BoxBeta, Uniform)
def _kl_boxbeta_uniform(p: BoxBeta, q: Uniform) -> Tensor:
    kl = beta_kl_to_uniform(p.concentration1, p.concentration0) + (q.high - q.low).log()
    outside = (q.low > 0) | (q.high < 1)
    return torch.where(outside, torch.full_like(kl, float("inf")), kl)
