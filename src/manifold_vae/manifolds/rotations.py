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


def _quadratic_form_matrix() -> Tensor:
    """``C`` (16 × 9) with ``vec R(q) = vec(q qᵀ) @ C`` for unit quaternions ``q = (w, x, y, z)``."""
    c = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    w, x, y, z = range(4)
    terms = {
        (0, 0): [(w, w, 1), (x, x, 1), (y, y, -1), (z, z, -1)],
        (0, 1): [(x, y, 2), (w, z, -2)], (0, 2): [(x, z, 2), (w, y, 2)],
        (1, 0): [(x, y, 2), (w, z, 2)], (1, 1): [(w, w, 1), (x, x, -1), (y, y, 1), (z, z, -1)],
        (1, 2): [(y, z, 2), (w, x, -2)], (2, 0): [(x, z, 2), (w, y, -2)],
        (2, 1): [(y, z, 2), (w, x, 2)], (2, 2): [(w, w, 1), (x, x, -1), (y, y, -1), (z, z, 1)],
    }
    for (i, j), entries in terms.items():
        for a, b, coef in entries:
            c[a, b, i, j] += coef
    return c.reshape(16, 9)


_QUAT_TO_MAT = _quadratic_form_matrix()


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Unit quaternions ``(w, x, y, z)`` (trailing dim 4) to rotation matrices ``(..., 3, 3)``.

    ``R = (w² - |v|²) I + 2 v vᵀ + 2 w [v]_×`` is a quadratic form in ``q``: one outer product and
    one matrix product (two autograd nodes instead of dozens of elementwise ones)."""
    outer = (q.unsqueeze(-1) * q.unsqueeze(-2)).reshape(*q.shape[:-1], 16)
    return (outer @ _QUAT_TO_MAT.to(device=q.device, dtype=q.dtype)).reshape(*q.shape[:-1], 3, 3)


def haar_rotations(n: int, dim: int, *, generator=None, dtype=torch.float32) -> Tensor:
    """``n`` Haar-distributed rotations of ``SO(dim)`` (QR of Gaussian matrices, sign-fixed)."""
    a = torch.randn(n, dim, dim, generator=generator, dtype=dtype)
    return rotation_from_matrix(a)
