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
from power_spherical import PowerSpherical

from .sphere_uniform import HypersphericalUniform, log_sphere_volume
from .vmf import VonMisesFisher

SPHERE_FAMILIES = ("vmf", "powerspherical")
MAX_CONCENTRATION = 1e5


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_powerspherical_uniform(p: PowerSpherical, q: HypersphericalUniform) -> Tensor:
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
