"""Spheres ``S^n ⊂ R^{n+1}``.

Exact maps from the hidden box (uniform to uniform, injective a.e.):

* ``S^1``: see :mod:`.circle`;
* ``S^2``: Archimedes' map ``φ = 2π z1``, ``cos ϑ = 1 - 2 z2``; volume element ``4π``;
* ``S^3``: Shoemake's map ``(sqrt(1-u1) sin 2πu2, sqrt(1-u1) cos 2πu2, sqrt(u1) sin 2πu3,
  sqrt(u1) cos 2πu3)``; volume element ``2π²``;
* ``n >= 4``: the squared norms of a uniform point's coordinate planes ``(x_1,x_2), (x_3,x_4), …``
  (and ``x_{n+1}^2`` when ``n`` is even) are ``Dirichlet(1, …, 1[, ½])`` and each plane's angle is
  uniform and independent of them. Stick-breaking draws the Dirichlet from the box:
  ``v_j ~ Beta(1, β_j)`` with ``β_j`` = the rest of the parameters, whose inverse CDF is closed
  form, ``1 - v_j = u_j^{1/β_j}``; for even ``n`` the last plane and ``x_{n+1}`` form an ``S^2``
  of radius ``sqrt(rest)`` drawn by Archimedes' map. Hidden layout: ``k-1`` stick coordinates,
  ``k-1`` plane angles, then the last plane's angle (odd ``n``) or Archimedes' two coordinates
  (even ``n``), ``k = ⌈n/2⌉``. It reduces to Shoemake's map for ``n = 3`` (up to coordinate
  order). Volume element ``vol(S^n)``.

Group ``SO(n+1)`` acting by matrix multiplication; from a 6-vector by Gram–Schmidt for ``S^2``,
from an ``(n+1)×(n+1)`` matrix by QR otherwise.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ExactMap, GroupAction, Manifold, Quadrature, safe_normalize
from .rotations import haar_rotations, rotation_from_6d, rotation_from_matrix


def sphere_volume(n: int) -> float:
    """``vol(S^n) = 2 π^{(n+1)/2} / Γ((n+1)/2)``."""
    return 2 * math.pi ** ((n + 1) / 2) / math.gamma((n + 1) / 2)


def _archimedes(z1: Tensor, z2: Tensor) -> Tensor:
    """Archimedes' map ``[0,1]^2 -> S^2``: ``φ = 2π z1``, ``cos ϑ = 1 - 2 z2``."""
    phi = 2 * math.pi * z1
    sin_t = 2 * torch.sqrt((z2 * (1 - z2)).clamp_min(0))
    return torch.stack([sin_t * phi.cos(), sin_t * phi.sin(), 1 - 2 * z2], -1)


def _stick_breaking_sphere(z: Tensor, n: int) -> Tensor:
    """The exact map ``[0,1]^n -> S^n`` for any ``n >= 2`` (module docstring): Dirichlet plane
    weights by stick-breaking with closed-form Beta(1, β) inverse CDFs, uniform plane angles.

    In log space: ``log(1 - v_j) = log(u_j) / β_j``, ``log R_j = Σ_{i<=j} log(1 - v_i)``, plane
    radii ``sqrt(w_j) = sqrt(R_{j-1}) sqrt(v_j)``; the last plane's is ``sqrt(R_{k-1})`` (odd ``n``)
    or ``sqrt(R_{k-1}) sin ϑ`` with ``sin² ϑ = 4t(1-t)`` (even ``n``, Archimedes)."""
    k = (n + 1) // 2                        # planes (the last one shares an S^2 when n is even)
    half = 0.5 if n % 2 == 0 else 0.0
    inv_beta = 1 / (torch.arange(k - 1, 0, -1, dtype=z.dtype, device=z.device) + half)
    log_keep = z[..., :k - 1].clamp_min(torch.finfo(z.dtype).tiny).log() * inv_beta  # log(1-v_j)
    log_rest = torch.nn.functional.pad(torch.cumsum(log_keep, -1), (1, 0))   # log R_0 … R_{k-1}
    root_rest = (0.5 * log_rest).exp()
    v = torch.nn.functional.pad(-torch.expm1(log_keep), (0, 1), value=1.0)  # (v_1 … v_{k-1}, 1)
    if n % 2 == 0:                          # Archimedes on the last S^2: plane radius sin ϑ
        t = z[..., -1:]
        v = torch.cat([v[..., :-1], 4 * t * (1 - t)], -1)
    radius = root_rest * v.clamp_min(0).sqrt()
    theta = 2 * math.pi * z[..., k - 1:2 * k - 1]                          # k plane angles
    planes = torch.stack([radius * theta.cos(), radius * theta.sin()], -1).flatten(-2)
    if n % 2:
        return planes
    return torch.cat([planes, root_rest[..., -1:] * (1 - 2 * z[..., -1:])], -1)


class Sphere(Manifold, ExactMap, GroupAction, Quadrature):
    """The unit sphere ``S^n`` (n >= 2; ``S1`` is :class:`~.circle.Circle`)."""

    def __init__(self, n: int):
        n = int(n)
        if n < 2:
            raise ValueError("S<n>: use S1 for the circle; n must be >= 1")
        self.n = n
        self.dim, self.ambient_dim = n, n + 1
        self.spec = f"S{n}"
        self.group_param_dim = 6 if n == 2 else (n + 1) ** 2
        # the Beta box draws n Betas per example (two Gamma draws and their implicit gradients
        # each); Gaussian coordinates through Φ cost a few whole-tensor operations: measured
        # 1.9-3.8x faster per layer for n = 2..20 (benchmarks/latent_layer.py) and as good
        # (benchmarks/hidden_space.py)
        self.preferred_hidden = "normal"

    @property
    def has_quadrature(self) -> bool:
        return self.n == 2

    def volume(self) -> float:
        return sphere_volume(self.n)

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        return safe_normalize(torch.randn(n, self.ambient_dim, generator=generator, dtype=dtype))

    def project(self, x: Tensor) -> Tensor:
        return safe_normalize(x)

    def exact_map(self, z: Tensor) -> Tensor:
        if self.n == 2:
            return _archimedes(z[..., 0], z[..., 1])
        if self.n == 3:
            u1, u2, u3 = z.unbind(-1)
            r1, r2 = torch.sqrt((1 - u1).clamp_min(0)), torch.sqrt(u1.clamp_min(0))
            a, b = 2 * math.pi * u2, 2 * math.pi * u3
            return torch.stack([r1 * a.sin(), r1 * a.cos(), r2 * b.sin(), r2 * b.cos()], -1)
        return _stick_breaking_sphere(z, self.n)

    def group_element(self, params: Tensor) -> Tensor:
        if self.n == 2:
            return rotation_from_6d(params)
        k = self.ambient_dim
        return rotation_from_matrix(params.reshape(*params.shape[:-1], k, k))

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        return (g @ x.unsqueeze(-1)).squeeze(-1)

    def random_group_element(self, n, *, generator=None, dtype=torch.float32):
        return haar_rotations(n, self.ambient_dim, generator=generator, dtype=dtype)

    def quadrature(self, level: int):
        """``S^2``: Gauss–Legendre in ``cos ϑ`` (2^level nodes) × trapezoid in ``φ`` (2^(level+1))."""
        if self.n != 2:
            raise ValueError(f"{self.spec}: no quadrature rule (has_quadrature is False)")
        import numpy as np

        nt = 2 ** int(level)
        t, w = np.polynomial.legendre.leggauss(nt)
        t = torch.from_numpy(t)
        w = torch.from_numpy(w) / 2
        nphi = 2 * nt
        phi = torch.arange(nphi, dtype=torch.float64) * (2 * math.pi / nphi)
        s = torch.sqrt(1 - t * t)
        pts = torch.stack([s[:, None] * phi.cos()[None], s[:, None] * phi.sin()[None],
                           t[:, None].expand(nt, nphi)], -1).reshape(-1, 3)
        log_w = (w.log()[:, None] - math.log(nphi)).expand(nt, nphi).reshape(-1)
        return pts, log_w

    def quadrature_levels(self):
        if self.n != 2:
            raise ValueError(f"{self.spec}: no quadrature rule (has_quadrature is False)")
        return 6, 10
