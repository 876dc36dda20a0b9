"""A tabulated inverse CDF: the step that makes a parameterization with a non-constant volume
element push the uniform box onto the uniform measure.

For a chart coordinate ``v`` on ``[lo, hi]`` whose share of the volume has density ``∝ w(v)``
(the volume element, when it depends on ``v`` alone), ``v = F⁻¹(z)`` with ``z ~ U(0, 1)`` has
that density. ``F`` is tabulated once (cumulative trapezoid on ``n`` cells of a fine grid) and
inverted by linear interpolation, which is differentiable in ``z`` (the slope of the cell).
The pushforward density is then ``w`` up to the trapezoid's ``O(1/n²)`` error.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


class TabulatedInverseCDF:
    """``z -> F⁻¹(z)`` for the density ``∝ density(v)`` on ``[lo, hi]`` (float64 tables)."""

    def __init__(self, density: Callable[[Tensor], Tensor], lo: float, hi: float, n: int = 16384):
        v = torch.linspace(lo, hi, n + 1, dtype=torch.float64)
        w = density(v)
        cells = 0.5 * (w[1:] + w[:-1]) * (v[1:] - v[:-1])
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cells, 0)])
        self.total = float(cdf[-1])                 # ∫ density over [lo, hi]
        self.grid, self.cdf = v, cdf / cdf[-1]
        self._on: dict = {}

    def _tables(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._on:
            self._on[key] = (self.cdf.to(device=like.device, dtype=like.dtype).contiguous(),
                             self.grid.to(device=like.device, dtype=like.dtype).contiguous())
        return self._on[key]

    def __call__(self, z: Tensor) -> Tensor:
        cdf, grid = self._tables(z)
        # a flat copy: searchsorted copies (and warns about) inputs with unusual strides
        i = torch.searchsorted(cdf, z.detach().flatten().clone()).view(z.shape).clamp(1, len(cdf) - 1)
        f0, f1, v0, v1 = cdf[i - 1], cdf[i], grid[i - 1], grid[i]
        return v0 + (z - f0) * (v1 - v0) / (f1 - f0)


def periodic_trapezoid(n: int, dtype=torch.float64) -> Tensor:
    """``n`` equispaced angles of ``[0, 2π)`` (the periodic trapezoid rule's nodes)."""
    return torch.arange(n, dtype=dtype) * (2 * math.pi / n)
