"""A manifold known only by uniform samples: the method's general case.

``samples:PATH:d`` names the manifold whose uniform measure the rows of the ``.npy`` file ``PATH``
(points of ``R^k``) sample, of intrinsic dimension ``d``; ``samples:NAME:d`` one whose sampler was
registered in Python (:func:`register_sampler`: a callable ``(n, generator) -> (n, k) tensor``).
It has no exact map and no group action: the ER latent uses a learned ``f`` (WAE-MMD trained on
these samples), whose quality report says how far the map can be trusted. Nearest points (for
distances from ``M``) are nearest samples, so they are as fine as the sample is dense.

:func:`check_samples` measures what a sample says about itself, before any map is learned: rows
that are not finite (an error), the local dimension by the Levina–Bickel estimator (a warning when
it is far from ``d``), and the spread of the local density, ``log r_k^d`` over the points (``r_k``
the distance to the ``k``-th neighbour), against what uniform samples of a ``d``-manifold give.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .base import Manifold

SAMPLERS: dict[str, Callable] = {}
MIN_SAMPLES = 1000


def register_sampler(name: str, sampler: Callable[[int, torch.Generator], Tensor]) -> None:
    """Make ``samples:NAME:d`` name the manifold that ``sampler(n, generator)`` samples
    uniformly (``(n, k)`` points of ``R^k``)."""
    if not name or ":" in name or "x" in name:
        raise ValueError(f"a sampler's name must be non-empty without ':' or 'x', got {name!r}")
    SAMPLERS[name] = sampler


class SampledManifold(Manifold):
    """The manifold that ``source`` (a registered sampler's name or an ``.npy`` path) samples
    uniformly, of intrinsic dimension ``dim``."""

    def __init__(self, source: str, dim: int):
        dim = int(dim)
        if dim < 1:
            raise ValueError(f"samples: the intrinsic dimension must be at least 1, got {dim}")
        self.source, self.dim = source, dim
        self.spec = f"samples:{source}:{dim}"
        self._reference: Tensor | None = None
        if source in SAMPLERS:
            self._sampler, self._rows = SAMPLERS[source], None
            probe = self._draw(8, torch.Generator().manual_seed(0))
        else:
            self._sampler, self._rows = None, _load_rows(source)
            probe = self._rows
        self.ambient_dim = int(probe.shape[1])
        if self.dim >= self.ambient_dim:
            raise ValueError(f"samples: intrinsic dimension {dim} must be below the points' "
                             f"{self.ambient_dim} coordinates")

    def _draw(self, n: int, generator) -> Tensor:
        x = torch.as_tensor(self._sampler(n, generator))
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"sampler {self.source!r} returned shape {tuple(x.shape)} for "
                             f"{n} points; it must return (n, k)")
        if not torch.isfinite(x).all():
            raise ValueError(f"sampler {self.source!r} returned non-finite points")
        return x

    def volume(self) -> float:
        """Unknown from samples alone (a learned uniform map's volume element estimates it)."""
        return float("nan")

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        if self._sampler is not None:
            return self._draw(n, generator).to(dtype)
        idx = torch.randint(len(self._rows), (n,), generator=generator)
        return self._rows[idx].to(dtype)

    def reference_points(self, n: int = 20000) -> Tensor:
        """Points of the sample to measure distances against (all file rows up to ``n``; a
        sampler's 20,000 seeded draws, made once)."""
        if self._rows is not None:
            return self._rows[:n]
        if self._reference is None:
            self._reference = self._draw(20000, torch.Generator().manual_seed(0)).double()
        return self._reference[:n]

    def project(self, x: Tensor) -> Tensor:
        """The nearest sample point (the sample stands for the manifold)."""
        ref = self.reference_points().to(device=x.device, dtype=x.dtype)
        flat = x.reshape(-1, x.shape[-1])
        nearest = torch.cat([torch.cdist(chunk, ref, compute_mode="donot_use_mm_for_euclid_dist")
                             .argmin(-1) for chunk in flat.split(1024)])
        return ref[nearest].reshape(x.shape)


def _load_rows(path: str) -> Tensor:
    """The sample file's rows as float64, checked (a named ``ValueError`` for anything amiss)."""
    p = Path(os.path.expanduser(path))
    if p.suffix != ".npy":
        raise ValueError(f"samples: {path} must be a .npy file of points (rows) or a registered "
                         f"sampler's name (registered: {', '.join(SAMPLERS) or 'none'})")
    if not p.is_file():
        raise ValueError(f"samples: file not found: {path}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"samples: {path} is not a numeric .npy array "
                         f"({str(err).splitlines()[0][:120]})") from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"samples: {path} must hold points as rows (n × k, k ≥ 2), got shape "
                         f"{arr.shape}")
    if len(arr) < MIN_SAMPLES:
        raise ValueError(f"samples: {path} has {len(arr)} points; a learned map needs at least "
                         f"{MIN_SAMPLES}")
    bad = ~np.isfinite(arr).all(1)
    if bad.any():
        raise ValueError(f"samples: {path} has {int(bad.sum())} rows with NaN or inf (the first "
                         f"is row {int(np.flatnonzero(bad)[0]) + 1}, counting from 1)")
    return torch.from_numpy(arr.astype(np.float64))


def check_samples(manifold: Manifold, *, n: int = 3000, k: int = 10, seed: int = 0) -> dict:
    """What a uniform sample of ``manifold`` says about itself: the local (Levina–Bickel)
    dimension estimate against the declared one, and the spread of ``d·log r_k`` (the local
    volume of the ``k``-neighbourhood) against uniform samples' ``sqrt(ψ'(k))``; with a
    ``warnings`` list naming what was measured when either is off."""
    if isinstance(manifold, SampledManifold):      # distinct points (draws repeat file rows)
        x = manifold.reference_points(n).double()
    else:
        x = manifold.sample_uniform(n, generator=torch.Generator().manual_seed(seed),
                                    dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{manifold.spec}: the sampler gave non-finite points")
    # exact differences: the matrix-product form loses the small distances that matter here
    d2 = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    d2[d2 <= 0] = math.inf                                    # itself, and exact repeats
    r = d2.topk(k, largest=False).values                      # (n, k), ascending
    r = r.clamp_min(1e-300)
    # Levina & Bickel (2004): 1/m = mean over points of (1/(k-1)) Σ_j log(r_k / r_j)
    inv = torch.log(r[:, -1:] / r[:, :-1]).sum(1) / (k - 1)
    local_dim = float(1.0 / inv.mean())
    spread = float((manifold.dim * torch.log(r[:, -1])).std())
    expected = math.sqrt(float(torch.special.polygamma(1, torch.tensor(float(k)))))
    warnings = []
    if abs(local_dim - manifold.dim) > 0.5:
        warnings.append(f"the sample's local dimension is {local_dim:.2f} (Levina–Bickel, k={k}), "
                        f"not the declared {manifold.dim}")
    if spread > 1.5 * expected:
        warnings.append(f"the sample is not uniform: the local density varies "
                        f"(spread of d·log r_{k} {spread:.2f}; uniform samples give about "
                        f"{expected:.2f})")
    return {"local_dimension": local_dim, "density_spread": spread,
            "density_spread_uniform": expected, "warnings": warnings}
