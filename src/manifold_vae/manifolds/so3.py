"""The rotation group ``SO(3) ⊂ R^{3×3}`` (points are flattened rotation matrices, trailing dim 9).

Exact map (Shoemake 1992, restricted to be injective): the unit quaternion
``q = (sqrt(1-u1) sin 2πu2, sqrt(1-u1) cos 2πu2, sqrt(u1) sin 2πu3, sqrt(u1) cos 2πu3)`` with
``u2 = z2 / 2`` picks one of ``±q``; ``R(q)`` is then Haar-uniform with the constant volume
element ``vol(SO(3)) = 16√2 π²`` in the Frobenius metric (the double cover ``S^3 -> SO(3)``
halves ``2π²`` and scales lengths by ``2√2``). Group: ``SO(3)`` acting by left multiplication,
elements from a 6-vector by Gram–Schmidt (Zhou et al. 2019, arXiv:1812.07035).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Manifold
from .rotations import haar_rotations, quaternion_to_matrix, rotation_from_6d


class SO3(Manifold):
    """Rotations of ``R^3``; group ``SO(3)`` by left multiplication."""

    spec = "SO3"
    dim = 3
    ambient_dim = 9
    group_param_dim = 6

    def volume(self) -> float:
        return 16 * math.sqrt(2) * math.pi ** 2

    @staticmethod
    def as_matrix(x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], 3, 3)

    @staticmethod
    def flatten(r: Tensor) -> Tensor:
        return r.reshape(*r.shape[:-2], 9)

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        return self.flatten(haar_rotations(n, 3, generator=generator, dtype=dtype))

    def project(self, x: Tensor) -> Tensor:
        """Nearest rotation (polar factor by SVD, det fixed to +1)."""
        u, _, vh = torch.linalg.svd(self.as_matrix(x))
        d = torch.linalg.det(u @ vh)
        u = torch.cat([u[..., :2], u[..., 2:] * d[..., None, None]], -1)
        return self.flatten(u @ vh)

    def exact_map(self, z: Tensor) -> Tensor:
        u1, u2, u3 = z.unbind(-1)
        r1, r2 = torch.sqrt((1 - u1).clamp_min(0)), torch.sqrt(u1.clamp_min(0))
        a, b = math.pi * u2, 2 * math.pi * u3   # 2π·(u2/2): one of ±q
        q = torch.stack([r1 * a.sin(), r1 * a.cos(), r2 * b.sin(), r2 * b.cos()], -1)
        return self.flatten(quaternion_to_matrix(q))

    def group_element(self, params: Tensor) -> Tensor:
        return rotation_from_6d(params)

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        return self.flatten(g @ self.as_matrix(x))

    def random_group_element(self, n, *, generator=None, dtype=torch.float32):
        return haar_rotations(n, 3, generator=generator, dtype=dtype)

    def quadrature(self, level: int):
        """Deterministic quasi-Monte-Carlo rule: ``2^level`` Sobol points through the exact map."""
        from torch.quasirandom import SobolEngine

        n = 2 ** int(level)
        z = SobolEngine(3, scramble=False).draw(n, dtype=torch.float64)
        z = (z + 0.5 / n) % 1.0  # shift off the box's faces
        return self.exact_map(z), torch.full((n,), -math.log(n), dtype=torch.float64)

    def quadrature_levels(self):
        return 14, 21
