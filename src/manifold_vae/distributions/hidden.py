"""Hidden spaces of the ER procedure: which prior and posterior each hidden coordinate has.

``"box"`` coordinates: prior ``U(0,1)``, posterior ``Beta`` (mean/concentration parameterized);
``"euclidean"`` coordinates: prior ``N(0,1)``, posterior ``N(μ, σ²)``. A hidden space is a run of
such coordinates; consecutive coordinates of one kind form a block.
"""
from __future__ import annotations

import math
from itertools import groupby
from typing import Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, Uniform, kl_divergence

from .box import BoxBeta, beta_from_mean_concentration, beta_log_density, beta_log_sample
from .concat import ConcatIndependent

KINDS = ("box", "euclidean")
LOG_SIGMA_BOUNDS = (-12.0, 4.0)
MAX_INIT_CONCENTRATION = math.exp(14.0)   # κ is kept in [1, e^14] (beta_from_mean_concentration)


def normal_rsample_and_kl(loc: Tensor, log_sigma: Tensor) -> tuple[Tensor, Tensor]:
    """One reparameterized sample ``z = μ + σ ε`` of ``N(μ, σ²)`` per element and
    ``KL(N(μ, σ²) || N(0, 1)) = ½ Σ (μ² + σ² - 1) - Σ log σ`` over the last dimension
    (``log σ`` clamped to ``LOG_SIGMA_BOUNDS``, as in :meth:`HiddenSpace.posterior`)."""
    log_sigma = log_sigma.clamp(*LOG_SIGMA_BOUNDS)
    z = loc + log_sigma.exp() * torch.randn_like(loc)
    kl = 0.5 * (loc.pow(2) + (2 * log_sigma).exp() - 1).sum(-1) - log_sigma.sum(-1)
    return z, kl


class HiddenSpace:
    """Prior and posterior family of a hidden space with coordinate kinds ``kinds``.

    The encoder emits ``param_dim = 2·d`` unconstrained numbers per example: for each block,
    first the ``size`` location parameters (Beta mean logits or Gaussian means), then the
    ``size`` scale parameters (log concentrations or log standard deviations).
    """

    def __init__(self, kinds: Sequence[str], *, init_concentration: float = 2.0):
        kinds = tuple(kinds)
        if not 1.0 <= init_concentration <= MAX_INIT_CONCENTRATION:
            raise ValueError(f"init_concentration must lie in [1, {MAX_INIT_CONCENTRATION:.0f}] (the "
                             f"bounds of the Beta concentration), got {init_concentration}")
        # log κ = raw + log κ₀: a raw output of 0 gives the Beta concentration κ₀ (2: uniform)
        self.log_concentration_offset = math.log(init_concentration)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"hidden kinds must be a non-empty sequence of {KINDS}, got {kinds}")
        self.kinds = kinds
        self.dim = len(kinds)
        self.blocks = [(k, len(list(g))) for k, g in groupby(kinds)]
        self.param_dim = 2 * self.dim

    def posterior(self, raw: Tensor) -> Distribution:
        """``q(z|x)`` from raw encoder outputs of trailing size ``param_dim``."""
        dists, start = [], 0
        for kind, size in self.blocks:
            loc = raw[..., start:start + size]
            scale = raw[..., start + size:start + 2 * size]
            start += 2 * size
            if kind == "box":
                a, b = beta_from_mean_concentration(loc, scale + self.log_concentration_offset)
                base = BoxBeta(a, b, validate_args=False)
            else:
                sigma = scale.clamp(*LOG_SIGMA_BOUNDS).exp()
                base = Normal(loc, sigma, validate_args=False)
            dists.append(Independent(base, 1, validate_args=False))
        return dists[0] if len(dists) == 1 else ConcatIndependent(dists)

    def sample_with_log_ratio(self, raw: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """``k`` draws of ``q(z|x)`` per example (leading dim ``k``) and ``log p(z) - log q(z|x)``,
        both in float64: the latent part of the IWAE weights. The Beta blocks are drawn in log
        space and their densities taken at the very values drawn (:func:`beta_log_sample`), so a
        sample next to a face of the box is valued exactly, never at a clamped point."""
        raw = raw.double()
        zs, log_ratio, start = [], 0.0, 0
        for kind, size in self.blocks:
            loc = raw[..., start:start + size]
            scale = raw[..., start + size:start + 2 * size]
            start += 2 * size
            if kind == "box":      # the prior U(0, 1) has density 1
                a, b = beta_from_mean_concentration(loc, scale + self.log_concentration_offset)
                log_z, log1m_z = beta_log_sample(a, b, (k,))
                zs.append(log_z.exp())
                log_ratio = log_ratio - beta_log_density(a, b, log_z, log1m_z).sum(-1)
            else:
                sigma = scale.clamp(*LOG_SIGMA_BOUNDS).exp()
                eps = torch.randn((k,) + loc.shape, dtype=loc.dtype, device=loc.device)
                z = loc + sigma * eps
                # log N(z; 0, 1) - log N(z; μ, σ²), the 2π terms cancelling
                log_ratio = log_ratio + (-0.5 * (z * z) + 0.5 * (eps * eps) + sigma.log()).sum(-1)
                zs.append(z)
        return torch.cat(zs, -1), log_ratio

    def prior(self, *, device=None, dtype=torch.float32) -> Distribution:
        """``p(z)``: ``U(0,1)`` per box coordinate, ``N(0,1)`` per Euclidean one."""
        dists = []
        for kind, size in self.blocks:
            zeros = torch.zeros(size, device=device, dtype=dtype)
            if kind == "box":
                base = Uniform(zeros, zeros + 1, validate_args=False)
            else:
                base = Normal(zeros, zeros + 1, validate_args=False)
            dists.append(Independent(base, 1, validate_args=False))
        return dists[0] if len(dists) == 1 else ConcatIndependent(dists)

    def kl(self, q: Distribution, p: Distribution | None = None) -> Tensor:
        """Closed-form ``KL(q || p)`` summed over hidden coordinates."""
        if p is None:
            p = self.prior(device=_device_of(q), dtype=_dtype_of(q))
        return kl_divergence(q, p)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)``: 0 on the box (inside), standard normal on Euclidean blocks."""
        out, start = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype), 0
        for kind, size in self.blocks:
            if kind == "euclidean":
                zz = z[..., start:start + size]
                out = out - 0.5 * (zz * zz).sum(-1) - 0.5 * size * 1.8378770664093453
            start += size
        return out


def _device_of(q: Distribution):
    return q.mean.device


def _dtype_of(q: Distribution):
    return q.mean.dtype
