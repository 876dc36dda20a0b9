"""Tori ``T^k = (S^1)^k ⊂ R^{2k}``.

Exact map: the circle map per coordinate, ``z_j -> (cos 2πz_j, sin 2πz_j)``; volume element
``(2π)^k``. Group: ``SO(2)^k``, one rotation per circle, each from a normalized 2-vector and
acting by complex multiplication.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ExactMap, GroupAction, Manifold, Quadrature, as_complex, safe_normalize
from .circle import rotation_2d


class Torus(Manifold, ExactMap, GroupAction, Quadrature):
    """The flat torus ``T^k`` embedded as a product of ``k`` unit circles."""

    def __init__(self, k: int):
        k = int(k)
        if k < 1:
            raise ValueError("T<k>: k must be at least 1")
        self.k = k
        self.dim, self.ambient_dim, self.group_param_dim = k, 2 * k, 2 * k
        self.spec = f"T{k}"

    @property
    def has_quadrature(self) -> bool:
        return self.k <= 3

    def _pairs(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], self.k, 2)

    def volume(self) -> float:
        return (2 * math.pi) ** self.k

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        return self.exact_map(torch.rand(n, self.k, generator=generator, dtype=dtype))

    def project(self, x: Tensor) -> Tensor:
        return safe_normalize(self._pairs(x)).reshape(x.shape)

    def exact_map(self, z: Tensor) -> Tensor:
        theta = 2 * math.pi * z
        return torch.stack([theta.cos(), theta.sin()], -1).reshape(*z.shape[:-1], 2 * self.k)

    def group_element(self, params: Tensor) -> Tensor:
        return safe_normalize(self._pairs(params))

    def group_matrix(self, g: Tensor) -> Tensor:
        """Block-diagonal ``2k × 2k`` matrix of the ``k`` rotations."""
        blocks = rotation_2d(g[..., 0], g[..., 1])  # (..., k, 2, 2)
        out = torch.zeros(*g.shape[:-2], self.ambient_dim, self.ambient_dim, dtype=g.dtype,
                          device=g.device)
        for j in range(self.k):
            out[..., 2 * j:2 * j + 2, 2 * j:2 * j + 2] = blocks[..., j, :, :]
        return out

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        prod = as_complex(g) * as_complex(self._pairs(x))
        return torch.view_as_real(prod).reshape(*prod.shape[:-1], 2 * self.k)

    def random_group_element(self, n, *, generator=None, dtype=torch.float32):
        return self.group_element(torch.randn(n, self.group_param_dim, generator=generator, dtype=dtype))

    def quadrature(self, level: int):
        """Product periodic trapezoid rule, ``2^level`` angles per circle (k <= 3)."""
        if self.k > 3:
            raise ValueError(f"{self.spec}: no quadrature rule for k > 3 (has_quadrature is False)")
        n = 2 ** int(level)
        grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n] * self.k, indexing="ij")
        z = torch.stack([g.reshape(-1) for g in grids], -1)
        return self.exact_map(z), torch.full((z.shape[0],), -self.k * math.log(n), dtype=torch.float64)

    def quadrature_levels(self):
        if self.k > 3:
            raise ValueError(f"{self.spec}: no quadrature rule for k > 3 (has_quadrature is False)")
        return {1: (8, 20), 2: (6, 10), 3: (4, 7)}[self.k]
