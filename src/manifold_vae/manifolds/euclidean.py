"""Euclidean space ``R^k``: the latent space of the ordinary Gaussian VAE.

Hidden pair: prior ``N(0, I)``, posterior ``N(μ(x), diag σ(x)^2)``; the embedding is the identity
and there is no group action (no uniform distribution to preserve).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Manifold


class Euclidean(Manifold):
    """``R^k`` with the identity embedding (Kingma & Welling 2014, arXiv:1312.6114)."""

    compact = False
    group_param_dim = 0

    def __init__(self, k: int):
        if int(k) < 1:
            raise ValueError(f"R{k}: the dimension must be at least 1")
        self.dim = self.ambient_dim = int(k)
        self.spec = f"R{self.dim}"

    def volume(self) -> float:
        return float("inf")

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        raise ValueError(f"{self.spec} has no uniform distribution (not compact)")

    def project(self, x: Tensor) -> Tensor:
        return x

    def exact_map(self, z: Tensor) -> Tensor:
        return z
