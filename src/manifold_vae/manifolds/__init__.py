"""Latent manifolds and the latent-spec grammar.

A latent spec names a manifold: ``R<k>`` (Euclidean, k ≥ 1), ``S1`` (circle), ``S<n>`` (sphere),
``T<k>`` (torus), ``SO3``, and products joined by ``x`` (``S1xR2``, ``T2xR4``, ``S2xS1``). Later manifolds register a parser with :func:`register_spec`.
"""
from __future__ import annotations

import re
from typing import Callable

from .base import Manifold, safe_normalize
from .circle import Circle, circle_angle, rotation_2d
from .euclidean import Euclidean
from .product import Product
from .so3 import SO3
from .sphere import Sphere, sphere_volume
from .torus import Torus

__all__ = ["Manifold", "Circle", "Euclidean", "Product", "Sphere", "Torus", "SO3", "sphere_volume", "parse_latent", "register_spec",
           "valid_spec_forms", "circle_angle", "rotation_2d", "safe_normalize"]

# (pattern, description, builder(match) -> Manifold)
_SPECS: list[tuple[re.Pattern, str, Callable[[re.Match], Manifold]]] = []


def register_spec(pattern: str, description: str, builder: Callable[[re.Match], Manifold]) -> None:
    """Teach :func:`parse_latent` a new factor form (``pattern`` is matched in full)."""
    _SPECS.append((re.compile(pattern), description, builder))


def valid_spec_forms() -> str:
    return "; ".join(d for _, d, _ in _SPECS) + "; products joined by 'x' (e.g. S1xR2)"


def _positive(text: str, what: str) -> int:
    k = int(text)
    if k < 1:
        raise ValueError(f"{what} must be at least 1")
    return k


register_spec(r"R(\d+)", "R<k> Euclidean space, k >= 1 (Gaussian VAE)",
              lambda m: Euclidean(_positive(m.group(1), "R<k>: k")))
register_spec(r"S1", "S1 circle", lambda m: Circle())
register_spec(r"S(\d+)", "S<n> sphere, n >= 1 (exact map for n <= 3, learned otherwise)",
              lambda m: Sphere(_positive(m.group(1), "S<n>: n")))
register_spec(r"T(\d+)", "T<k> torus, k >= 1", lambda m: Torus(_positive(m.group(1), "T<k>: k")))
register_spec(r"SO3", "SO3 rotations of R^3", lambda m: SO3())


def _parse_factor(text: str, whole: str) -> Manifold:
    for pattern, _, build in _SPECS:
        match = pattern.fullmatch(text)
        if match:
            try:
                return build(match)
            except ValueError as err:
                raise ValueError(f"invalid latent spec {whole!r}: {err}. "
                                 f"Valid forms: {valid_spec_forms()}") from None
    raise ValueError(f"invalid latent spec {whole!r}: unknown factor {text!r}. "
                     f"Valid forms: {valid_spec_forms()}")


def parse_latent(spec: "str | Manifold") -> Manifold:
    """The manifold named by a latent spec such as ``"S1"``, ``"R2"`` or ``"S1xR2"``.

    Raises ``ValueError`` listing the valid forms when the spec is not understood.
    """
    if isinstance(spec, Manifold):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"invalid latent spec {spec!r}. Valid forms: {valid_spec_forms()}")
    text = spec.strip()
    parts = text.split("x")
    if any(p == "" for p in parts):
        raise ValueError(f"invalid latent spec {spec!r}: empty factor. Valid forms: {valid_spec_forms()}")
    factors = [_parse_factor(p, text) for p in parts]
    return factors[0] if len(factors) == 1 else Product(factors)
