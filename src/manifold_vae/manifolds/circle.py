"""The circle ``S^1 ⊂ R^2``.

Exact map from the hidden box: ``θ = 2π z``, ``f(z) = (cos θ, sin θ)``; its volume element is the
constant ``2π = vol(S^1)``, so it pushes ``U(0,1)`` onto the uniform distribution on the circle.
Symmetry group ``SO(2)``: rotations, parameterized by normalizing an unconstrained 2-vector
``v -> (cos ψ, sin ψ) = v/|v|`` (continuous, unlike a raw angle). A group element is stored as
that unit 2-vector, i.e. the unit complex number ``e^{iψ}``, and acts by complex multiplication
(``group_matrix`` gives the 2×2 rotation matrix).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ExactMap, GroupAction, Manifold, Quadrature, as_complex, safe_normalize


def rotation_2d(cos: Tensor, sin: Tensor) -> Tensor:
    """The 2×2 rotation matrices ``[[c, -s], [s, c]]`` (shape ``cos.shape + (2, 2)``)."""
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def circle_angle(x: Tensor) -> Tensor:
    """Angle in ``[0, 2π)`` of points in ``R^2`` (trailing dim 2)."""
    return torch.atan2(x[..., 1], x[..., 0]) % (2 * math.pi)


class _RotatedCircleMap(torch.autograd.Function):
    """Fused ``m = g(v) · f(z)`` on the circle: ``θ = 2πz + atan2(v_1, v_0)``, ``m = (cos θ, sin θ)``.

    One autograd node instead of about a dozen (the per-op overhead dominates at these sizes).
    ``atan2(v_1, v_0)`` is the angle of ``g(v) = v/|v|``, so this equals
    ``act(group_element(v), exact_map(z))``. Backward: ``∂θ/∂z = 2π``,
    ``∂θ/∂v = (-v_1, v_0) / max(|v|², ε²)`` (finite at ``v = 0``, like :func:`safe_normalize`).
    """

    @staticmethod
    def forward(ctx, z, v):
        theta = (2 * math.pi) * z[..., 0]
        if v is not None:
            theta = theta + torch.atan2(v[..., 1], v[..., 0])
        cos, sin = theta.cos(), theta.sin()
        ctx.save_for_backward(cos, sin, v)
        ctx.z_shape = z.shape
        return torch.stack([cos, sin], -1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gm):
        cos, sin, v = ctx.saved_tensors
        dtheta = gm[..., 1] * cos - gm[..., 0] * sin
        gz = ((2 * math.pi) * dtheta).unsqueeze(-1).sum_to_size(ctx.z_shape)
        gv = None
        if v is not None and ctx.needs_input_grad[1]:
            r2 = (v * v).sum(-1, keepdim=True).clamp_min(1e-16)
            gv = (dtheta.unsqueeze(-1) * torch.stack([-v[..., 1], v[..., 0]], -1) / r2)
            gv = gv.sum_to_size(v.shape)
        return gz, gv


class Circle(Manifold, ExactMap, GroupAction, Quadrature):
    """The unit circle ``S^1`` in ``R^2``; group ``SO(2)`` acting by rotation.

    Example::

        >>> m = Circle()
        >>> m.exact_map(torch.tensor([[0.25]]))
        tensor([[-4.3711e-08,  1.0000e+00]])
    """

    spec = "S1"
    dim = 1
    ambient_dim = 2
    group_param_dim = 2

    def volume(self) -> float:
        return 2 * math.pi

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=dtype)
        return torch.stack([theta.cos(), theta.sin()], -1)

    def quadrature(self, level: int):
        """Periodic trapezoid rule: ``2^level`` equispaced angles, equal weights."""
        n = 2 ** int(level)
        theta = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
        pts = torch.stack([theta.cos(), theta.sin()], -1)
        return pts, torch.full((n,), -math.log(n), dtype=torch.float64)

    def quadrature_levels(self):
        return 8, 20

    def project(self, x: Tensor) -> Tensor:
        return safe_normalize(x)

    def exact_map(self, z: Tensor) -> Tensor:
        theta = 2 * math.pi * z[..., 0]
        return torch.stack([theta.cos(), theta.sin()], -1)

    def act_on_exact(self, z: Tensor, group_params: Tensor | None = None) -> Tensor:
        """``g(params) · f(z)`` as one fused autograd node (see :class:`_RotatedCircleMap`)."""
        if torch.is_grad_enabled() and (z.requires_grad or (group_params is not None
                                                            and group_params.requires_grad)):
            return _RotatedCircleMap.apply(z, group_params)
        return super().act_on_exact(z, group_params)

    def group_element(self, params: Tensor) -> Tensor:
        return safe_normalize(params)

    def group_matrix(self, g: Tensor) -> Tensor:
        return rotation_2d(g[..., 0], g[..., 1])

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        """``e^{iψ} · (x_0 + i x_1)``."""
        prod = as_complex(g) * as_complex(x)
        return torch.view_as_real(prod)
