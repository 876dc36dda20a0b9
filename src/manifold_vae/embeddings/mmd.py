"""Maximum mean discrepancy with the inverse multiquadratic kernel (pure functions).

``k_C(a, b) = C / (C + ||a - b||^2)``, summed over scales ``C``; the unbiased U-statistic

``MMD² = 1/(n(n-1)) Σ_{i≠j} k(x_i,x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i,y_j) - 2/(nm) Σ k(x_i,y_j)``.

Reference: Tolstikhin et al., Wasserstein Auto-Encoders, arXiv:1711.01558 (section 4).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

DEFAULT_SCALE_FACTORS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def imq_scales(variance_per_dim: float, dim: int,
               factors: Sequence[float] = DEFAULT_SCALE_FACTORS) -> list[float]:
    """Scales ``C = 2·dim·variance·factor`` around the heuristic of Tolstikhin et al."""
    base = 2.0 * dim * variance_per_dim
    return [base * f for f in factors]


def _imq_sum(sqdist: Tensor, scales: Sequence[float]) -> Tensor:
    out = torch.zeros_like(sqdist)
    for c in scales:
        out = out + c / (c + sqdist)
    return out


def imq_mmd2(x: Tensor, y: Tensor, scales: Sequence[float]) -> Tensor:
    """Unbiased estimate of ``MMD²`` between samples ``x`` (n×p) and ``y`` (m×p)."""
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two samples on each side")
    kxx = _imq_sum(torch.cdist(x, x).pow(2), scales)
    kyy = _imq_sum(torch.cdist(y, y).pow(2), scales)
    kxy = _imq_sum(torch.cdist(x, y).pow(2), scales)
    s = float(len(scales))  # diagonal of each kernel sum: k(a, a) = 1 per scale
    return ((kxx.sum() - n * s) / (n * (n - 1)) + (kyy.sum() - m * s) / (m * (m - 1))
            - 2 * kxy.mean())


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``||x_i - y_j||²`` as ``|x_i|² + |y_j|² - 2 x_i·y_j`` (one matmul, clamped at 0)."""
    return (x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(-2)
            - 2.0 * x @ y.transpose(-1, -2)).clamp_min(0.0)


class _IMQSum(torch.autograd.Function):
    """``Σ_ij Σ_C C/(C + D_ij)`` with the gradient ``-Σ_C C/(C + D)²`` formed in the same pass."""

    @staticmethod
    def forward(ctx, sqdist: Tensor, scales: tuple) -> Tensor:
        total = sqdist.new_zeros(())
        grad = torch.zeros_like(sqdist) if ctx.needs_input_grad[0] else None
        for c in scales:
            t = (sqdist + c).reciprocal_()
            total = total + c * t.sum()
            if grad is not None:
                grad.sub_(t.mul_(t), alpha=c)
        ctx.save_for_backward(grad if grad is not None else sqdist.new_empty(0))
        return total

    @staticmethod
    def backward(ctx, out_grad: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * out_grad, None


def imq_mmd2_loss(x: Tensor, y: Tensor, scales: Sequence[float], *,
                  with_prior_term: bool = False) -> Tensor:
    """:func:`imq_mmd2` for training: squared distances formed once and reused by every scale,
    the kernel gradient formed analytically; the ``y``-``y`` term, constant when ``y`` is a fixed
    prior sample, is left out unless ``with_prior_term`` (then the value equals :func:`imq_mmd2`)."""
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two samples on each side")
    scales, s = tuple(float(c) for c in scales), float(len(scales))
    out = ((_IMQSum.apply(squared_distances(x, x), scales) - n * s) / (n * (n - 1))
           - 2.0 * _IMQSum.apply(squared_distances(x, y), scales) / (n * m))
    if with_prior_term:
        out = out + (_IMQSum.apply(squared_distances(y, y), scales) - m * s) / (m * (m - 1))
    return out
