"""The reproduction suites, by name: what ``manifold-vae reproduce --suite NAME`` runs.

Each :class:`Suite` makes its settings (full or ``quick``), applies the command line's
``--seeds``/``--steps``, and runs into an output folder, returning the Markdown tables it wrote.
A new suite: one module in this folder and one entry in :data:`SUITES`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...errors import UsageError
from .circle import CircleSettings, reproduce_circle
from .digit_peers import DigitPeersSettings, reproduce_digit_peers
from .images import ImageSuiteSettings, reproduce_images
from .manifolds import ManifoldSuiteSettings, reproduce_manifolds


@dataclass(frozen=True)
class Suite:
    """A suite: its description, how to make its settings, and how to run it."""

    name: str
    description: str
    make_settings: Callable[[bool], Any]      # quick -> settings
    run_suite: Callable[..., str]             # (settings, out, force, progress, log) -> markdown

    def settings(self, quick: bool = False, *, seeds: int | None = None,
                 steps: int | None = None, latents: list[str] | None = None,
                 binarized: bool = False):
        """The suite's settings (``quick``: a smoke test), with ``seeds``, ``steps``, (for the
        benchmark suites) ``latents`` and (for the images suite) the ``binarized`` hard variant
        applied."""
        settings = _adjust(self.make_settings(quick), seeds, steps)
        if binarized:
            if not isinstance(settings, ImageSuiteSettings):
                raise UsageError(f"--binarized applies to the images suite, not {self.name}")
            settings = settings.binarized()
        if latents is not None:
            first = settings[0] if isinstance(settings, tuple) else settings
            if not hasattr(first, "latents"):
                raise UsageError(f"--latents applies to the manifolds and peers suites, not {self.name}")
            first = dataclasses.replace(first, latents=list(latents))
            settings = (first,) + settings[1:] if isinstance(settings, tuple) else first
        return settings

    def run(self, settings, out: Path, *, force: bool = False, progress: bool = False,
            log: Callable[[str], None] = print) -> str:
        return self.run_suite(settings, Path(out), force=force, progress=progress, log=log)


def _adjust(settings, seeds: int | None, steps: int | None):
    if isinstance(settings, tuple):
        return tuple(_adjust(s, seeds, steps) for s in settings)
    if seeds is not None:
        settings = dataclasses.replace(settings, seeds=seeds)
    if steps is not None:
        settings = (settings.with_steps(steps) if hasattr(settings, "with_steps")
                    else dataclasses.replace(settings, training=settings.training.replace(steps=steps)))
    return settings


def _markdown(out: Path) -> str:
    return (out / "results.md").read_text()


def _circle(settings, out, **kw) -> str:
    reproduce_circle(settings, out, **kw)
    return _markdown(out)


def _manifolds(settings, out, **kw) -> str:
    reproduce_manifolds(settings, out, **kw)
    return _markdown(out)


def _images(settings, out, **kw) -> str:
    reproduce_images(settings, out, **kw)
    return _markdown(out)


def _peers(settings, out, **kw) -> str:
    synthetic, digits = settings
    reproduce_manifolds(synthetic, out, **kw)
    reproduce_digit_peers(digits, out / "digits", **kw)
    return _markdown(out) + "\n" + _markdown(out / "digits")


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("circle", "the paper's Table 1 on the circle benchmark",
          lambda quick: CircleSettings.quick() if quick else CircleSettings(), _circle),
    Suite("manifolds", "ER against Gaussian VAEs on the S1, S2, T2 and SO3 benchmarks",
          lambda quick: ManifoldSuiteSettings.quick() if quick else ManifoldSuiteSettings(),
          _manifolds),
    Suite("peers", "vMF and Power Spherical VAEs beside ER on S1 and S2, then on rotated digits "
                   "(OUT/digits)",
          lambda quick: ((ManifoldSuiteSettings.peers_quick(), DigitPeersSettings.quick()) if quick
                         else (ManifoldSuiteSettings.peers(), DigitPeersSettings())), _peers),
    Suite("images", "rotated digits (S1xRk) and rendered rotations (SO3xRk): likelihood and "
                    "symmetry recovery",
          lambda quick: ImageSuiteSettings.quick() if quick else ImageSuiteSettings(), _images),
)}

__all__ = ["SUITES", "Suite", "CircleSettings", "DigitPeersSettings", "ImageSuiteSettings",
           "ManifoldSuiteSettings", "reproduce_circle", "reproduce_digit_peers",
           "reproduce_images", "reproduce_manifolds"]
