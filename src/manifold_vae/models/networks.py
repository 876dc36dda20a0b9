"""Ready-made encoder/decoder pairs: what the command line's network names build.

``NETWORKS[name](data_dim, latent, config)`` returns ``(encoder, decoder)`` for a
:class:`~manifold_vae.latents.ManifoldLatent` and a :class:`~.config.ModelConfig`:

* ``mlp``: MLP encoder and decoder (hidden widths reversed in the decoder);
* ``conv``: stride-2 conv encoder and its mirror (images, ``image_shape``);
* ``conv-rotate``: conv encoder and a decoder equivariant to planar rotations;
* ``splat``: conv encoder and a decoder that turns a learned 3D object.

The same pair serves every latent space, so comparisons between latent spaces are fair. Any other
module works as well: :class:`~.vae.VAE` takes whatever encoder and decoder it is given.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.mlp import MLP, activation_class
from ..manifolds.rotations import rotation_from_6d


def _conv_sizes(image_shape: Sequence[int], n_layers: int) -> tuple[int, int, int]:
    """``(C, H, W)`` checked: each of ``n_layers`` stride-2 convolutions halves H and W."""
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width), got {list(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    step = 2 ** n_layers
    if h % step or w % step:
        raise ValueError(f"a conv network with {n_layers} stride-2 layers needs height and width "
                         f"divisible by {step}; got {h}×{w}")
    return c, h, w


class ConvEncoder(nn.Module):
    """Flat images ``(B, C·H·W) -> (B, out)``: stride-2 4×4 convolutions (``channels``), then an
    MLP head with ``hidden`` widths. The DCGAN-style encoder of most image VAEs."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int], out_dim: int, *,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        act = activation_class(activation)
        c, h, w = _conv_sizes(image_shape, len(channels))
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = []
        width = c
        for ch in channels:
            layers += [nn.Conv2d(width, ch, 4, 2, 1), act()]
            width = ch
        self.convs = nn.Sequential(*layers)
        flat = width * (h >> len(channels)) * (w >> len(channels))
        self.head = MLP(flat, hidden, out_dim, activation=activation)
        self.in_dim, self.out_dim = c * h * w, out_dim

    def forward(self, x):
        lead = x.shape[:-1]
        y = self.convs(x.reshape(-1, *self.image_shape))
        return self.head(y.flatten(1)).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """``(…, in) -> (…, C·H·W)``: an MLP to a ``channels[-1] × H/2^L × W/2^L`` grid, then stride-2
    4×4 transposed convolutions back to the image (mirror of :class:`ConvEncoder`)."""

    max_eval_rows = 4096       # rows per IWAE chunk: feature maps are large

    def __init__(self, in_dim: int, hidden: Sequence[int], image_shape: Sequence[int], *,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        act = activation_class(activation)
        c, h, w = _conv_sizes(image_shape, len(channels))
        self.image_shape = (c, h, w)
        n = len(channels)
        self.grid = (int(channels[-1]), h >> n, w >> n)
        self.head = nn.Sequential(MLP(in_dim, hidden, self.grid[0] * self.grid[1] * self.grid[2],
                                      activation=activation), act())
        layers: list[nn.Module] = []
        widths = list(channels)[::-1] + [c]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1))
            if i < n - 1:
                layers.append(act())
        self.deconvs = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, c * h * w

    def forward(self, m):
        lead = m.shape[:-1]
        y = self.head(m.reshape(-1, m.shape[-1])).reshape(-1, *self.grid)
        return self.deconvs(y).reshape(*lead, self.out_dim)


class RotatingConvDecoder(nn.Module):
    """A decoder equivariant to planar rotations (``network="conv-rotate"``).

    ``(…, n) -> (…, C·H·W)`` logits. The first two coordinates of the latent point ``m`` are read in
    polar form ``(r cos θ, r sin θ)``: a :class:`ConvDecoder` draws an upright image from the
    rotation-invariant part ``(r, m_3, …, m_n)`` and a spatial transformer (Jaderberg et al.
    2015, arXiv:1506.02025) turns it by ``θ``. Hence ``decode(R_φ m) = R_φ decode(m)`` exactly
    for quarter turns and up to interpolation otherwise. The same decoder serves every latent
    space: on ``S1xRk`` the circle is the angle and ``r = 1``; a Gaussian ``R^{1+k}`` or a
    spherical ``S^{1+k}`` latent uses its first two coordinates in polar form (``r`` then acts as
    one more style coordinate), so all have ``k`` coordinates for everything but the angle."""

    max_eval_rows = 4096

    def __init__(self, in_dim: int, hidden: Sequence[int], image_shape: Sequence[int], *,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        if in_dim < 2:
            raise ValueError("a rotating decoder reads an angle from two latent coordinates; "
                             f"this latent has {in_dim}")
        self.content = ConvDecoder(in_dim - 1, hidden, image_shape, channels=channels,
                                   activation=activation)
        self.image_shape = self.content.image_shape
        self.in_dim, self.out_dim = in_dim, self.content.out_dim

    @staticmethod
    def angle(m):
        """``θ = atan2(m_2, m_1)``: the angle this decoder turns its upright image by."""
        return torch.atan2(m[..., 1], m[..., 0])

    def forward(self, m):
        lead = m.shape[:-1]
        flat = m.reshape(-1, m.shape[-1])
        r = torch.sqrt(flat[:, :2].pow(2).sum(-1, keepdim=True) + 1e-12)
        upright = self.content(torch.cat([r, flat[:, 2:]], -1)).reshape(-1, *self.image_shape)
        c, s = (flat[:, :2] / r).unbind(-1)
        # output pixel p samples the upright image at R(-θ) p (the grid's y axis points down)
        theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], -1),
                             torch.stack([s, c, torch.zeros_like(c)], -1)], -2)
        grid = F.affine_grid(theta, list(upright.shape), align_corners=False)
        # border padding: what comes in from outside is the (background) border of the image
        out = F.grid_sample(upright, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(*lead, self.out_dim)


class SplatDecoder(nn.Module):
    """A rotation-equivariant decoder for 3D rotations (``network="splat"``).

    ``(…, n) -> (…, C·H·W)`` logits: a learned 3D object — ``points`` Gaussian blobs with learned
    positions, albedos (one per image channel) and one learned width — is turned by ``R = GS(h(m))`` (Gram–Schmidt of a
    linear 6-vector head, Zhou et al. 2019, arXiv:1812.07035; initialised to read ``m``'s first
    six coordinates: two rows of an SO(3) factor), projected orthographically and splatted on a
    half-resolution grid (coverage, depth-weighted albedo per image channel and mean depth, a soft
    z-buffer), then refined to logits by a small conv net that also sees an MLP embedding of
    ``m`` (anything a rotation does not explain). Cost is O(points × pixels) per image."""

    max_eval_rows = 2048

    def __init__(self, in_dim: int, hidden: Sequence[int], image_shape: Sequence[int], *,
                 points: int = 128, activation: str = "relu"):
        super().__init__()
        act = activation_class(activation)
        c, h, w = _conv_sizes(image_shape, 1)
        self.image_shape = (c, h, w)
        self.points = nn.Parameter(0.5 * torch.randn(points, 3))
        # one albedo per point and channel; (points,) for one channel, as checkpoints store it
        self.albedo = nn.Parameter(torch.zeros(points) if c == 1 else torch.zeros(points, c))
        self.log_width = nn.Parameter(torch.tensor(-1.5))
        self.head = nn.Linear(in_dim, 6)
        with torch.no_grad():
            self.head.weight.copy_(0.05 * torch.randn(6, in_dim))
            self.head.bias.zero_()
            for i in range(min(6, in_dim)):
                self.head.weight[i, i] = 1.0
        self.style = MLP(in_dim, hidden, 8, activation=activation)
        self.refine = nn.Sequential(nn.Conv2d(2 + c + 8, 32, 3, padding=1), act(),
                                    nn.Conv2d(32, 32, 3, padding=1), act(),
                                    nn.ConvTranspose2d(32, c, 4, 2, 1))
        ys = torch.linspace(1, -1, h // 2 + 1)[:-1] - 1 / (h // 2)       # pixel centres, top row first
        xs = torch.linspace(-1, 1, w // 2 + 1)[:-1] + 1 / (w // 2)
        self.register_buffer("pixels", torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)
                             .reshape(-1, 2).flip(-1) * 1.6)            # (P, 2) as (x, y)
        self.in_dim, self.out_dim = in_dim, c * h * w

    def rotation(self, m):
        return rotation_from_6d(self.head(m))

    def forward(self, m):
        lead = m.shape[:-1]
        flat = m.reshape(-1, m.shape[-1])
        b = flat.shape[0]
        q = torch.einsum("bij,kj->bki", self.rotation(flat), self.points)   # rotated points (b, K, 3)
        qxy, qz = q[..., :2], q[..., 2:]
        # squared pixel-point distances as |p|² + |q|² - 2 p·q: one batched matmul, (b, P, K)
        d2 = (self.pixels.pow(2).sum(-1)[None, :, None] + qxy.pow(2).sum(-1)[:, None, :]
              - 2 * self.pixels @ qxy.transpose(1, 2))
        g = torch.exp(-0.5 * torch.exp(-2 * self.log_width) * d2.clamp_min(0))
        front = torch.softmax(-4.0 * qz, 1)                          # soft z-buffer weights (b, K, 1)
        c = self.image_shape[0]
        albedo = torch.sigmoid(self.albedo).reshape(-1, c)              # (K, C)
        sums = g @ torch.cat([torch.ones_like(qz), front, front * albedo, qz], -1)   # (b, P, 3 + C)
        cover = sums[..., :1]
        albedo = sums[..., 2:2 + c] / (sums[..., 1:2] + 1e-6)
        depth = sums[..., -1:] / (cover + 1e-6)
        hh, ww = self.image_shape[1] // 2, self.image_shape[2] // 2
        img = torch.cat([cover, albedo, depth], -1).transpose(1, 2).reshape(b, 2 + c, hh, ww)
        style = self.style(flat)[:, :, None, None].expand(-1, -1, hh, ww)
        return self.refine(torch.cat([img, style], 1)).reshape(*lead, self.out_dim)


class SymmetrizedEncoder(nn.Module):
    """An image encoder made exactly equivariant to the rotation group ``C_n`` (``n`` = 1, 2, 4;
    quarter turns are exact on the pixel grid) by averaging over the group:

        out(x) = (1/n) Σ_k ρ_k⁻¹ · base(rot_k x)

    where ``rot_k`` turns the image by ``k·2π/n`` counter-clockwise and ``ρ_k`` rotates the
    2-vectors of outputs starting at ``vector`` (one index, or a list: one per hypothesis) by the
    same angle and leaves the others alone. Hence
    ``out(rot x)`` has the 2-vector turned by ``2π/n`` and every other output unchanged: an
    encoder that cannot confuse a digit with its half-turned copy."""

    def __init__(self, base: ConvEncoder, order: int, vector: int | list[int]):
        super().__init__()
        if order not in (1, 2, 4):
            raise ValueError(f"encoder symmetry order must be 1, 2 or 4, got {order}")
        _, h, w = base.image_shape
        if order == 4 and h != w:
            raise ValueError("quarter-turn symmetry needs square images")
        self.base, self.order = base, order
        self.vectors = [int(vector)] if isinstance(vector, int) else [int(v) for v in vector]
        self.register_buffer("_x", torch.tensor(self.vectors, dtype=torch.long), persistent=False)
        self.image_shape = base.image_shape
        self.in_dim, self.out_dim = base.in_dim, base.out_dim

    def forward(self, x):
        lead = x.shape[:-1]
        img = x.reshape(-1, *self.image_shape)
        b = img.shape[0]
        step = 4 // self.order
        turned = torch.cat([torch.rot90(img, k * step, dims=(2, 3)) for k in range(self.order)])
        out = self.base(turned.reshape(self.order * b, -1)).reshape(self.order, b, -1)
        angles = torch.arange(self.order, dtype=out.dtype, device=out.device) * (2 * math.pi / self.order)
        c, s = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
        vx, vy = out[..., self._x], out[..., self._x + 1]
        # ρ_k⁻¹ v: turn the k-th copy's vectors back by k·2π/n
        out = out.index_copy(-1, self._x, c * vx + s * vy).index_copy(-1, self._x + 1, -s * vx + c * vy)
        return out.mean(0).reshape(*lead, -1)


# ---------------------------------------------------------------------- ready-made pairs
def encoder_outputs(latent, config) -> int:
    """Numbers the encoder emits per example: ``param_dim`` for each posterior hypothesis."""
    return config.hypotheses * latent.param_dim


def mlp_networks(data_dim: int, latent, config) -> tuple[nn.Module, nn.Module]:
    """MLP encoder ``D -> hidden -> hypotheses · latent.param_dim`` and decoder ``point_dim ->
    reversed hidden -> D``."""
    encoder = MLP(data_dim, config.hidden, encoder_outputs(latent, config),
                  activation=config.activation)
    decoder = MLP(latent.point_dim, list(config.hidden)[::-1], data_dim,
                  activation=config.activation)
    return encoder, decoder


def _image_networks(decoder_cls):
    def build(data_dim: int, latent, config) -> tuple[nn.Module, nn.Module]:
        shape = config.image_shape
        if not shape:
            raise ValueError(f"network={config.network!r} needs image_shape (channels, height, width)")
        if math.prod(int(s) for s in shape) != int(data_dim):
            raise ValueError(f"image_shape {list(shape)} has {math.prod(int(s) for s in shape)} "
                             f"pixels but the data have {data_dim} columns")
        encoder = ConvEncoder(shape, config.hidden, encoder_outputs(latent, config),
                              channels=config.conv_channels, activation=config.activation)
        slot = latent.turning_slot()
        if config.encoder_symmetry > 1 and slot is not None:
            slots = [h * latent.param_dim + slot for h in range(config.hypotheses)]
            encoder = SymmetrizedEncoder(encoder, config.encoder_symmetry, slots)
        # the splat decoder has no convolution stack to size: it takes no channels
        sizes = {} if decoder_cls is SplatDecoder else {"channels": config.conv_channels}
        decoder = decoder_cls(latent.point_dim, list(config.hidden)[::-1], shape,
                              activation=config.activation, **sizes)
        return encoder, decoder
    build.__doc__ = (f"Conv encoder (stride-2 convolutions, then an MLP head) and a "
                     f"{decoder_cls.__name__}.")
    return build


NETWORKS = {
    "mlp": mlp_networks,
    "conv": _image_networks(ConvDecoder),
    "conv-rotate": _image_networks(RotatingConvDecoder),
    "splat": _image_networks(SplatDecoder),
}
