"""Volume element of an embedding and densities on ``M`` of pushed-forward hidden distributions.

For ``f: Z ⊂ R^d -> M ⊂ R^n`` with Jacobian ``J`` (n×d), the volume element is
``sqrt(det JᵀJ)`` and the density of ``f#p`` w.r.t. the volume measure of ``M`` is

``log p_M(f(z)) = log p_Z(z) - ½ log det(JᵀJ)``   (Golikov & Kretov, arXiv:1812.02769, appendix).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import jacrev, vmap


def jacobian(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Per-point Jacobians of ``f`` at ``z`` (n×d) by reverse-mode autograd: shape (n, out, d)."""
    return vmap(jacrev(lambda v: f(v.unsqueeze(0)).squeeze(0)))(z)


def log_volume_element(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """``½ log det(JᵀJ)`` at each row of ``z``."""
    J = jacobian(f, z)
    return 0.5 * torch.logdet(J.transpose(-1, -2) @ J)


def volume_element(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """``sqrt(det JᵀJ)`` at each row of ``z``; constant ``vol(M)`` for an exact uniform map."""
    return log_volume_element(f, z).exp()


def pushforward_log_density(log_pz: Tensor, f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """``log p_M(f(z)) = log p_Z(z) - ½ log det(JᵀJ)``."""
    return log_pz - log_volume_element(f, z)
