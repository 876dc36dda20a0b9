"""The latent layer: raw encoder outputs in, a point on the manifold and its ELBO terms out.

A :class:`ManifoldLatent` drops into any model. Its encoder emits ``param_dim`` unconstrained
numbers per example; its decoder reads points with ``point_dim`` coordinates::

    latent = ManifoldLatent("SO3xR2", group_action=True)
    raw = encoder(x)                      # (..., latent.param_dim)
    out = latent(raw)                     # one reparameterized sample per example
    out.point                             # m on M, (..., latent.point_dim)
    out.kl                                # KL(q(z|x) || p(z)) per example, closed form
    out.z, out.log_ratio                  # hidden sample and log p(z) - log q(z|x) (for IWAE)
    latent.sample(raw, k)                 # K samples per example, shapes (k, ...)
    latent.mean_point(raw)                # the posterior's central point on M

One constructor for every family: ``ManifoldLatent(spec, **options)`` makes the
:class:`~.spec.LatentSpec` (every rule is checked there) and returns the layer of its posterior
family — :class:`~.er.ERLatent` (embedding-reparameterization on any manifold and the Gaussian
VAE on ``R<k>``) or :class:`~.spherical.SphericalLatent` (``vmf:``, ``powerspherical:``).
A new posterior family is one class deriving from :class:`ManifoldLatent` with a ``families``
tuple, and one import in ``latents/__init__.py``.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable, ClassVar

from torch import Tensor, nn

from .spec import FAMILIES, LatentSpec, register_family

_FAMILY_CLASSES: dict[str, type["ManifoldLatent"]] = {}


class LatentOutput:
    """What the latent layer gives for a batch of raw encoder outputs.

    ``point`` (sample on ``M``) and ``z`` (hidden sample) are tensors; ``kl`` and ``log_ratio``
    (``log p(z) - log q(z|x)``) are computed when first read, so a training step that needs only
    the KL pays nothing for the density ratio.
    """

    def __init__(self, point: Tensor, z: Tensor, kl: Tensor | Callable[[], Tensor],
                 log_ratio: Tensor | Callable[[], Tensor]):
        self.point, self.z = point, z
        self._kl, self._log_ratio = kl, log_ratio

    @property
    def kl(self) -> Tensor:
        """``KL(q(z|x) || p(z))`` per example (closed form; equal to the KL on ``M``)."""
        if callable(self._kl):
            self._kl = self._kl()
        return self._kl

    @property
    def log_ratio(self) -> Tensor:
        """``log p(z) - log q(z|x)`` per sample: the latent part of an importance weight."""
        if callable(self._log_ratio):
            self._log_ratio = self._log_ratio()
        return self._log_ratio


class ManifoldLatent(nn.Module):
    """A manifold-valued latent layer (see the module docstring).

    Args:
        spec: a latent spec text (``"S2"``, ``"T2xR4"``, ``"vmf:S2"``, ``"R4"``) or a
            :class:`~.spec.LatentSpec`.
        embedding: a trained embedding module ``z -> m`` (a
            :class:`~manifold_vae.embeddings.LearnedEmbedding`) for ``embedding="learned"`` or a
            path; ``None`` for the exact map.
        **options: the :class:`~.spec.LatentSpec` fields (``group_action``, ``compact_hidden``,
            ``init_concentration``, ``centred_posterior``, ``embedding`` kind).

    Example::

        >>> import torch
        >>> latent = ManifoldLatent("S1", group_action=True)
        >>> out = latent(torch.zeros(8, latent.param_dim))
        >>> out.point.shape, out.kl.shape
        (torch.Size([8, 2]), torch.Size([8]))
    """

    #: the family names this class implements (set by each subclass)
    families: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.families:
            _FAMILY_CLASSES[name] = cls

    def __new__(cls, spec: Any = None, *args, embedding: Any = None, **options):
        if cls is ManifoldLatent and spec is not None:   # the one constructor picks the family
            spec = _as_spec(spec, options, embedding)
            cls = _FAMILY_CLASSES[spec.family]
        return super().__new__(cls)

    def __init__(self, spec: str | LatentSpec, *, embedding: nn.Module | None = None, **options):
        super().__init__()
        self.spec = _as_spec(spec, options, embedding)
        self.manifold = self.spec.manifold_obj

    # ------------------------------------------------------------------ sizes
    @property
    @abstractmethod
    def param_dim(self) -> int:
        """Unconstrained numbers the encoder emits per example."""

    @property
    def point_dim(self) -> int:
        """Coordinates of a point on ``M`` (what the decoder reads)."""
        return self.manifold.ambient_dim

    @property
    def dim(self) -> int:
        """Intrinsic dimension of ``M``."""
        return self.manifold.dim

    # ------------------------------------------------------------------ the layer
    @abstractmethod
    def forward(self, raw: Tensor) -> LatentOutput:
        """One reparameterized sample per example, with the closed-form KL."""

    @abstractmethod
    def sample(self, raw: Tensor, k: int) -> LatentOutput:
        """``k`` samples per example (leading dim ``k``) and their ``log_ratio``: the pieces of
        the IWAE bound ``log (1/k) Σ_k p(x|m_k) p(z_k)/q(z_k|x)``."""

    @abstractmethod
    def posterior(self, raw: Tensor):
        """``q(z|x)``, a ``torch.distributions.Distribution`` over the hidden sample."""

    @abstractmethod
    def kl(self, raw: Tensor) -> Tensor:
        """``KL(q(z|x) || p(z))`` per example in closed form, without drawing a sample."""

    @abstractmethod
    def mean_point(self, raw: Tensor) -> Tensor:
        """The posterior's central point on ``M`` (``g(x) · f(mean of q)`` for ER)."""

    def turning_slot(self) -> int | None:
        """Index of the 2-vector of raw outputs that turns with a planar rotation of the input
        (what an encoder made equivariant to image rotations turns), ``None`` if none."""
        return None

    def rotation_slot(self) -> int | None:
        """Index of the six raw outputs from which the group action's ``SO(3)`` element is made
        (``rotation_from_6d``), ``None`` if it has none: rotating both 3-vectors by ``R``
        turns the posterior by ``R`` (Gram–Schmidt commutes with rotations)."""
        return None

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}, group_action={self.spec.group_action}"


def _as_spec(spec: Any, options: dict, embedding: Any = None) -> LatentSpec:
    """``spec`` (text or :class:`LatentSpec`) with ``options`` applied; a module ``embedding``
    makes the spec's embedding kind ``"learned"``."""
    if embedding is not None and not isinstance(embedding, str):
        kind = options.get("embedding", spec.embedding if isinstance(spec, LatentSpec) else None)
        if kind == "exact" and "embedding" in options:
            raise ValueError("an embedding module was given with embedding='exact'")
        if kind in (None, "exact"):       # a module given for a spec that did not say: learned
            options = {**options, "embedding": "learned"}
    elif isinstance(embedding, str):
        options = {**options, "embedding": embedding}
    if isinstance(spec, LatentSpec):
        return spec.replace(**options) if options else spec
    return LatentSpec(spec, **options)


__all__ = ["FAMILIES", "LatentOutput", "ManifoldLatent", "register_family"]
