"""How good is an embedding ``f``? The measures suggested by Golikov & Kretov (section 3).

* ``mmd``: MMD² (IMQ kernel, ambient space) between ``f#p(z)`` and ``U(M)``, beside the null
  distribution of MMD² between two independent uniform samples of the same size, and the
  permutation-style p-value ``P(null >= mmd)``;
* ``distance_mean`` / ``distance_max``: distance of ``f(z)`` from ``M``; ``off_fraction``: the
  fraction of the box that ``f`` sends farther than a tenth of ``M``'s RMS radius from ``M`` (the
  steep folds of a learned map, which the mean does not see);
* ``volume_element_mean`` / ``volume_element_cv``: the volume element ``sqrt(det JᵀJ)`` should
  be the constant ``vol(M)`` for a uniform-pushing map (cv = std/mean);
* ``roundtrip_error``: mean ``|E(f(z)) - z|`` for a learned map, a measure of injectivity;
* ``sample_checks`` (manifolds known by samples): the sample's local dimension and the spread of
  its local density (:func:`~manifold_vae.manifolds.check_samples`);
* ``problems``: why the map should not be trusted (:func:`trust_problems`; empty if it can be).
"""
from __future__ import annotations

import torch

from ..manifolds import Manifold, SampledManifold, check_samples
from .density import volume_element
from .mmd import imq_mmd2, imq_scales


@torch.no_grad()
def _mmd_null(manifold: Manifold, n: int, repeats: int, gen, scales) -> torch.Tensor:
    return torch.stack([imq_mmd2(manifold.sample_uniform(n, generator=gen, dtype=torch.float64),
                                 manifold.sample_uniform(n, generator=gen, dtype=torch.float64),
                                 scales) for _ in range(repeats)])


def embedding_quality(embedding, manifold: Manifold, *, n: int = 2000, null_repeats: int = 20,
                      seed: int = 0) -> dict:
    """The quality report of ``embedding`` (a module or callable ``z -> m``) as plain floats.

    For a learned embedding of a product with Euclidean factors (identity there), the report
    is about its learned part: the compact factors, where a uniform distribution exists."""
    if hasattr(embedding, "learned_manifold") and embedding.learned_manifold is not manifold:
        manifold, embedding = embedding.learned_manifold, embedding.compact
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(n, manifold.dim, generator=gen)
    with torch.no_grad():
        m = embedding(z).double()
    scales = imq_scales(1.0 / manifold.ambient_dim, manifold.ambient_dim)
    with torch.no_grad():
        mmd = float(imq_mmd2(m, manifold.sample_uniform(n, generator=gen, dtype=torch.float64),
                             scales))
    null = _mmd_null(manifold, n, null_repeats, gen, scales)
    dist = manifold.distance_to_manifold(m)
    zv = z[: min(n, 500)]
    vol = volume_element(embedding, zv).double()
    report = {
        "manifold": manifold.spec,
        "n": n,
        "mmd": mmd,
        "mmd_null_mean": float(null.mean()),
        "mmd_null_std": float(null.std()),
        "mmd_null_max": float(null.max()),
        "mmd_p_value": float(((null >= mmd).sum() + 1) / (null_repeats + 1)),
        "distance_mean": float(dist.mean()),
        "distance_max": float(dist.max()),
        "volume_element_mean": float(vol.mean()),
        "volume_element_cv": float(vol.std() / vol.mean()),
        "volume_expected": manifold.volume(),
    }
    ref = manifold.sample_uniform(n, generator=gen, dtype=torch.float64)
    report["radius"] = float((ref - ref.mean(0)).pow(2).sum(-1).mean().sqrt())
    report["off_fraction"] = float((dist > MAX_DISTANCE_OVER_RADIUS * report["radius"]).double().mean())
    if hasattr(embedding, "encode"):
        with torch.no_grad():
            report["roundtrip_error"] = float((embedding.encode(embedding(z)) - z).abs().mean())
    if isinstance(manifold, SampledManifold):
        report["sample_checks"] = check_samples(manifold)
    report["problems"] = trust_problems(report)
    return report


# Thresholds for trusting a learned map. The learned maps the suites use, whose ER rows come
# within 0.2 nats of the exact maps', measured (S1, S2, T2, SO3): MMD² at most 2.8 standard
# deviations of the null (20 pairs of uniform samples) above its mean, a volume-element spread
# (cv) of at most 0.19, a mean distance from M of at most 2.5 % of its RMS radius; a Klein bottle
# map trained too briefly, whose f fills the hole of the tube, measured 70 standard deviations
# and 17 % of the radius. A map beyond several times the suites' is refused.
MAX_MMD_Z = 10.0
MAX_VOLUME_CV = 0.3
MAX_DISTANCE_OVER_RADIUS = 0.1
# The share of the box sent farther than MAX_DISTANCE_OVER_RADIUS · radius from M. Measured on
# 2000 box points: learned S1 (800 steps), S2, T2, SO3 maps (embed defaults) 0.0, 0.9, 0.0, 0.3 %;
# a Klein-bottle map from 100,000 samples (8000 steps) whose mean distance passed (4.6 %) 11.4 %:
# its ER row lost 4.2 nats to the exact map's, 2.5 % of the test rows losing 5-835 nats each.
MAX_OFF_FRACTION = 0.05


def saved_report_problems(report: dict) -> list[str]:
    """:func:`trust_problems` of a report saved with an embedding, by today's thresholds; empty
    for a report without the measures they need (an embedding saved before they existed)."""
    needed = {"mmd", "mmd_null_mean", "mmd_null_std", "volume_element_cv", "distance_mean"}
    return trust_problems(report) if needed <= set(report) else []


def trust_problems(report: dict) -> list[str]:
    """Why the learned map of ``report`` should not be trusted (empty: it can be)."""
    problems = []
    z = (report["mmd"] - report["mmd_null_mean"]) / max(report["mmd_null_std"], 1e-12)
    if z > MAX_MMD_Z:
        problems.append(f"f pushes the box to a distribution unlike the samples: MMD² "
                        f"{report['mmd']:.2e}, {z:.0f} standard deviations above two uniform "
                        f"samples' (refused beyond {MAX_MMD_Z:g})")
    if report["volume_element_cv"] > MAX_VOLUME_CV:
        problems.append(f"f is far from uniform: its volume element varies by "
                        f"{report['volume_element_cv']:.2f} (cv; refused beyond {MAX_VOLUME_CV:g})")
    radius = report.get("radius") or 0.0
    if radius > 0 and report["distance_mean"] > MAX_DISTANCE_OVER_RADIUS * radius:
        problems.append(f"f(z) lies off the manifold: mean distance {report['distance_mean']:.3g}, "
                        f"{report['distance_mean'] / radius:.0%} of its radius (refused beyond "
                        f"{MAX_DISTANCE_OVER_RADIUS:.0%})")
    off = report.get("off_fraction")
    if off is not None and off > MAX_OFF_FRACTION:
        problems.append(f"f folds off the manifold: {off:.1%} of the box goes farther than "
                        f"{MAX_DISTANCE_OVER_RADIUS:.0%} of its radius from it (refused beyond "
                        f"{MAX_OFF_FRACTION:.0%})")
    return problems
