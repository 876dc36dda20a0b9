"""A latent layer described in plain data, and every rule about what may be combined.

``LatentSpec("SO3xR2", group_action=True)`` names the manifold, the posterior family (``er``: the
embedding-reparameterization posterior of any manifold; ``vmf``, ``powerspherical``: posteriors
living on a sphere itself) and the ER options. It is parsed and checked once, here, when it is
made; it travels inside :class:`~manifold_vae.models.ModelConfig`, is saved with every run, and
:class:`~manifold_vae.latents.ManifoldLatent` builds the layer from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..manifolds import Manifold, parse_latent

HIDDEN_SPACES = ("auto", "box", "normal")
MAX_CONCENTRATION = math.exp(14.0)   # the Beta concentration κ = a + b is kept in [1, e^14]


@dataclass(frozen=True)
class PosteriorFamily:
    """What a posterior family may be combined with (the rules of :class:`LatentSpec`)."""

    name: str
    description: str
    sphere_only: bool        # lives on S^n itself: no embedding, no group action, no hidden space


#: the posterior families by name; a new family registers itself here (see ``latents/base.py``)
FAMILIES: dict[str, PosteriorFamily] = {}


def register_family(name: str, description: str, *, sphere_only: bool) -> None:
    FAMILIES[name] = PosteriorFamily(name, description, sphere_only)


register_family("er", "embedding-reparameterization: hidden posterior, embedding f, group action",
                sphere_only=False)


def _sphere_families() -> list[str]:
    return [n for n, f in FAMILIES.items() if f.sphere_only]


@dataclass(frozen=True)
class LatentSpec:
    """Everything that defines a latent layer.

    Args:
        manifold: a latent spec (``"S1"``, ``"SO3xR2"``); a ``family:`` prefix (``"vmf:S2"``)
            sets ``family``.
        family: ``"er"`` (default), ``"vmf"`` or ``"powerspherical"``.
        group_action: add a group-action encoder head, ``m = g(x) · f(z)``.
        embedding: ``"exact"`` (the manifold's closed-form map), ``"learned"`` (a WAE-MMD map
            trained for the run) or the path of a saved learned embedding.
        compact_hidden: hidden space of the compact factors: ``"box"`` (Beta posterior, uniform
            prior), ``"normal"`` (Gaussian posterior, standard normal prior, ``f ∘ Φ``) or
            ``"auto"`` (the default: the manifold's ``preferred_hidden`` with the exact map, the
            box otherwise; :attr:`hidden` says which).
        init_concentration: the Beta posterior's ``κ = a + b`` where the encoder outputs 0, in
            ``[1, e^14]``; 2 is the uniform prior itself.
        centred_posterior: with a group action, Beta means fixed at the box centre (the group
            element carries the location).

    Raises ``ValueError`` naming the problem when the combination is not allowed.

    Example::

        >>> LatentSpec("vmf:S2").family
        'vmf'
        >>> LatentSpec("S1", group_action=True, embedding="learned").is_bound
        False
    """

    manifold: str = "S1"
    family: str = "er"
    group_action: bool = False
    embedding: str = "exact"
    compact_hidden: str = "auto"
    init_concentration: float = 2.0
    centred_posterior: bool = False

    _text_fields = ("manifold", "family")

    @staticmethod
    def _from_text(text: str) -> dict:
        """The fields a spec text sets: ``"vmf:S2"`` -> manifold ``S2``, family ``vmf``."""
        if not isinstance(text, str):
            raise ValueError(f"invalid latent spec {text!r}")
        family, sep, rest = text.strip().partition(":")
        if sep and family in FAMILIES:
            return {"manifold": rest, "family": family}
        return {"manifold": text.strip(), "family": "er"}     # a spec like samples:PATH:d

    def __post_init__(self):
        if isinstance(self.manifold, Manifold):
            object.__setattr__(self, "manifold", self.manifold.spec)
        text = self.manifold
        if isinstance(text, str) and text.partition(":")[0] in FAMILIES:
            parts = self._from_text(text)
            if self.family not in ("er", parts["family"]):
                raise ValueError(f"latent {text!r} names the family {parts['family']!r} but "
                                 f"family={self.family!r} was given too")
            object.__setattr__(self, "family", parts["family"])
            text = parts["manifold"]
        family = FAMILIES.get(self.family)
        if family is None:
            raise ValueError(f"unknown posterior family {self.family!r} in latent "
                             f"{self.family}:{text!r}. Valid forms: a latent spec (R3, S1, S2, T2, "
                             f"SO3, products joined by x), or {'|'.join(_sphere_families())}:S<n> "
                             f"(a sphere, e.g. vmf:S2)")
        manifold = parse_latent(text)           # ValueError listing the valid forms
        object.__setattr__(self, "manifold", manifold.spec)
        object.__setattr__(self, "_manifold", manifold)
        self._check(family, manifold)

    def _check(self, family: PosteriorFamily, m: Manifold) -> None:
        if family.sphere_only:
            if not (m.spec.startswith("S") and "x" not in m.spec and m.spec[1:].isdigit()):
                raise ValueError(f"the {family.name} posterior lives on a sphere S<n>; got {m.spec}")
            if self.group_action or self.embedding != "exact":
                raise ValueError(f"the {family.name} posterior lives on the sphere itself: it "
                                 "takes no --group-action and no learned embedding")
            if self.compact_hidden not in ("auto", "box") or self.centred_posterior:
                raise ValueError(f"the {family.name} posterior lives on the sphere itself: it has "
                                 "no hidden space (compact_hidden, centred_posterior)")
        if self.group_action and not m.has_group:
            raise ValueError(f"latent {m.spec} has no group action; drop --group-action")
        if self.embedding == "exact" and not m.has_exact_map:
            raise ValueError(f"latent {m.spec} has no exact map; use a learned embedding "
                             "(--embedding learned)")
        if self.embedding != "exact" and not any(f.compact for f in m.factors()):
            raise ValueError(f"a learned embedding needs a compact factor (S<n>, T<k>, SO3), "
                             f"got {m.spec}")
        if not self.embedding:
            raise ValueError("embedding must be 'exact', 'learned' or the path of a saved one")
        if self.compact_hidden not in HIDDEN_SPACES:
            raise ValueError(f"config: compact_hidden must be 'auto', 'box' or 'normal', got "
                             f"{self.compact_hidden!r}")
        if self.compact_hidden == "normal" and self.centred_posterior:
            raise ValueError("compact_hidden='normal' applies to ER latents without "
                             "centred_posterior (it centres Beta means)")
        if self.centred_posterior and not (self.group_action and "box" in m.hidden_kinds):
            raise ValueError("centred_posterior needs a group action and a compact factor: the "
                             "group element must carry the location the Beta mean gives up")
        if not 1.0 <= self.init_concentration <= MAX_CONCENTRATION:
            raise ValueError(f"config: init_concentration must lie in [1, 1.2e6] (the bounds of "
                             f"the Beta concentration), got {self.init_concentration}")

    # ------------------------------------------------------------------ derived
    @property
    def manifold_obj(self) -> Manifold:
        """The parsed manifold (parsed once, when the spec was made)."""
        return self._manifold

    @property
    def name(self) -> str:
        """The spec text: ``"S1"``, ``"vmf:S2"``."""
        return self.manifold if self.family == "er" else f"{self.family}:{self.manifold}"

    @property
    def hidden(self) -> str:
        """The hidden space of the compact factors, ``"box"`` or ``"normal"``: ``compact_hidden``,
        or for ``"auto"`` the manifold's ``preferred_hidden`` when ER uses its exact map (where
        the choice was measured) and no centred posterior (which centres Beta means), else
        ``"box"``."""
        if self.compact_hidden != "auto":
            return self.compact_hidden
        if self.family == "er" and self.embedding == "exact" and not self.centred_posterior:
            return self._manifold.preferred_hidden
        return "box"

    @property
    def on_sphere(self) -> bool:
        """Whether the posterior lives on the sphere itself (no hidden space)."""
        return FAMILIES[self.family].sphere_only

    @property
    def is_bound(self) -> bool:
        """Whether the IWAE of this latent is a bound on the model's likelihood: a group action
        on a learned ``f`` is not (``f#p`` is only nearly invariant under the group, so the
        encoder can pick ``g(x)`` where it is denser: the implied prior depends on ``x``)."""
        return not (self.group_action and self.embedding != "exact")

    @property
    def dim(self) -> int:
        return self._manifold.dim

    def _key(self) -> tuple:
        return tuple(getattr(self, f.name) if f.name != "compact_hidden" else self.hidden
                     for f in fields(self))

    # "auto" and the hidden space it resolves to are the same model: a run saved with the
    # resolved value is the run a config saying "auto" asks for
    def __eq__(self, other):
        return self._key() == other._key() if isinstance(other, LatentSpec) else NotImplemented

    def __hash__(self):
        return hash(self._key())

    def replace(self, **changes) -> "LatentSpec":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if "manifold" in changes and isinstance(changes["manifold"], str) and ":" in changes["manifold"]:
            values["family"] = "er"
        values.update(changes)
        return LatentSpec(**values)

    def __str__(self) -> str:
        return self.name
