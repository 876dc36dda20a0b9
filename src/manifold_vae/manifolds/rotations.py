"""Rotation matrices from unconstrained encoder outputs (pure functions).

* ``rotation_from_6d``: Gram–Schmidt on two 3-vectors, third column their cross product
  (Zhou et al. 2019, "On the continuity of rotation representations", arXiv:1812.07035);
  continuous, unlike Euler angles or quaternions.
* ``rotation_from_matrix``: for ``SO(n)``, ``n != 3``: QR of an unconstrained ``n×n`` matrix with
  the signs fixed so that ``diag(R) > 0`` and the determinant made +1.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import safe_normalize


def rotation_from_6d(v: Tensor) -> Tensor:
    """``(..., 6) -> (..., 3, 3)`` rotation matrices (columns ``b1, b2, b1 × b2``)."""
    a1, a2 = v[..., :3], v[..., 3:]
    b1 = safe_normalize(a1)
    b2 = safe_normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], -1)


def rotation_from_matrix(a: Tensor) -> Tensor:
    """``(..., n, n) -> (..., n, n)`` in ``SO(n)`` via QR with positive ``diag(R)``, det +1."""
    q, r = torch.linalg.qr(a)
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    q = q * torch.where(d < 0, -1.0, 1.0).to(q.dtype).unsqueeze(-2)
    det = torch.linalg.det(q)
    flip = torch.ones(q.shape[:-1], dtype=q.dtype, device=q.device)
    flip[..., -1] = torch.where(det < 0, -1.0, 1.0).to(q.dtype)
    return q * flip.unsqueeze(-2)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Unit quaternions ``(w, x, y, z)`` (trailing dim 4) to rotation matrices ``(..., 3, 3)``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def haar_rotations(n: int, dim: int, *, generator=None, dtype=torch.float32) -> Tensor:
    """``n`` Haar-distributed rotations of ``SO(dim)`` (QR of Gaussian matrices, sign-fixed)."""
    a = torch.randn(n, dim, dim, generator=generator, dtype=dtype)
    return rotation_from_matrix(a)
