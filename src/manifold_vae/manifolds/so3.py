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

from .base import Chart, ExactMap, GroupAction, Manifold, Quadrature
from .rotations import haar_rotations, quaternion_to_matrix, rotation_from_6d


def shoemake_quaternion(z: Tensor) -> Tensor:
    """Shoemake's map from ``[0,1]^3`` to unit quaternions ``(w, x, y, z)``, with ``u2 = z2/2``."""
    u1 = z[..., :1]
    radius = torch.cat([1 - u1, u1], -1).clamp_min(0).sqrt()          # (r1, r2)
    angles = z[..., 1:] * z.new_tensor([math.pi, 2 * math.pi])        # 2π·(u2/2): one of ±q
    trig = torch.stack([angles.sin(), angles.cos()], -1)               # (sin a, cos a), (sin b, cos b)
    return (radius.unsqueeze(-1) * trig).reshape(*z.shape[:-1], 4)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of quaternions ``(w, x, y, z)``; ``R(ab) = R(a) R(b)``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def quaternion_conjugate(q: Tensor) -> Tensor:
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_exp(v: Tensor) -> Tensor:
    """Unit quaternion of the rotation by angle ``|v|`` about ``v``: ``(cos θ/2, sin(θ/2) v/θ)``."""
    theta = v.norm(dim=-1, keepdim=True)
    half_sinc = 0.5 * torch.sinc(theta / (2 * math.pi))   # sin(θ/2)/θ, stable at 0
    return torch.cat([torch.cos(theta / 2), v * half_sinc], -1)


def quaternion_log(q: Tensor) -> Tensor:
    """Axis-angle vector (angle in ``[0, π]``) of the rotation of a unit quaternion (either sign)."""
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., :1], q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    theta = 2 * torch.atan2(s, w)
    factor = torch.where(s > 1e-12, theta / s.clamp_min(1e-12), 2 / w.clamp_min(1e-12))
    return v * factor


def matrix_to_quaternion(r: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` to unit quaternions ``(w, x, y, z)`` (Shepperd's method:
    solve from the largest of ``4w², 4x², 4y², 4z²`` for stability)."""
    m = r
    t = torch.stack([1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
                     1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)   # 4w², 4x², 4y², 4z²
    d21, d12 = m[..., 2, 1], m[..., 1, 2]
    d02, d20 = m[..., 0, 2], m[..., 2, 0]
    d10, d01 = m[..., 1, 0], m[..., 0, 1]
    cands = torch.stack([
        torch.stack([t[..., 0], d21 - d12, d02 - d20, d10 - d01], -1),
        torch.stack([d21 - d12, t[..., 1], d01 + d10, d02 + d20], -1),
        torch.stack([d02 - d20, d01 + d10, t[..., 2], d12 + d21], -1),
        torch.stack([d10 - d01, d02 + d20, d12 + d21, t[..., 3]], -1),
    ], -2)                                                                  # row i = 4·q_i·q
    i = t.argmax(-1)
    row = torch.gather(cands, -2, i[..., None, None].expand(*i.shape, 1, 4)).squeeze(-2)
    return row / row.norm(dim=-1, keepdim=True)


class SO3(Manifold, ExactMap, GroupAction, Quadrature, Chart):
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
        return self.flatten(quaternion_to_matrix(shoemake_quaternion(z)))

    # ---------------------------------------------- chart at a point (for the likelihood ceiling)
    chart_radius = math.pi

    def chart_exp(self, center: Tensor, v: Tensor) -> Tensor:
        """``C · exp([v]_×)``: the rotation by angle ``|v|`` about axis ``v`` after ``C``."""
        q = quaternion_multiply(matrix_to_quaternion(self.as_matrix(center)), quaternion_exp(v))
        return self.flatten(quaternion_to_matrix(q))

    def chart_log(self, center: Tensor, x: Tensor) -> Tensor:
        """Axis-angle vector ``v`` (``|v| ≤ π``) with ``x = C · exp([v]_×)``."""
        qc = matrix_to_quaternion(self.as_matrix(center))
        qx = matrix_to_quaternion(self.as_matrix(x))
        return quaternion_log(quaternion_multiply(quaternion_conjugate(qc), qx))

    def chart_aliases(self, v: Tensor, k: int = 2) -> Tensor:
        """All chart vectors of the same rotation as ``v`` up to angle ``|v| + 2πk``:
        ``v̂ (θ + 2πj)`` for ``j = -k..k`` (stacked on a new leading dim; ``j = 0`` first)."""
        theta = v.norm(dim=-1, keepdim=True)
        unit = v / theta.clamp_min(1e-300)
        js = [0] + [j for j in range(-k, k + 1) if j != 0]
        return torch.stack([unit * (theta + 2 * math.pi * j) for j in js])

    def chart_log_uniform_density(self, v: Tensor) -> Tensor:
        """Log density of ``U(SO(3))`` in axis-angle coordinates: ``(1 - cos θ) / (4π² θ²)``.

        (Haar measure ``2(1 - cos θ)/θ² d³v`` on the ball ``θ = |v| < π``, total ``8π²``.)
        """
        theta = v.norm(dim=-1)
        # (1 - cos θ)/θ² = sinc(θ/2π)²/2, stable at θ = 0
        return 2 * torch.log(torch.sinc(theta / (2 * math.pi)).abs()) - math.log(8 * math.pi ** 2)

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
