"""The embedding-reparameterization (ER) latent of Golikov & Kretov (arXiv:1812.02769).

    z ~ q(z|x) (reparameterized),   m = g(x) · f(z),
    KL(q(z|x) || p(z))  computed in the hidden space

The KL equals the KL on ``M`` because ``f`` is injective and its volume factor ``sqrt(det JᵀJ)``
is the same for posterior and prior; a ``g`` that preserves the prior changes nothing either. A
compact factor's hidden coordinates live in the box ``[0,1]`` (prior ``U(0,1)``, Beta posterior)
or in ``R`` (prior ``N(0,1)``, Gaussian posterior) with ``f`` applied after the
normal CDF ``Φ``, which pushes ``N(0,1)`` onto ``U(0,1)``: ``m = g · f(Φ(z))``. On ``R<k>`` (no
compact factor) this is the Gaussian VAE of Kingma & Welling (arXiv:1312.6114), identity map.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..distributions import HiddenSpace
from ..distributions.box import beta_rsample_and_kl, probit_to_box
from ..distributions.hidden import normal_rsample_and_kl
from ..embeddings import ExactEmbedding, load_embedding
from .base import LatentOutput, ManifoldLatent
from .spec import LatentSpec


class ERLatent(ManifoldLatent):
    """ER posterior on any manifold (and the Gaussian VAE's on ``R<k>``); see the module docstring.

    Raw encoder outputs, per example: the hidden posterior's ``2·d`` parameters (for each block
    of hidden coordinates of one kind, the locations — Beta mean logits or Gaussian means — then
    the scales — log concentrations or log standard deviations), then, with a group action,
    ``group_param_dim`` numbers for ``g(x)`` and, with an exact map, two numbers (an angle
    ``c_j``) for each of the manifold's ``wrapped_hidden`` coordinates — with a learned map, for
    each of its periodic coordinates, with or without a group action — which the encoder shifts:
    ``f(…, (z_j + c_j / 2π) mod 1, …)``. The shift preserves the box's uniform prior, so the KL and
    ``log p(z) − log q(z|x)`` are those of the unshifted ``z``, exactly as for ``g``.
    """

    families = ("er",)

    def __init__(self, spec: str | LatentSpec, *, embedding: nn.Module | str | None = None,
                 **options):
        super().__init__(spec, embedding=embedding, **options)
        spec, m = self.spec, self.manifold
        kinds = m.hidden_kinds
        probit = spec.hidden == "normal" and "box" in kinds
        self.hidden_space = HiddenSpace(["euclidean"] * len(kinds) if probit else kinds,
                                        init_concentration=spec.init_concentration)
        # Φ is applied to these hidden coordinates before f (None: none, True: all of them)
        self._probit = None if not probit else (True if set(kinds) == {"box"} else
                                                torch.tensor([k == "box" for k in kinds]))
        mask = []
        for kind, size in self.hidden_space.blocks:
            mask += [kind == "box"] * size + [False] * size
        self.register_buffer("_centre_mask", torch.tensor(mask, dtype=torch.bool), persistent=False)
        if embedding is None and spec.embedding not in ("exact", "learned"):
            embedding = load_embedding(spec.embedding, expect=m)
        if embedding is None and spec.embedding == "learned":
            raise ValueError("embedding='learned' needs the trained map: pass embedding="
                             "fit_learned_embedding(EmbedConfig(latent=...))[0]")
        self.embedding = embedding if embedding is not None else ExactEmbedding(m)
        emb_manifold = getattr(self.embedding, "manifold", m)
        if emb_manifold.spec != m.spec:
            raise ValueError(f"embedding is for {emb_manifold.spec}, latent is {m.spec}")
        self.embedding.requires_grad_(False)
        self._exact = isinstance(self.embedding, ExactEmbedding)
        # box coordinates the encoder shifts (mod 1): with an exact map, the periodic ones the
        # group does not move (part of the group action); with a learned map, its periodic ones
        wraps = ((m.wrapped_hidden if spec.group_action else ()) if self._exact
                 else getattr(self.embedding, "wrapped_hidden", ()))
        self.register_buffer("_wraps", torch.tensor(wraps, dtype=torch.long), persistent=False)
        blocks = self.hidden_space.blocks
        # which fast path the training step can take (one block of one kind)
        self._single_kind = blocks[0][0] if len(blocks) == 1 else None

    @property
    def wrapped(self) -> tuple[int, ...]:
        """Hidden coordinates the encoder shifts mod 1 (wrapped posteriors): with an exact map,
        the manifold's ``wrapped_hidden`` under a group action; with a learned map, its periodic
        (and disk-angle) coordinates."""
        return tuple(self._wraps.tolist())

    @property
    def param_dim(self) -> int:
        group = self.manifold.group_param_dim if self.spec.group_action else 0
        return self.hidden_space.param_dim + group + 2 * len(self._wraps)

    # ------------------------------------------------------------------ pieces
    def _split(self, raw: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Hidden posterior parameters (Beta means centred if asked), group parameters and the
        shifts' parameters (``None`` where there are none)."""
        n = self.hidden_space.param_dim
        hidden = raw[..., :n]
        if self.spec.centred_posterior:
            hidden = hidden.masked_fill(self._centre_mask, 0.0)
        g = n + (self.manifold.group_param_dim if self.spec.group_action else 0)
        return (hidden, raw[..., n:g] if self.spec.group_action else None,
                raw[..., g:g + 2 * len(self._wraps)] if len(self._wraps) else None)

    def posterior(self, raw: Tensor):
        return self.hidden_space.posterior(self._split(raw)[0])

    def group(self, raw: Tensor):
        """``g(x)`` from raw outputs, ``None`` without a group action."""
        return self._element(self._split(raw)[1])

    def _element(self, group_raw: Tensor | None):
        return None if group_raw is None else self.manifold.group_element(group_raw)

    def _wrap(self, box: Tensor, shift_raw: Tensor | None) -> Tensor:
        """``box`` with each wrapped coordinate ``j`` moved to ``(z_j + c_j / 2π) mod 1``, ``c_j``
        the angle of its pair of raw numbers (broadcast over leading sample dims)."""
        if shift_raw is None:
            return box
        shift = torch.atan2(shift_raw[..., 1::2], shift_raw[..., 0::2]) / (2 * math.pi)
        moved = torch.remainder(box.index_select(-1, self._wraps) + shift.to(box.dtype), 1.0)
        return box.index_copy(-1, self._wraps, moved)

    def to_box(self, z: Tensor) -> Tensor:
        """The hidden sample as ``f`` takes it: ``Φ(z)`` on compact coordinates with a normal
        hidden space (kept inside ``(0,1)``), ``z`` itself otherwise."""
        if self._probit is None:
            return z
        u = probit_to_box(z)
        return u if self._probit is True else torch.where(self._probit.to(z.device), u, z)

    def point(self, z: Tensor, g=None, shift_raw: Tensor | None = None) -> Tensor:
        """``m = g · f(z)`` for hidden samples ``z`` (wrapped coordinates shifted first)."""
        m = self.embedding(self._wrap(self.to_box(z), shift_raw))
        return m if g is None else self.manifold.act(g, m)

    def _sample_with_kl(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """One reparameterized hidden sample and the closed-form KL, on the shortest op path."""
        d = self.hidden_space.dim
        loc, scale = hidden[..., :d], hidden[..., d:]
        if self._single_kind == "euclidean":
            return normal_rsample_and_kl(loc, scale)
        if self._single_kind == "box":
            return beta_rsample_and_kl(loc, scale + self.hidden_space.log_concentration_offset)
        q = self.hidden_space.posterior(hidden)
        return q.rsample(), self.hidden_space.kl(q)

    # ------------------------------------------------------------------ the layer
    def forward(self, raw: Tensor) -> LatentOutput:
        hidden, group_raw, shift_raw = self._split(raw)
        z, kl = self._sample_with_kl(hidden)
        if self._exact:     # fused g·f(z) where the manifold has one
            m = self.manifold.act_on_exact(self._wrap(self.to_box(z), shift_raw), group_raw)
        else:
            m = self.point(z, self._element(group_raw), shift_raw)

        def log_ratio():
            q = self.hidden_space.posterior(hidden)
            return self.hidden_space.prior_log_prob(z) - q.log_prob(z)
        return LatentOutput(m, z, kl, log_ratio)

    def sample(self, raw: Tensor, k: int) -> LatentOutput:
        """``k`` samples per example; ``z`` and ``log_ratio`` in float64 (the densities of the
        samples drawn, see :meth:`HiddenSpace.sample_with_log_ratio`), the point in ``raw``'s
        dtype."""
        hidden, group_raw, shift_raw = self._split(raw)
        z, log_ratio = self.hidden_space.sample_with_log_ratio(hidden, k)
        return LatentOutput(self.point(z.to(raw.dtype), self._element(group_raw), shift_raw), z,
                            lambda: self.kl(raw),
                            log_ratio)

    def kl(self, raw: Tensor) -> Tensor:
        return self.hidden_space.kl(self.posterior(raw))

    def mean_point(self, raw: Tensor) -> Tensor:
        hidden, group_raw, shift_raw = self._split(raw)
        return self.point(self.hidden_space.posterior(hidden).mean, self._element(group_raw),
                          shift_raw)

    def turning_slot(self) -> int | None:
        kinds = self.manifold.hidden_kinds
        if set(kinds) == {"euclidean"} and self.manifold.dim >= 2:
            return 0                                   # the first two posterior means
        if self.spec.group_action and self.manifold.factors()[0].spec == "S1":
            return self.hidden_space.param_dim         # the circle's group-action vector
        return None

    def rotation_slot(self) -> int | None:
        if not self.spec.group_action:
            return None
        start = self.hidden_space.param_dim
        for factor in self.manifold.factors():
            if factor.spec == "SO3":
                return start
            start += factor.group_param_dim
        return None

    @property
    def init_concentration(self) -> float:
        return math.exp(self.hidden_space.log_concentration_offset)
