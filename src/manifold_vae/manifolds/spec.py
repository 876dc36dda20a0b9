"""The latent-spec grammar: which text names which manifold.

A spec names a manifold: ``R<k>`` (Euclidean, k ≥ 1), ``S1`` (circle), ``S<n>`` (sphere),
``T<k>`` (torus), ``SO3``, and products joined by ``x`` (``S1xR2``, ``T2xR4``, ``S2xS1``). Each
factor form is registered once, with a description (what users see in error messages) and
examples (what the contract tests build); a new manifold registers its own form with
:func:`register_spec`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .base import Manifold
from .circle import Circle
from .euclidean import Euclidean
from .product import Product
from .so3 import SO3
from .sphere import Sphere
from .torus import Torus


@dataclass(frozen=True)
class SpecForm:
    """One factor form of the grammar: a full-match pattern, its description and examples."""

    pattern: re.Pattern
    description: str
    build: Callable[[re.Match], Manifold]
    examples: tuple[str, ...]


SPEC_FORMS: list[SpecForm] = []


def register_spec(pattern: str, description: str, build: Callable[[re.Match], Manifold], *,
                  examples: tuple[str, ...]) -> None:
    """Teach :func:`parse_latent` a new factor form (``pattern`` is matched in full)."""
    SPEC_FORMS.append(SpecForm(re.compile(pattern), description, build, tuple(examples)))


def valid_spec_forms() -> str:
    return "; ".join(f.description for f in SPEC_FORMS) + "; products joined by 'x' (e.g. S1xR2)"


#: products the contract tests cover beside every form's own examples
PRODUCT_EXAMPLES = ("S1xS1", "S2xS1", "S1xR2", "T2xR4", "SO3xR1")


def example_specs() -> list[str]:
    """Every registered form's examples and some products: what the contract tests cover."""
    return [e for f in SPEC_FORMS for e in f.examples] + list(PRODUCT_EXAMPLES)


def _positive(text: str, what: str) -> int:
    k = int(text)
    if k < 1:
        raise ValueError(f"{what} must be at least 1")
    return k


register_spec(r"R(\d+)", "R<k> Euclidean space, k >= 1 (Gaussian VAE)",
              lambda m: Euclidean(_positive(m.group(1), "R<k>: k")), examples=("R1", "R3"))
register_spec(r"S1", "S1 circle", lambda m: Circle(), examples=("S1",))
register_spec(r"S(\d+)", "S<n> sphere, n >= 1 (exact maps for every n)",
              lambda m: Sphere(_positive(m.group(1), "S<n>: n")), examples=("S2", "S3", "S4", "S5", "S10"))
register_spec(r"T(\d+)", "T<k> torus, k >= 1", lambda m: Torus(_positive(m.group(1), "T<k>: k")),
              examples=("T2", "T3"))
register_spec(r"SO3", "SO3 rotations of R^3", lambda m: SO3(), examples=("SO3",))


def _parse_factor(text: str, whole: str) -> Manifold:
    for form in SPEC_FORMS:
        match = form.pattern.fullmatch(text)
        if match:
            try:
                return form.build(match)
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
