"""The manifold interface: what the ER procedure needs to know about a latent space ``M``.

A manifold is embedded in ``R^ambient_dim``; points are tensors whose trailing dimension is the
ambient coordinate and whose leading dimensions broadcast. Each manifold says

* which hidden space parameterizes it (``hidden_kinds``: ``"box"`` coordinates live in ``[0,1]``
  with a uniform prior and Beta posterior, ``"euclidean"`` ones in ``R`` with N(0,1) prior);
* how to sample its uniform (Haar) distribution and check membership;
* its volume ``vol(M)`` and nearest-point projection.

What only some manifolds have is a capability class they also derive from:

* :class:`ExactMap`: the exact map ``f`` from the hidden space that pushes the hidden prior to the
  uniform distribution on ``M`` (its volume element is the constant ``vol(M)``);
* :class:`GroupAction`: the action of a symmetry group and a continuous parameterization of group
  elements from unconstrained encoder outputs (``group_element`` then ``act``);
* :class:`Quadrature`, :class:`Chart`: what the true-likelihood ceiling integrates with.

Adding a manifold: one file in this folder (a subclass of :class:`Manifold` and its capabilities)
and one line registering its spec in :mod:`.spec`.

Reference: E. Golikov, M. Kretov, arXiv:1812.02769.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor


class Manifold(ABC):
    """A latent manifold: what every one has. What only some have is declared by the capability
    classes below (:class:`ExactMap`, :class:`GroupAction`, :class:`Quadrature`, :class:`Chart`),
    and asked with ``has_exact_map``, ``has_group``, ``has_quadrature``, ``has_chart``."""

    #: canonical latent spec, e.g. ``"S1"``
    spec: str = ""
    #: intrinsic dimension (= hidden dimension)
    dim: int = 0
    #: dimension of the ambient Euclidean space the points live in
    ambient_dim: int = 0
    #: number of unconstrained encoder outputs that parameterize one group element (0: no group)
    group_param_dim: int = 0
    #: whether the uniform distribution exists (compact manifold)
    compact: bool = True
    #: hidden (box) coordinates along which the exact map is periodic, ``f(z + e_j) = f(z)``,
    #: and which the group does not move: with a group action the encoder also shifts them
    #: (mod 1, a measure-preserving map of the box), so that a posterior straddling ``z_j = 0 ≡ 1``
    #: is one Beta, not two halves
    wrapped_hidden: tuple[int, ...] = ()
    #: the hidden space an ER latent with the exact map uses here when none is named
    #: (``LatentSpec(compact_hidden="auto")``): ``"box"`` (Beta posterior) or ``"normal"``
    #: (Gaussian posterior, ``f ∘ Φ``) — chosen where it was measured both faster and as good
    #: (``benchmarks/hidden_space.py``, ``benchmarks/latent_layer.py``)
    preferred_hidden: str = "box"

    # ----------------------------------------------------------------- capabilities
    @property
    def has_exact_map(self) -> bool:
        """Whether :meth:`ExactMap.exact_map` exists (a closed-form ``f`` from the hidden space)."""
        return isinstance(self, ExactMap)

    @property
    def has_group(self) -> bool:
        """Whether a symmetry group acts (:class:`GroupAction`), so a group-action encoder can."""
        return isinstance(self, GroupAction) and self.group_param_dim > 0

    @property
    def has_quadrature(self) -> bool:
        """Whether a quadrature rule for ``U(M)`` exists (:class:`Quadrature`)."""
        return isinstance(self, Quadrature)

    @property
    def has_chart(self) -> bool:
        """Whether an exponential chart with the uniform density in it exists (:class:`Chart`)."""
        return isinstance(self, Chart)

    # ----------------------------------------------------------------- hidden space
    @property
    def hidden_kinds(self) -> tuple[str, ...]:
        """Kind of each hidden coordinate: ``"box"`` or ``"euclidean"``."""
        return ("box",) * self.dim if self.compact else ("euclidean",) * self.dim

    # ----------------------------------------------------------------- geometry
    @abstractmethod
    def volume(self) -> float:
        """Riemannian volume of ``M`` in the metric induced by the ambient embedding."""

    def log_volume(self) -> float:
        return math.log(self.volume())

    @abstractmethod
    def sample_uniform(self, n: int, *, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` points from the uniform distribution on ``M``, shape ``(n, ambient_dim)``."""

    def sample_prior(self, n: int, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> Tensor:
        """Latent points of synthetic benchmarks: ``U(M)`` (``N(0, I)`` on ``R^k``)."""
        return self.sample_uniform(n, generator=generator, dtype=dtype)

    def check_point(self, x: Tensor, *, atol: float | None = None) -> tuple[bool, str]:
        """``(ok, reason)``: whether every point of ``x`` lies on ``M`` within ``atol``."""
        if x.shape[-1] != self.ambient_dim:
            return False, (f"{self.spec}: points need a trailing dimension of {self.ambient_dim}, "
                           f"got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            return False, f"{self.spec}: points contain NaN or inf"
        dist = self.distance_to_manifold(x)
        tol = _default_atol(x.dtype) if atol is None else atol
        worst = float(dist.max()) if dist.numel() else 0.0
        if worst > tol:
            return False, f"{self.spec}: a point lies {worst:.3g} from the manifold (tolerance {tol:.3g})"
        return True, ""

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """Euclidean distance from ambient points to ``M`` (shape ``x.shape[:-1]``)."""
        return (x - self.project(x)).norm(dim=-1)

    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """Nearest point of ``M`` to each ambient point."""

    # ----------------------------------------------------------------- misc
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifold) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def factors(self) -> Sequence["Manifold"]:
        return (self,)


class ExactMap(ABC):
    """Capability: a closed-form map ``f`` from the hidden space that pushes the hidden prior to
    the uniform distribution on ``M`` (its volume element is the constant ``vol(M)``)."""

    @abstractmethod
    def exact_map(self, z: Tensor) -> Tensor:
        """``f(z)``: the hidden point ``z`` (trailing dim ``dim``) mapped onto ``M``."""

    def act_on_exact(self, z: Tensor, group_params: Tensor | None = None) -> Tensor:
        """``g(params) · f(z)`` with the exact map ``f``, the composition of a training step.

        Subclasses may fuse it into fewer autograd nodes (the circle does); the value and the
        first derivatives must equal the unfused composition.
        """
        m = self.exact_map(z)
        return m if group_params is None else self.act(self.group_element(group_params), m)


class GroupAction(ABC):
    """Capability: a symmetry group of ``M`` that preserves ``U(M)``, with a continuous
    parameterization of its elements by ``group_param_dim`` unconstrained numbers."""

    @abstractmethod
    def group_element(self, params: Tensor) -> Any:
        """A group element from unconstrained encoder outputs (trailing dim ``group_param_dim``)."""

    @abstractmethod
    def act(self, g: Any, x: Tensor) -> Tensor:
        """``g · x``; ``g``'s batch shape broadcasts against ``x``'s."""

    def group_matrix(self, g: Any) -> Tensor:
        """The matrix of ``g`` acting on ambient coordinates (for checks and plots)."""
        return g

    def random_group_element(self, n: int, *, generator: torch.Generator | None = None,
                             dtype: torch.dtype = torch.float32) -> Any:
        """``n`` Haar-random group elements (for tests of invariance)."""
        params = torch.randn(n, self.group_param_dim, generator=generator, dtype=dtype)
        return self.group_element(params)


class Quadrature(ABC):
    """Capability: a quadrature rule for expectations under ``U(M)`` (the likelihood ceiling)."""

    @abstractmethod
    def quadrature(self, level: int) -> tuple[Tensor, Tensor]:
        """A rule ``(points, log_weights)`` for expectations under ``U(M)`` (float64); finer as
        ``level`` grows."""

    @abstractmethod
    def quadrature_levels(self) -> tuple[int, int]:
        """``(first, last)`` levels tried when refining :meth:`quadrature`."""


class Chart(ABC):
    """Capability: an exponential chart at every point and the uniform density in it (the
    importance-sampled likelihood ceiling of manifolds too large for quadrature)."""

    #: radius of the chart's ball (beyond it the chart wraps around)
    chart_radius: float = math.pi

    @abstractmethod
    def chart_exp(self, center: Tensor, v: Tensor) -> Tensor:
        """The point at chart coordinates ``v`` around ``center``."""

    @abstractmethod
    def chart_log(self, center: Tensor, x: Tensor) -> Tensor:
        """The chart coordinates of ``x`` around ``center`` (inside the chart's ball)."""

    @abstractmethod
    def chart_aliases(self, v: Tensor, k: int = 2) -> Tensor:
        """Every chart vector of the same point as ``v``, stacked on a new leading dim."""

    @abstractmethod
    def chart_log_uniform_density(self, v: Tensor) -> Tensor:
        """Log density of ``U(M)`` in chart coordinates."""


def _default_atol(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-8, torch.float32: 1e-4}.get(dtype, 1e-2)


def safe_normalize(v: Tensor, *, dim: int = -1, eps: float = 1e-8) -> Tensor:
    """``v / |v|`` with the norm bounded below by ``eps`` (finite value and gradient at 0)."""
    sq = (v * v).sum(dim=dim, keepdim=True)
    return v * torch.rsqrt(sq.clamp_min(eps * eps))


def as_complex(t: Tensor) -> Tensor:
    """View a real tensor with trailing dim 2 as complex (copying only if the layout needs it)."""
    if not t.is_contiguous() or t.storage_offset() % 2:
        t = t.clone(memory_format=torch.contiguous_format)
    return torch.view_as_complex(t)
