"""In-plane turn consistency: a label-free training term for image models whose latent carries
a planar angle or a 3D rotation.

Turning an image about its centre by ``α`` must turn the latent by ``α``: the polar angle
``θ(m) = atan2(m_2, m_1)`` of the posterior's central point ``m`` (the angle a ``conv-rotate``
decoder turns its upright image by) should satisfy ``θ(m(rot_α x)) = θ(m(x)) + α``. For each
training image a uniform ``α`` is drawn, the turned image goes through the encoder as well, and

    penalty(x) = weight · (1 − cos(θ(m(rot_α x)) − θ(m(x)) − α))

is added to the negative ELBO (0 when consistent, ``2·weight`` for a half-turn disagreement). The
term shapes only the encoder's amortization: the model (prior, decoder, likelihood) and its ELBO
and IWAE bounds are those of any other encoder, hence still valid bounds of the model's
log-likelihood. It needs no labels: only the data's known symmetry (a turned digit is still a
digit of the same source, at another angle). An exactly ``C_n``-equivariant encoder
(:class:`~.networks.SymmetrizedEncoder`) already satisfies it for turns by ``2π/n``; the term
asks the same of every angle, which a quarter-turn-equivariant encoder does not give (it can read
a copy half a turn from its source's other copies).

The turn is :func:`~manifold_vae.data.images.rotate_images` (counter-clockwise, the convention
of the data and of the rotating decoder: ``decode(R_α m) = rot_α decode(m)``).

For a decoder that turns a 3D object by a rotation ``R(m)`` read from the latent and projects it
along the camera's z axis (``network="splat"``), turning the image about its centre by ``α`` is
turning the object about the camera axis: ``R(m(rot_α x)) = R_z(α) R(m(x))``, and the penalty is
``weight · (1 − cos φ)`` with ``φ`` the angle of the rotation between the two sides,
``cos φ = (tr(R(m(rot_α x))ᵀ R_z(α) R(m(x))) − 1) / 2`` (same scale as the planar one).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.images import rotate_images


def planar_angle(m: Tensor) -> Tensor:
    """``atan2(m_2, m_1)``: the polar angle of a point's first two coordinates."""
    return torch.atan2(m[..., 1], m[..., 0])


def camera_turns(alpha: Tensor) -> Tensor:
    """``R_z(α)``: rotations about the camera (z) axis, ``(..., 3, 3)``, counter-clockwise in the
    image (x right, y up)."""
    c, s = torch.cos(alpha), torch.sin(alpha)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def turned_images(x: Tensor, image_shape, observe=None) -> tuple[Tensor, Tensor]:
    """``(observe(rot_α x), α)``: the rows of ``x`` ``(B, C·H·W)`` turned by ``α ~ U[0, 2π)``
    each (drawn on ``x``'s device and dtype), then observed as a training step observes data."""
    b = x.shape[0]
    alpha = 2 * math.pi * torch.rand(b, device=x.device, dtype=x.dtype)
    turned = rotate_images(x.reshape(b, *image_shape), alpha).reshape(b, -1)
    return (turned if observe is None else observe(turned)), alpha


def rotation_turn_consistency(encode_rotation, x: Tensor, r: Tensor, image_shape, *,
                              observe=None) -> Tensor:
    """Per-example ``1 − cos φ`` between ``R(rot_α x)`` and ``R_z(α) R(x)``, ``α ~ U[0, 2π)``,
    for images ``x`` whose rotations ``r`` ``(B, 3, 3)`` the caller already has;
    ``encode_rotation`` maps observations to rotations."""
    turned, alpha = turned_images(x, image_shape, observe)
    target = camera_turns(alpha).to(r.dtype) @ r
    cos_phi = ((encode_rotation(turned) * target).sum((-2, -1)) - 1) / 2
    return 1 - cos_phi


def turn_consistency(encode_point, x: Tensor, m: Tensor, image_shape, *, observe=None) -> Tensor:
    """Per-example ``1 − cos(θ(m(rot_α x)) − θ(m) − α)`` with ``α ~ U[0, 2π)``, for images ``x``
    ``(B, C·H·W)`` whose latent central points ``m`` ``(B, n)`` the caller already has.

    ``encode_point`` maps observations to latent central points; ``observe`` (e.g. dynamic
    binarization) is applied to the turned images before they are encoded, as it was to ``x``."""
    turned, alpha = turned_images(x, image_shape, observe)
    return 1 - torch.cos(planar_angle(encode_point(turned)) - planar_angle(m) - alpha)
