"""The real projective plane ``RP2``: lines through the origin of ``R^3``, as the projectors
``X = x xᵀ`` of unit vectors ``x`` (points are flattened 3×3 matrices, trailing dim 9).

``±x`` give the same ``X``, so the upper hemisphere covers ``RP2`` once: the exact map takes
Archimedes' map onto the hemisphere, ``φ = 2π z₁``, ``cos ϑ = 1 - z₂`` (uniform there), and
``X = x xᵀ`` (injective but for the equator, a set of measure zero). In the Frobenius metric
``|dX|² = 2|dx|²``, so the volume element is the constant ``2 · 2π = 4π = vol(RP2)``: the box's
uniform prior goes to the uniform measure. ``SO(3)`` acts by ``X -> g X gᵀ`` and preserves it
(elements from a 6-vector by Gram–Schmidt). ``RP2`` is not orientable and not a group.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ExactMap, GroupAction, Manifold, Quadrature, safe_normalize
from .rotations import haar_rotations, rotation_from_6d
from .sphere import Sphere


def projector(x: Tensor) -> Tensor:
    """``x xᵀ`` flattened (trailing dim 9) for vectors ``x`` (trailing dim 3)."""
    return (x.unsqueeze(-1) * x.unsqueeze(-2)).reshape(*x.shape[:-1], 9)


class ProjectivePlane(Manifold, ExactMap, GroupAction, Quadrature):
    """``RP2`` as rank-one projectors in ``R^{3×3}``; group ``SO(3)`` by conjugation."""

    spec = "RP2"
    dim, ambient_dim, group_param_dim = 2, 9, 6

    def volume(self) -> float:
        return 4 * math.pi

    def exact_map(self, z: Tensor) -> Tensor:
        phi = 2 * math.pi * z[..., 0]
        cos_t = 1 - z[..., 1]
        sin_t = torch.sqrt((1 - cos_t * cos_t).clamp_min(0))
        return projector(torch.stack([sin_t * phi.cos(), sin_t * phi.sin(), cos_t], -1))

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        return projector(safe_normalize(torch.randn(n, 3, generator=generator, dtype=dtype)))

    def project(self, x: Tensor) -> Tensor:
        """The nearest projector: ``v vᵀ`` for the top eigenvector ``v`` of the symmetric part."""
        m = x.reshape(*x.shape[:-1], 3, 3)
        _, vecs = torch.linalg.eigh(0.5 * (m + m.transpose(-1, -2)))
        return projector(vecs[..., -1])

    def group_element(self, params: Tensor) -> Tensor:
        return rotation_from_6d(params)

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        m = x.reshape(*x.shape[:-1], 3, 3)
        return (g @ m @ g.transpose(-1, -2)).reshape(*x.shape[:-1], 9)

    def random_group_element(self, n, *, generator=None, dtype=torch.float32):
        return haar_rotations(n, 3, generator=generator, dtype=dtype)

    def quadrature(self, level: int):
        """The sphere's rule mapped by ``x -> x xᵀ`` (``U(S²)`` goes to ``U(RP2)``)."""
        pts, log_w = Sphere(2).quadrature(level)
        return projector(pts), log_w

    def quadrature_levels(self):
        return Sphere(2).quadrature_levels()
