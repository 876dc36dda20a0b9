"""Posteriors that live on a sphere itself, the peers of the ER posterior on ``S^n``.

``vmf:S<n>``: von Mises–Fisher (Davidson et al. 2018, arXiv:1804.00891);
``powerspherical:S<n>``: Power Spherical (De Cao & Aziz 2020, arXiv:2006.04437). Both pair with
the uniform prior on the sphere: ``KL(q || U) = -H(q) + log vol(S^n)`` in closed form, and the
importance weight of a sample ``m`` is ``p(x|m) / (vol(S^n) q(m))`` (densities with respect to
the sphere's surface measure). No hidden space, no embedding, no group action.
"""
from __future__ import annotations

from torch import Tensor
from torch.distributions import kl_divergence

from ..distributions import HypersphericalUniform, log_sphere_volume, sphere_posterior
from ..distributions.spherical import concentration_from_raw
from ..manifolds import safe_normalize
from .base import LatentOutput, ManifoldLatent
from .spec import register_family

register_family("vmf", "von Mises–Fisher posterior on S<n> (S-VAE)", sphere_only=True)
register_family("powerspherical", "Power Spherical posterior on S<n>", sphere_only=True)


class SphericalLatent(ManifoldLatent):
    """A posterior on ``S^n ⊂ R^{n+1}``: raw outputs are a mean direction (``n + 1`` numbers,
    normalized) and one concentration (``κ = softplus(raw) + 0.01``, capped)."""

    families = ("vmf", "powerspherical")

    @property
    def param_dim(self) -> int:
        return self.manifold.ambient_dim + 1

    def posterior(self, raw: Tensor):
        p = self.manifold.ambient_dim
        return sphere_posterior(self.spec.family, safe_normalize(raw[..., :p]),
                                concentration_from_raw(raw[..., p]))

    def forward(self, raw: Tensor) -> LatentOutput:
        q = self.posterior(raw)
        m = q.rsample()
        kl = kl_divergence(q, HypersphericalUniform(self.manifold.ambient_dim, dtype=m.dtype,
                                                    device=m.device))
        log_volume = log_sphere_volume(self.manifold.ambient_dim)
        return LatentOutput(m, m, kl, lambda: -log_volume - q.log_prob(m))

    def sample(self, raw: Tensor, k: int) -> LatentOutput:
        """``k`` samples per example, drawn and valued in float64 (``κ μᵀm`` at κ up to 1e5 loses
        whole nats in float32); the point in ``raw``'s dtype."""
        q = self.posterior(raw.double())
        m = q.sample((k,))
        p = self.manifold.ambient_dim
        return LatentOutput(m.to(raw.dtype), m, lambda: kl_divergence(q, HypersphericalUniform(
            p, dtype=m.dtype, device=m.device)), -log_sphere_volume(p) - q.log_prob(m))

    def kl(self, raw: Tensor) -> Tensor:
        q = self.posterior(raw)
        return kl_divergence(q, HypersphericalUniform(self.manifold.ambient_dim, dtype=q.loc.dtype,
                                                      device=q.loc.device))

    def mean_point(self, raw: Tensor) -> Tensor:
        return self.posterior(raw).loc

    def turning_slot(self) -> int | None:
        return 0 if self.manifold.ambient_dim >= 2 else None
