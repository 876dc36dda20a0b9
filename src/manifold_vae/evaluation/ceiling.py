"""The data's true log-likelihood by quadrature over ``M``: the ceiling for every model.

``log p(x) = log ∫_M N(x; mean(m), σ² I) dU(m) ≈ log Σ_j w_j N(x; mean(m_j), σ² I)``

with a quadrature rule ``(m_j, w_j)`` of ``U(M)`` from the manifold (``quadrature(level)``:
for the circle, the periodic trapezoid rule on ``2^level`` equispaced angles, which converges
fast for a smooth periodic integrand). The rule is refined until two successive levels agree
to ``tol`` nats for every example; that difference is reported as the numerical error.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.synthetic import ManifoldBenchmark


def _log_gauss_mixture(x: Tensor, means: Tensor, log_w: Tensor, noise: float,
                       chunk: int = 512) -> Tensor:
    """``log Σ_j exp(log_w_j) N(x; means_j, σ² I)`` per row of ``x`` (float64)."""
    d = x.shape[-1]
    mm = (means * means).sum(-1)
    out = []
    for xs in torch.split(x, chunk):
        sq = (xs * xs).sum(-1, keepdim=True) - 2 * xs @ means.T + mm
        out.append(torch.logsumexp(log_w - sq.clamp_min(0) / (2 * noise**2), -1))
    return torch.cat(out) - 0.5 * d * math.log(2 * math.pi * noise**2)


def true_log_likelihood(bench: ManifoldBenchmark, x: Tensor, *, tol: float = 1e-4,
                        start_level: int | None = None, max_level: int | None = None
                        ) -> tuple[Tensor, float]:
    """Per-example true log-likelihood of ``x`` under ``bench`` and its numerical error (nats).

    Refines the manifold's quadrature rule until the largest per-example change between two
    successive levels is below ``tol``; returns the finer estimate and that change.
    """
    if bench.noise <= 0:
        raise ValueError("the true log-likelihood needs observation noise > 0 "
                         "(noise-free data have no density)")
    manifold = bench.manifold
    x = x.to(torch.float64)
    lo, hi = manifold.quadrature_levels()
    level = lo if start_level is None else start_level
    max_level = hi if max_level is None else max_level
    prev = None
    err = float("inf")
    while level <= max_level:
        pts, log_w = manifold.quadrature(level)
        cur = _log_gauss_mixture(x, bench.mean(pts), log_w, bench.noise)
        if prev is not None:
            err = float((cur - prev).abs().max())
            if err < tol:
                return cur, err
        prev = cur
        level += 1
    return prev, err
