"""The latent-spec grammar: which text names which manifold.

A spec names a manifold: ``R<k>`` (Euclidean, k ≥ 1), ``S1`` (circle), ``S<n>`` (sphere),
``T<k>`` (torus), ``SO3``, ``K2`` (Klein bottle), ``Mob`` (Möbius band), ``RP2`` (projective
plane), and products joined by ``x`` (``S1xR2``, ``T2xR4``, ``S2xS1``). Each
factor form is registered once, with a description (what users see in error messages) and
examples (what the contract tests build); a new manifold registers its own form with
:func:`register_spec`.
"""
from __future__ import annotations

import functools
import os
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
from .projective import ProjectivePlane
from .sampled import SampledManifold
from .twisted import KleinBottle, MobiusBand


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
    return ("; ".join(f.description for f in SPEC_FORMS) + "; products joined by 'x' (e.g. S1xR2); "
            + SAMPLES_FORM)


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
register_spec(r"K2", "K2 Klein bottle (in R^4)", lambda m: KleinBottle(), examples=("K2",))
register_spec(r"Mob", "Mob open Möbius band (in R^4)", lambda m: MobiusBand(), examples=("Mob",))
register_spec(r"RP2", "RP2 real projective plane (projectors x xᵀ)", lambda m: ProjectivePlane(),
              examples=("RP2",))


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


SAMPLES_FORM = ("samples:PATH:d a manifold known by uniform samples: a .npy file of points "
                "(rows) or a registered sampler's name, of intrinsic dimension d (learned f only)")


def _parse_samples(text: str) -> Manifold:
    source, sep, dim = text[len("samples:"):].rpartition(":")
    if not sep or not source or not dim.strip().isdigit():
        raise ValueError(f"invalid latent spec {text!r}: the form is {SAMPLES_FORM}")
    try:
        stamp = None
        if os.path.isfile(os.path.expanduser(source)):
            # an absolute path: the spec (saved in config.json) names the file from anywhere
            source = os.path.abspath(os.path.expanduser(source))
            stamp = os.stat(source).st_mtime_ns
        return _sampled(source, int(dim), stamp)
    except ValueError as err:
        raise ValueError(f"invalid latent spec {text!r}: {err}") from None


@functools.lru_cache(maxsize=16)
def _sampled(source: str, dim: int, stamp) -> SampledManifold:
    """One loaded sample per file version (specs are parsed again whenever a config is made)."""
    return SampledManifold(source, dim)


def parse_latent(spec: "str | Manifold") -> Manifold:
    """The manifold named by a latent spec such as ``"S1"``, ``"R2"`` or ``"S1xR2"``.

    Raises ``ValueError`` listing the valid forms when the spec is not understood.
    """
    if isinstance(spec, Manifold):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"invalid latent spec {spec!r}. Valid forms: {valid_spec_forms()}")
    text = spec.strip()
    if text.startswith("samples:"):          # a path may hold an 'x': never a product
        return _parse_samples(text)
    parts = text.split("x")
    if any(p == "" for p in parts):
        raise ValueError(f"invalid latent spec {spec!r}: empty factor. Valid forms: {valid_spec_forms()}")
    factors = [_parse_factor(p, text) for p in parts]
    return factors[0] if len(factors) == 1 else Product(factors)
