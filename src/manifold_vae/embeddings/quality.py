"""How good is an embedding ``f``? The measures suggested by Golikov & Kretov (section 3).

* ``mmd``: MMD² (IMQ kernel, ambient space) between ``f#p(z)`` and ``U(M)``, beside the null
  distribution of MMD² between two independent uniform samples of the same size, and the
  permutation-style p-value ``P(null >= mmd)``;
* ``distance_mean`` / ``distance_max``: distance of ``f(z)`` from ``M``;
* ``volume_element_mean`` / ``volume_element_cv``: the volume element ``sqrt(det JᵀJ)`` should
  be the constant ``vol(M)`` for a uniform-pushing map (cv = std/mean);
* ``roundtrip_error``: mean ``|E(f(z)) - z|`` for a learned map, a measure of injectivity.
"""
from __future__ import annotations

import torch

from ..manifolds import Manifold
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
    if hasattr(embedding, "encode"):
        with torch.no_grad():
            report["roundtrip_error"] = float((embedding.encode(embedding(z)) - z).abs().mean())
    return report
