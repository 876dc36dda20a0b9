"""Euclidean space ``R^k``: the latent space of the ordinary Gaussian VAE.

Hidden pair: prior ``N(0, I)``, posterior ``N(μ(x), diag σ(x)^2)``; the embedding is the identity
and there is no group action (no uniform distribution to preserve).
"""
from __future__ import annotations


import torch
from torch import Tensor

from .base import ExactMap, Manifold, Quadrature


class Euclidean(Manifold, ExactMap, Quadrature):
    """``R^k`` with the identity embedding (Kingma & Welling 2014, arXiv:1312.6114)."""

    compact = False
    group_param_dim = 0

    def __init__(self, k: int):
        if int(k) < 1:
            raise ValueError(f"R{k}: the dimension must be at least 1")
        self.dim = self.ambient_dim = int(k)
        self.spec = f"R{self.dim}"

    @property
    def has_quadrature(self) -> bool:
        return self.dim <= 2

    def volume(self) -> float:
        return float("inf")

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        raise ValueError(f"{self.spec} has no uniform distribution (not compact)")

    def sample_prior(self, n, *, generator=None, dtype=torch.float32):
        """``N(0, I)``: the prior that synthetic benchmarks on ``R^k`` draw their latents from."""
        return torch.randn(n, self.dim, generator=generator, dtype=dtype)

    def quadrature(self, level: int):
        """Rule for ``E_{m~N(0,I)}``: trapezoid on ``[-9, 9]^k`` with ``2^level`` nodes per axis
        (``k ≤ 2``), weights ``φ(m) h^k`` normalized (the mass beyond 9σ is below 1e-18)."""
        if self.dim > 2:
            raise ValueError(f"{self.spec}: no quadrature rule beyond R2 (has_quadrature is False)")
        n = 2 ** int(level)
        t = torch.linspace(-9.0, 9.0, n, dtype=torch.float64)
        grids = torch.meshgrid(*([t] * self.dim), indexing="ij")
        pts = torch.stack([g.reshape(-1) for g in grids], -1)
        log_w = -0.5 * pts.pow(2).sum(-1)
        return pts, log_w - torch.logsumexp(log_w, 0)

    def quadrature_levels(self):
        if self.dim > 2:
            raise ValueError(f"{self.spec}: no quadrature rule beyond R2 (has_quadrature is False)")
        return (10, 18) if self.dim == 1 else (7, 11)

    def project(self, x: Tensor) -> Tensor:
        return x

    def exact_map(self, z: Tensor) -> Tensor:
        return z
