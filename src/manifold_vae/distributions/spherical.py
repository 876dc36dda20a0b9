"""Posteriors that live directly on a sphere ``S^{p-1}`` (the peers of the ER posterior).

- ``vmf``: von Mises–Fisher (Davidson et al. 2018), :class:`~.vmf.VonMisesFisher`;
- ``powerspherical``: Power Spherical (De Cao & Aziz 2020, arXiv:2006.04437), from the PyPI
  package ``power-spherical`` (its sampler is a Beta draw and a Householder reflection, with
  exact reparameterized gradients; no rejection step).

Both pair with the uniform prior on the sphere; ``KL(q || U)`` is closed-form
(``-H(q) + log vol(S^{p-1})``), registered for our :class:`HypersphericalUniform`.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions.kl import register_kl
from power_spherical import PowerSpherical as _PackagePowerSpherical

from .sphere_uniform import HypersphericalUniform, log_sphere_volume
from .vmf import VonMisesFisher

SPHERE_FAMILIES = ("vmf", "powerspherical")


class PowerSpherical(_PackagePowerSpherical):
    """The ``power-spherical`` package's distribution with the shapes ``torch.distributions``
    promises — ``batch_shape = loc.shape[:-1]``, ``event_shape = (p,)`` (the package reports both
    as ``()``) — and ``expand``. Sampling and densities are the package's."""

    def __init__(self, loc: Tensor, scale: Tensor, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self._batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape)
        self._event_shape = loc.shape[-1:]

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return PowerSpherical(self.loc.expand(batch_shape + self._event_shape),
                              self.scale.expand(batch_shape))
MAX_CONCENTRATION = 1e5


@register_kl(_PackagePowerSpherical, HypersphericalUniform)
def _kl_powerspherical_uniform(p: _PackagePowerSpherical, q: HypersphericalUniform) -> Tensor:
    return -p.entropy() + log_sphere_volume(q.p)


def concentration_from_raw(raw: Tensor) -> Tensor:
    """``κ = softplus(raw) + 0.01``, capped at ``1e5`` (the Bessel code is exact far beyond)."""
    return (torch.nn.functional.softplus(raw) + 0.01).clamp_max(MAX_CONCENTRATION)


def sphere_posterior(family: str, loc: Tensor, concentration: Tensor):
    """The posterior of ``family`` with mean direction ``loc`` (unit) and ``concentration``."""
    if family == "vmf":
        return VonMisesFisher(loc, concentration)
    if family == "powerspherical":
        return PowerSpherical(loc, concentration)
    raise ValueError(f"unknown spherical posterior {family!r}; use one of {', '.join(SPHERE_FAMILIES)}")
