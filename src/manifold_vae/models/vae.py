"""The VAE that composes: encoder -> hidden posterior -> embedding f -> group action g -> decoder.

One class serves every latent space. With ``latent="R<d>"`` it is the ordinary Gaussian VAE
(Kingma & Welling 2014); with a compact manifold it is the embedding-reparameterization (ER) VAE
of Golikov & Kretov (arXiv:1812.02769):

    z ~ q(z|x) (reparameterized),  m = g(x) · f(z),  x ~ p_θ(x | m)
    ELBO(x) = E_q[log p_θ(x | g(x)·f(z))] - KL(q(z|x) || p(z))

with the KL computed in the hidden space (equal to the KL on ``M`` because ``f`` is injective and
``g`` preserves the prior). A compact factor's hidden coordinates live either in the box
``[0,1]`` (prior ``U(0,1)``, Beta posterior; the default) or in ``R`` (prior ``N(0,1)``, Gaussian
posterior) with ``f`` applied after the normal CDF ``Φ``, which pushes ``N(0,1)`` onto ``U(0,1)``:
``m = g · f(Φ(z))`` — the method's two hidden spaces, one embedding. The likelihood is Gaussian with one learned scale per coordinate,
evaluated in the data's own units: the model holds the affine standardization applied to its
inputs (a per-coordinate shift and one global scale ``s``) and adds its log-Jacobian
``-D log s``, so its log-likelihoods compare directly with the data's true log-likelihood.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from ..distributions import (SPHERE_FAMILIES, HiddenSpace, HypersphericalUniform,
                             log_sphere_volume, sphere_posterior)
from ..distributions.spherical import concentration_from_raw
from ..distributions.box import beta_rsample_and_kl, probit_to_box
from ..distributions.hidden import normal_rsample_and_kl
from ..embeddings import ExactEmbedding
from ..manifolds import Circle, Manifold, Sphere, parse_latent
from ..manifolds.base import safe_normalize
from .networks import (MLP, ConvDecoder, ConvEncoder, RotatingConvDecoder, SplatDecoder,
                       SymmetrizedEncoder)

LOG_2PI = math.log(2 * math.pi)
LOG_SCALE_BOUNDS = (-9.0, 5.0)
LIKELIHOODS = ("gaussian", "bernoulli")
COMPACT_HIDDEN = ("box", "normal")
NETWORKS = ("mlp", "conv", "conv-rotate", "splat")
IMAGE_DECODERS = {"conv": ConvDecoder, "conv-rotate": RotatingConvDecoder, "splat": SplatDecoder}


def parse_model_latent(spec: str | Manifold) -> tuple[str | None, Manifold]:
    """``"S2" -> (None, S2)`` (ER or Gaussian VAE); ``"vmf:S2" -> ("vmf", S2)``: a posterior
    family living directly on a sphere (``vmf``, ``powerspherical``)."""
    if isinstance(spec, Manifold) or ":" not in spec:
        return None, parse_latent(spec)
    family, _, rest = spec.partition(":")
    if family not in SPHERE_FAMILIES:
        raise ValueError(f"unknown posterior family {family!r} in latent {spec!r}. Valid forms: "
                         f"a latent spec (R3, S1, S2, T2, SO3, products joined by x), or "
                         f"{'|'.join(SPHERE_FAMILIES)}:S<n> (a sphere, e.g. vmf:S2)")
    manifold = parse_latent(rest)
    if not isinstance(manifold, (Sphere, Circle)):
        raise ValueError(f"the {family} posterior lives on a sphere S<n>; got {manifold.spec}")
    return family, manifold


class VAE(nn.Module):
    """A VAE with latent manifold ``latent`` (Gaussian VAE for ``R<d>``, ER VAE otherwise).

    Args:
        data_dim: dimension ``D`` of an observation.
        latent: latent spec (``"S1"``, ``"R2"``, …) or a :class:`Manifold`.
        embedding: ``None`` for the exact map of ``latent``, or a module ``z -> m`` (a frozen
            :class:`~manifold_vae.embeddings.LearnedEmbedding`).
        group_action: add a group-action encoder head, ``m = g(x) · f(z)``.
        hidden: widths of the encoder's hidden layers (the decoder uses them reversed); for
            ``network="conv"`` the widths of the fully connected part after the convolutions.
        likelihood: ``"gaussian"`` (one learned scale per coordinate, data standardized) or
            ``"bernoulli"`` (data in [0, 1]; the training loss binarizes each batch afresh,
            ``x ~ Bernoulli(pixel)``: dynamic binarization, Salakhutdinov & Murray 2008).
        network: ``"mlp"``, or for images (``image_shape = (C, H, W)`` of a flat row) a conv
            encoder (stride-2 convolutions with ``conv_channels``) and the decoder ``"conv"``
            (its mirror), ``"conv-rotate"`` (equivariant to planar rotations,
            :class:`~.networks.RotatingConvDecoder`) or ``"splat"`` (a learned 3D object turned
            in 3D, :class:`~.networks.SplatDecoder`).
        compact_hidden: hidden space of the compact factors: ``"box"`` (Beta posterior, uniform
            prior) or ``"normal"`` (Gaussian posterior, standard normal prior, ``f ∘ Φ``).
        init_concentration: the Beta posterior's concentration ``κ = a + b`` where the encoder
            outputs 0 (at initialization), in ``[1, e^14]``: 2 is the uniform prior itself (the
            sample then carries no information about ``x``, and the expected gradient of the
            group action is zero); a larger value starts the posteriors unimodal and narrower.
            (Box hidden spaces only.)

    Example::

        >>> model = VAE(100, "S1", group_action=True)
        >>> out = model.loss(torch.randn(8, 100))
        >>> sorted(out)
        ['elbo', 'kl', 'loss', 'reconstruction']
    """

    def __init__(self, data_dim: int, latent: str | Manifold, *, embedding: nn.Module | None = None,
                 group_action: bool = False, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", likelihood: str = "gaussian", network: str = "mlp",
                 image_shape: Sequence[int] | None = None, conv_channels: Sequence[int] = (32, 64),
                 encoder_symmetry: int = 1, centred_posterior: bool = False,
                 compact_hidden: str = "box", init_concentration: float = 2.0):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose from {', '.join(LIKELIHOODS)}")
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
        if network != "mlp":
            if not image_shape:
                raise ValueError(f"network={network!r} needs image_shape (channels, height, width)")
            if math.prod(int(s) for s in image_shape) != int(data_dim):
                raise ValueError(f"image_shape {list(image_shape)} has "
                                 f"{math.prod(int(s) for s in image_shape)} pixels but the data "
                                 f"have {data_dim} columns")
        self.likelihood, self.network = likelihood, network
        self.family, self.manifold = parse_model_latent(latent)
        self.spec = (f"{self.family}:" if self.family else "") + self.manifold.spec
        if group_action and self.manifold.group_param_dim == 0:
            raise ValueError(f"latent {self.manifold.spec} has no group action")
        if self.family and (group_action or embedding is not None):
            raise ValueError(f"the {self.family} posterior lives on the sphere itself: "
                             "no embedding and no group action")
        self.data_dim = int(data_dim)
        self.group_action = bool(group_action)
        if compact_hidden not in COMPACT_HIDDEN:
            raise ValueError(f"unknown compact_hidden {compact_hidden!r}; choose from "
                             f"{', '.join(COMPACT_HIDDEN)}")
        if compact_hidden != "box" and (self.family or centred_posterior):
            raise ValueError("compact_hidden='normal' applies to ER latents without "
                             "centred_posterior (it centres Beta means)")
        self.compact_hidden = compact_hidden
        kinds = self.manifold.hidden_kinds
        probit = compact_hidden == "normal" and "box" in kinds
        # Φ is applied to these hidden coordinates before f (None: none, True: all of them)
        self._probit = None if not probit else (True if set(kinds) == {"box"} else
                                                torch.tensor([k == "box" for k in kinds]))
        self.hidden_space = HiddenSpace(["euclidean"] * len(kinds) if probit else kinds,
                                        init_concentration=init_concentration)
        self.centred_posterior = bool(centred_posterior)
        if centred_posterior and not (group_action and "box" in self.manifold.hidden_kinds):
            raise ValueError("centred_posterior needs a group action and a compact factor: the "
                             "group element must carry the location the Beta mean gives up")
        mask = []
        for kind, size in self.hidden_space.blocks:
            mask += [kind == "box"] * size + [False] * size
        self.register_buffer("_centre_mask", torch.tensor(mask, dtype=torch.bool), persistent=False)
        n_group = self.manifold.group_param_dim if group_action else 0
        # spherical posteriors: a mean direction in R^{n+1} and one concentration
        n_post = self.manifold.ambient_dim + 1 if self.family else self.hidden_space.param_dim
        if network != "mlp":
            self.encoder = ConvEncoder(image_shape, hidden, n_post + n_group,
                                       channels=conv_channels, activation=activation)
            slot = self._turning_output()
            if encoder_symmetry > 1 and slot is not None:
                self.encoder = SymmetrizedEncoder(self.encoder, encoder_symmetry, slot)
        else:
            self.encoder = MLP(self.data_dim, hidden, n_post + n_group, activation=activation)
        self.embedding = embedding if embedding is not None else ExactEmbedding(self.manifold)
        if getattr(self.embedding, "manifold", self.manifold).spec != self.manifold.spec:
            raise ValueError(f"embedding is for {self.embedding.manifold.spec}, "
                             f"latent is {self.manifold.spec}")
        self.embedding.requires_grad_(False)
        if network != "mlp":
            # the splat decoder has no convolution stack to size: it takes no channels
            sizes = {} if network == "splat" else {"channels": conv_channels}
            self.decoder = IMAGE_DECODERS[network](self.manifold.ambient_dim, list(hidden)[::-1],
                                                   image_shape, activation=activation, **sizes)
        else:
            self.decoder = MLP(self.manifold.ambient_dim, list(hidden)[::-1], self.data_dim,
                               activation=activation)
        # rows (K samples × examples) per IWAE chunk: conv feature maps are far larger than MLP ones
        self.max_eval_rows = {"mlp": 131072, "splat": 2048}.get(network, 4096)
        self.log_scale = nn.Parameter(torch.zeros(self.data_dim))
        self.register_buffer("data_shift", torch.zeros(self.data_dim))
        self.register_buffer("data_scale", torch.ones(()))
        # which fast path the training step can take (one block of one kind)
        blocks = self.hidden_space.blocks
        self._single_kind = blocks[0][0] if len(blocks) == 1 else None

    def _turning_output(self) -> int | None:
        """Index of the encoder's 2-vector that turns with a planar rotation of the image."""
        kinds = self.manifold.hidden_kinds
        if self.family:
            return 0 if self.manifold.ambient_dim >= 2 else None
        if set(kinds) == {"euclidean"} and self.manifold.dim >= 2:
            return 0                                   # the first two posterior means
        if self.group_action and self.manifold.factors()[0].spec == "S1":
            return self.hidden_space.param_dim         # the circle's group-action vector
        return None

    # ------------------------------------------------------------------ data transform
    def set_data_transform(self, shift: Tensor, scale: float | Tensor) -> None:
        """Standardize inputs as ``(x - shift) / scale``; ``scale`` is one positive number."""
        scale = torch.as_tensor(scale, dtype=self.data_scale.dtype)
        if scale.numel() != 1 or not bool(scale > 0):
            raise ValueError("the data scale must be one positive number")
        self.data_shift.copy_(torch.as_tensor(shift, dtype=self.data_shift.dtype))
        self.data_scale.copy_(scale.reshape(()))

    def standardize(self, x: Tensor) -> Tensor:
        return (x - self.data_shift) / self.data_scale

    # ------------------------------------------------------------------ pieces
    def _sphere_posterior(self, raw: Tensor):
        p = self.manifold.ambient_dim
        return sphere_posterior(self.family, safe_normalize(raw[..., :p]),
                                concentration_from_raw(raw[..., p]))

    def encode(self, x: Tensor):
        """``(q(z|x), g(x))`` for raw observations ``x``; ``g`` is ``None`` without group action.

        For a spherical posterior family ``q`` is a distribution on the sphere itself."""
        raw = self.encoder(self.standardize(x))
        if self.family:
            return self._sphere_posterior(raw), None
        n_hidden = self.hidden_space.param_dim
        q = self.hidden_space.posterior(self._hidden_params(raw[..., :n_hidden]))
        g = self.manifold.group_element(raw[..., n_hidden:]) if self.group_action else None
        return q, g

    def to_box(self, z: Tensor) -> Tensor:
        """The hidden sample as ``f`` takes it: ``Φ(z)`` on compact coordinates with a normal hidden
        space (kept inside ``(0,1)``), ``z`` itself otherwise."""
        if self._probit is None:
            return z
        u = probit_to_box(z)
        return u if self._probit is True else torch.where(self._probit.to(z.device), u, z)

    def latent_point(self, z: Tensor, g=None) -> Tensor:
        """``m = g · f(z)`` (``m = z`` for a spherical posterior family)."""
        if self.family:
            return z
        m = self.embedding(self.to_box(z))
        return m if g is None else self.manifold.act(g, m)

    def log_likelihood(self, x_std: Tensor, m: Tensor) -> Tensor:
        """``log p_θ(x | m)`` in the data's own units, for standardized ``x_std`` (Bernoulli:
        ``Σ_i x_i log σ(ℓ_i) + (1 - x_i) log σ(-ℓ_i)`` for decoder logits ``ℓ``)."""
        if self.likelihood == "bernoulli":
            logits = self.decoder(m).float()
            return -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x_std.expand_as(logits), reduction="none").sum(-1)
        loc = self.decoder(m).float()
        log_scale = self.log_scale.clamp(*LOG_SCALE_BOUNDS)
        resid = (x_std - loc) * torch.exp(-log_scale)
        return (-0.5 * resid.pow(2).sum(-1) - log_scale.sum()
                - 0.5 * self.data_dim * LOG_2PI - self.data_dim * torch.log(self.data_scale))

    def decode_mean(self, m: Tensor) -> Tensor:
        """Mean of ``p_θ(x | m)`` in the data's own units (pixel probabilities for Bernoulli)."""
        if self.likelihood == "bernoulli":
            return torch.sigmoid(self.decoder(m))
        return self.data_shift + self.data_scale * self.decoder(m)

    def _hidden_params(self, raw_hidden: Tensor) -> Tensor:
        """The hidden posterior's parameters; Beta mean logits set to 0 (mean ½) if centred."""
        if self.centred_posterior:
            return raw_hidden.masked_fill(self._centre_mask, 0.0)
        return raw_hidden

    # ------------------------------------------------------------------ training objective
    def _sample_with_kl(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """One reparameterized hidden sample and the closed-form KL, on the shortest op path."""
        d = self.hidden_space.dim
        loc, scale = raw[..., :d], raw[..., d:]
        if self._single_kind == "euclidean":
            return normal_rsample_and_kl(loc, scale)
        if self._single_kind == "box":
            return beta_rsample_and_kl(loc, scale + self.hidden_space.log_concentration_offset)
        q = self.hidden_space.posterior(raw)
        return q.rsample(), self.hidden_space.kl(q)

    def loss(self, x: Tensor, kl_weight: float = 1.0) -> dict[str, Tensor]:
        """Negative (β-weighted) ELBO averaged over the batch, with its parts (per example)."""
        if self.likelihood == "bernoulli" and self.training:
            x = torch.bernoulli(x)      # dynamic binarization: a fresh binary image every step
        x_std = self.standardize(x)
        raw = self.encoder(x_std).float()
        if self.family:     # a posterior on the sphere itself, uniform prior
            q = self._sphere_posterior(raw)
            m = q.rsample()
            kl = kl_divergence(q, HypersphericalUniform(self.manifold.ambient_dim, dtype=m.dtype))
        else:
            n_hidden = self.hidden_space.param_dim
            z, kl = self._sample_with_kl(self._hidden_params(raw[..., :n_hidden]))
            if isinstance(self.embedding, ExactEmbedding):  # fused g·f(z) where the manifold has one
                m = self.manifold.act_on_exact(self.to_box(z),
                                               raw[..., n_hidden:] if self.group_action else None)
            else:
                g = self.manifold.group_element(raw[..., n_hidden:]) if self.group_action else None
                m = self.latent_point(z, g)
        rec = self.log_likelihood(x_std, m)
        loss = (kl_weight * kl - rec).mean()
        return {"loss": loss, "elbo": (rec - kl).detach().mean(), "kl": kl.detach().mean(),
                "reconstruction": rec.detach().mean()}

    def forward(self, x: Tensor, kl_weight: float = 1.0) -> dict[str, Tensor]:
        """Same as :meth:`loss` (so that DistributedDataParallel sees the training objective)."""
        return self.loss(x, kl_weight)

    # ------------------------------------------------------------------ evaluation
    def log_weights(self, x: Tensor, k: int) -> Tensor:
        """Importance log-weights ``log p(x|m_k) + log p(z_k) - log q(z_k|x)``, shape ``(k, B)``."""
        x_std = self.standardize(x)
        q, g = self.encode(x)
        z = q.rsample((k,))
        if self.family:   # densities on the sphere w.r.t. its surface measure; prior uniform
            log_prior = -log_sphere_volume(self.manifold.ambient_dim)
        else:
            log_prior = self.hidden_space.prior_log_prob(z)
        return self.log_likelihood(x_std, self.latent_point(z, g)) + log_prior - q.log_prob(z)

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The posterior's central latent point ``g(x) · f(mean of q(z|x))`` on ``M`` (the mean
        direction for a spherical posterior family)."""
        q, g = self.encode(x)
        if self.family:
            return q.loc
        return self.latent_point(q.mean, g)

    def describe(self) -> dict:
        return {"latent": self.spec, "data_dim": self.data_dim, "likelihood": self.likelihood,
                "centred_posterior": self.centred_posterior,
                "compact_hidden": self.compact_hidden,
                "init_concentration": math.exp(self.hidden_space.log_concentration_offset),
                "network": self.network,
                "group_action": self.group_action,
                "embedding": getattr(self.embedding, "kind", type(self.embedding).__name__)}
