"""What builds a model: :class:`ModelConfig` and :func:`build_model`.

The model config is saved with every run (inside the run config) and is all that is needed to
rebuild the model's skeleton, into which a checkpoint's weights are loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..common.config import Config
from ..embeddings.learned import disk_coordinates, periodic_coordinates
from ..errors import UsageError
from ..latents import LatentSpec, ManifoldLatent
from ..likelihoods import LIKELIHOODS
from ..manifolds.rotations import ROTATION_GROUP_ORDERS
from .networks import NETWORKS
from .vae import VAE


@dataclass(init=False)
class ModelConfig(Config):
    """The latent layer, the networks and the likelihood of a model.

    Keys can be given by short name (``ModelConfig(latent="S2", group_action=True,
    hidden=[128, 128])``); see :class:`~manifold_vae.latents.LatentSpec` for the latent's.
    """

    latent: LatentSpec = field(default_factory=LatentSpec)
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    likelihood: str = "gaussian"      # "gaussian" (learned scale per coordinate) or "bernoulli"
    network: str = "mlp"              # "mlp"; images (need image_shape): "conv", "conv-rotate", "splat"
    image_shape: list[int] = field(default_factory=list)   # (C, H, W) of a row, for image networks
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    encoder_symmetry: int = 1         # image encoder equivariant to turns by 2π/n (n = 1, 2, 4)
    # weight of the in-plane turn-consistency training term (models/equivariance.py; 0: off):
    # turning an image by α must turn the latent's planar angle (splat: its object) by α
    turn_consistency: float = 0.0
    # posterior hypotheses per example, the best one (ELBO at its central point) chosen: an
    # encoder that may jump where one continuous map would fold M (models/vae.py)
    hypotheses: int = 1
    # 12, 24 or 60 (0: off): each hypothesis also tried turned by every rotation of the
    # tetrahedral, octahedral or icosahedral group, the best chosen alike (a pose search with
    # the decoder as it is; needs a group action with an SO(3) factor; models/vae.py)
    pose_grid: int = 0
    # learned embedding (when latent.embedding == "learned"): WAE-MMD steps and widths
    embed_steps: int = 2000
    embed_hidden: list[int] = field(default_factory=lambda: [128, 128])
    # hidden coordinates (of the compact part) the learned map treats as circles, each with a
    # wrapped posterior (embeddings/learned.py); e.g. [0] for the Klein bottle, [0, 1] for a torus
    embed_periodic: list[int] = field(default_factory=list)
    # two hidden coordinates [radial, angular] the learned map reads as a disk (the angular one
    # with a wrapped posterior; embeddings/learned.py); e.g. [0, 1] for the projective plane
    embed_disk: list[int] = field(default_factory=list)

    def validate(self) -> "ModelConfig":
        if self.embed_steps < 1:
            raise UsageError(f"config: embed_steps must be a positive integer, got {self.embed_steps}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise UsageError(f"config: hidden must be a list of positive widths, got {self.hidden}")
        if self.likelihood not in LIKELIHOODS:
            raise UsageError(f"config: likelihood must be one of {', '.join(LIKELIHOODS)}, "
                             f"got {self.likelihood!r}")
        if self.network not in NETWORKS:
            raise UsageError(f"config: network must be one of {', '.join(NETWORKS)}; "
                             f"got {self.network!r}")
        if self.network != "mlp" and len(self.image_shape) != 3:
            raise UsageError(f"config: network={self.network!r} needs image_shape = [channels, "
                             "height, width] (image data files made by `manifold-vae data "
                             "digits|renders` carry it)")
        if self.image_shape and (len(self.image_shape) != 3 or min(self.image_shape) < 1):
            raise UsageError(f"config: image_shape must be three positive integers, got {self.image_shape}")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise UsageError(f"config: conv_channels must be positive widths, got {self.conv_channels}")
        if self.encoder_symmetry not in (1, 2, 4):
            raise UsageError(f"config: encoder_symmetry must be 1, 2 or 4, got {self.encoder_symmetry}")
        if not self.turn_consistency >= 0:
            raise UsageError(f"config: turn_consistency must be >= 0, got {self.turn_consistency}")
        if self.turn_consistency > 0 and self.network not in ("conv", "conv-rotate", "splat"):
            raise UsageError("config: turn_consistency turns images; it needs network conv, "
                             f"conv-rotate or splat, got {self.network!r}")
        if not 1 <= self.hypotheses <= 64:
            raise UsageError(f"config: hypotheses must be an integer from 1 to 64, got {self.hypotheses}")
        if self.pose_grid not in (0, *ROTATION_GROUP_ORDERS):
            raise UsageError(f"config: pose_grid must be 0 (off) or one of "
                             f"{', '.join(map(str, ROTATION_GROUP_ORDERS))} (the rotations of "
                             f"the tetrahedron, octahedron, icosahedron), got {self.pose_grid}")
        if self.pose_grid and not (self.latent.group_action and any(
                f.spec == "SO3" for f in self.latent.manifold_obj.factors())):
            raise UsageError(f"config: pose_grid turns the group action's SO(3) element; latent "
                             f"{self.latent.name}{' + group action' if self.latent.group_action else ''}"
                             " has none (use a latent with an SO3 factor and group_action)")
        if not self.embed_hidden or any(h < 1 for h in self.embed_hidden):
            raise UsageError(f"config: embed_hidden must be positive widths, got {self.embed_hidden}")
        if self.embed_periodic:
            if self.latent.embedding != "learned":
                raise UsageError("config: embed_periodic shapes a map learned here; it needs "
                                 f"embedding = learned, got {self.latent.embedding!r}")
            try:
                periodic_coordinates(self.latent.manifold_obj, self.embed_periodic)
            except ValueError as err:
                raise UsageError(f"config: embed_periodic {err}") from None
        if self.embed_disk:
            if self.latent.embedding != "learned":
                raise UsageError("config: embed_disk shapes a map learned here; it needs "
                                 f"embedding = learned, got {self.latent.embedding!r}")
            try:
                disk_coordinates(self.latent.manifold_obj, self.embed_disk, self.embed_periodic)
            except ValueError as err:
                raise UsageError(f"config: embed_disk {err}") from None
        return self


def build_model(config: ModelConfig, data_dim: int, *, embedding: torch.nn.Module | None = None
                ) -> VAE:
    """The untrained model ``config`` describes for ``data_dim``-dimensional data
    (``embedding``: the trained learned map, when the latent asks for one).

    Raises :class:`UsageError` naming the problem (e.g. an image shape that does not match the
    data); nothing is trained or written.
    """
    try:
        latent = ManifoldLatent(config.latent, embedding=embedding)
        likelihood = LIKELIHOODS[config.likelihood](data_dim)
        encoder, decoder = NETWORKS[config.network](data_dim, latent, config)
        return VAE(encoder, latent, decoder, likelihood, turn_consistency=config.turn_consistency,
                   image_shape=tuple(config.image_shape) or None, hypotheses=config.hypotheses,
                   pose_grid=config.pose_grid)
    except ValueError as err:
        raise UsageError(str(err)) from None
