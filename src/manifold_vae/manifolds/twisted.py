"""Non-orientable surfaces in ``R^4``: the Klein bottle ``K2`` and the Möbius band ``Mob``.

Both are a circle's worth of a curve turned by half a turn on the way round:

    x(u, s) = (a(s) cos u, a(s) sin u, b(s) cos(u/2), b(s) sin(u/2)),   u ∈ [0, 2π)

so that ``x(u + 2π, s) = x(u, s')`` with ``b(s') = -b(s)``, ``a(s') = a(s)``: the second factor
comes back mirrored. ``K2``: ``a = R + r cos v``, ``b = r sin v``, ``v ∈ [0, 2π)`` (``R = 2``,
``r = 1``: a smooth embedding of the Klein bottle, the tube's cross-section flipped after one
circuit); ``Mob``: ``a = 1``, ``b = t``, ``t ∈ (-1, 1)`` (the open strip of half-width 1 about
its central circle). The partial derivatives are orthogonal, so the volume element is
``sqrt((a² + b²/4)(a'² + b'²))``, a function of ``s`` alone: the exact map from the box takes
``u = 2π z₁`` and ``s = F⁻¹(z₂)``, the inverse CDF of that density (:mod:`.inverse_cdf`), and so
pushes the uniform box onto the uniform measure. The circle acts by ``u -> u + 2β``, i.e. turning
``(x₁, x₂)`` by ``2β`` and ``(x₃, x₄)`` by ``β``; it preserves the measure (which does not depend
on ``u``). Neither surface is a group.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import ExactMap, GroupAction, Manifold, Quadrature, as_complex, safe_normalize
from .circle import rotation_2d
from .inverse_cdf import TabulatedInverseCDF, periodic_trapezoid


class TwistedBand(Manifold, ExactMap, GroupAction, Quadrature):
    """``x(u, s)`` as in the module docstring; subclasses give ``a``, ``b`` and the range of
    ``s`` (periodic or not)."""

    dim, ambient_dim, group_param_dim = 2, 4, 2
    #: relative accuracy of the exact map's volume element: the inverse CDF is a table
    #: (linear interpolation on 16384 cells: measured within 1e-4 of vol(M))
    volume_element_rtol = 1e-3
    s_range: tuple[float, float] = (0.0, 2 * math.pi)
    s_periodic = True

    def __init__(self):
        self._inverse = TabulatedInverseCDF(self.s_density, *self.s_range)

    # the curve and its speed
    def a(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def b(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def curve_speed(self, s: Tensor) -> Tensor:
        """``sqrt(a'² + b'²)``."""
        raise NotImplementedError

    def s_density(self, s: Tensor) -> Tensor:
        """The volume element ``sqrt((a² + b²/4)(a'² + b'²))`` (a function of ``s`` alone)."""
        return torch.sqrt(self.a(s) ** 2 + 0.25 * self.b(s) ** 2) * self.curve_speed(s)

    def chart_map(self, u: Tensor, s: Tensor) -> Tensor:
        a, b = self.a(s), self.b(s)
        half = 0.5 * u
        return torch.stack([a * torch.cos(u), a * torch.sin(u), b * torch.cos(half),
                            b * torch.sin(half)], -1)

    # ------------------------------------------------------------------ manifold
    def volume(self) -> float:
        return 2 * math.pi * self._inverse.total

    def exact_map(self, z: Tensor) -> Tensor:
        return self.chart_map(2 * math.pi * z[..., 0], self._inverse(z[..., 1]))

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        """``u`` uniform, ``s`` by rejection from the volume density (exact)."""
        lo, hi = self.s_range
        grid = torch.linspace(lo, hi, 4097, dtype=torch.float64)
        top = float(self.s_density(grid).max()) * 1.0001
        u = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        s = torch.empty(n, dtype=torch.float64)
        todo = torch.ones(n, dtype=torch.bool)
        while bool(todo.any()):
            k = int(todo.sum())
            cand = lo + (hi - lo) * torch.rand(k, generator=generator, dtype=torch.float64)
            keep = torch.rand(k, generator=generator, dtype=torch.float64) * top < self.s_density(cand)
            idx = todo.nonzero(as_tuple=True)[0][keep]
            s[idx] = cand[keep]
            todo[idx] = False
        return self.chart_map(u, s).to(dtype)

    def chart(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, s)`` of points on (or near) the surface."""
        u = torch.atan2(x[..., 1], x[..., 0]) % (2 * math.pi)
        half = 0.5 * u
        b = x[..., 2] * torch.cos(half) + x[..., 3] * torch.sin(half)
        a = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
        return u, self.s_from(a, b)

    def s_from(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """``x(chart(x))``: exact for points on the surface and close to the nearest point for
        points near it (what membership checks and quality reports need)."""
        return self.chart_map(*self.chart(x))

    # ------------------------------------------------------------------ the circle's action
    def group_element(self, params: Tensor) -> Tensor:
        return safe_normalize(params)

    def group_matrix(self, g: Tensor) -> Tensor:
        double = torch.stack([g[..., 0] ** 2 - g[..., 1] ** 2, 2 * g[..., 0] * g[..., 1]], -1)
        out = torch.zeros(*g.shape[:-1], 4, 4, dtype=g.dtype, device=g.device)
        out[..., :2, :2] = rotation_2d(double[..., 0], double[..., 1])
        out[..., 2:, 2:] = rotation_2d(g[..., 0], g[..., 1])
        return out

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        """``u -> u + 2β`` for ``g = (cos β, sin β)``: ``(x₁ + i x₂) g²``, ``(x₃ + i x₄) g``."""
        gc = as_complex(g)
        first = as_complex(x[..., :2]) * gc * gc
        second = as_complex(x[..., 2:]) * gc
        return torch.cat([torch.view_as_real(first), torch.view_as_real(second)], -1)

    # ------------------------------------------------------------------ quadrature
    def quadrature(self, level: int):
        """Periodic trapezoid in ``u`` (``2^level`` nodes) × a rule in ``s`` (periodic trapezoid,
        or Gauss–Legendre on an open range, ``2^level`` nodes), weighted by the volume element."""
        n = 2 ** int(level)
        u = periodic_trapezoid(n)
        lo, hi = self.s_range
        if self.s_periodic:
            s = lo + (hi - lo) * torch.arange(n, dtype=torch.float64) / n
            ws = torch.full((n,), (hi - lo) / n, dtype=torch.float64)
        else:
            t, w = np.polynomial.legendre.leggauss(n)
            s = torch.from_numpy(lo + (hi - lo) * (t + 1) / 2)
            ws = torch.from_numpy(w * (hi - lo) / 2)
        log_ws = torch.log(ws * self.s_density(s))
        uu, ss = torch.meshgrid(u, s, indexing="ij")
        log_w = (log_ws[None, :] - math.log(n)).expand(n, n).reshape(-1)
        return self.chart_map(uu.reshape(-1), ss.reshape(-1)), log_w - torch.logsumexp(log_w, 0)

    def quadrature_levels(self):
        return 6, 10


class KleinBottle(TwistedBand):
    """The Klein bottle ``K2`` in ``R^4``: ``a = R + r cos v``, ``b = r sin v`` (``R = 2``,
    ``r = 1``)."""

    spec = "K2"
    R, r = 2.0, 1.0
    # the tube's circle v: periodic in the exact map, not moved by the circle's action. Once round
    # u the tube comes back mirrored (v -> -v), so without a shift of z₂ an encoder following a
    # point round u must jump from z₂ to 1 - z₂ somewhere (measured: 9.5 % of the test rows of
    # the K2 benchmark lost 5-340 nats each; with the shift 0.25 %)
    wrapped_hidden = (1,)

    def a(self, s):
        return self.R + self.r * torch.cos(s)

    def b(self, s):
        return self.r * torch.sin(s)

    def curve_speed(self, s):
        return torch.full_like(s, self.r)

    def s_from(self, a, b):
        return torch.atan2(b, a - self.R) % (2 * math.pi)


class MobiusBand(TwistedBand):
    """The open Möbius band ``Mob`` in ``R^4``: ``a = 1``, ``b = t``, ``t ∈ (-1, 1)``."""

    spec = "Mob"
    s_range = (-1.0, 1.0)
    s_periodic = False

    def a(self, s):
        return torch.ones_like(s)

    def b(self, s):
        return s

    def curve_speed(self, s):
        return torch.ones_like(s)

    def s_from(self, a, b):
        return b.clamp(-1.0, 1.0)
