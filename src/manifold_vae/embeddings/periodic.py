"""Which hidden coordinates should a learned map treat as circles? Train one map per choice and
keep the best by its quality report.

A map ``[0,1]^d -> M`` with flat coordinates must tear ``M`` open along a cut; where ``M`` closes
up along a coordinate (a circle of the torus, the tube of the Klein bottle) the map's ends must
meet, which a WAE learns only roughly, and its folds near the cut cost likelihood (measured on the
Klein bottle: 11.4 % of the box sent off ``M`` with no periodic coordinate, 2.6 % with both; the
ER row 4.2 nats below the exact map's against 0.33). A user who brings samples of a manifold does
not know which choice fits it, so :func:`search_periodic` tries them: every subset of the compact
hidden coordinates for ``d <= 3``, else none, each one alone and all.

Ranking: maps without trust problems (:func:`~.quality.trust_problems`) first, then the smaller
share of the box sent off ``M`` (the measure that predicted the ER rows' losses), then the MMD
to uniform samples in standard deviations of its null.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

from ..manifolds import Manifold
from .learned import EmbedConfig, LearnedEmbedding, compact_part, fit_learned_embedding
from .quality import embedding_quality


def periodic_candidates(manifold: Manifold) -> list[tuple[int, ...]]:
    """The periodic sets tried: all subsets of the compact part's ``d`` hidden coordinates for
    ``d <= 3``; otherwise none, each alone, and all."""
    learned = compact_part(manifold)
    d = learned.dim if learned is not None else 0
    if d <= 3:
        return [c for r in range(d + 1) for c in itertools.combinations(range(d), r)]
    return [(), *((j,) for j in range(d)), tuple(range(d))]


def mmd_sd(report: dict) -> float:
    """MMD² above the null's mean, in standard deviations of the null."""
    return (report["mmd"] - report["mmd_null_mean"]) / max(report["mmd_null_std"], 1e-12)


def rank_key(report: dict) -> tuple:
    """Smaller is better: trusted first, then the off-``M`` share, then the MMD (see above)."""
    return (bool(report["problems"]), report.get("off_fraction", 0.0), mmd_sd(report))


def search_periodic(config: EmbedConfig, manifold: Manifold, *,
                    log: Callable[[str], None] = lambda m: None, trained: dict | None = None
                    ) -> tuple[LearnedEmbedding, list[dict], dict, list[dict]]:
    """Train a map for each of :func:`periodic_candidates` (``config``'s other keys, its seed)
    and return the best ``(embedding, history, report, tried)``; ``tried`` lists every
    candidate's ``periodic``, trust problems and measures, in the order trained. ``trained``:
    ``{periodic tuple: (embedding, history, report)}``, maps already trained with this config."""
    best, tried = None, []
    candidates = periodic_candidates(manifold)
    trained = trained or {}
    log(f"training {len([c for c in candidates if c not in trained])} WAE-MMD embeddings for "
        f"{manifold.spec} ({config.steps} steps each), one per choice of periodic hidden "
        "coordinates")
    for periodic in candidates:
        if periodic in trained:
            emb, history, report = trained[periodic]
        else:
            emb, history = fit_learned_embedding(dataclasses.replace(config, periodic=list(periodic)))
            report = embedding_quality(emb, manifold)
        row = {"periodic": list(periodic), "problems": report["problems"],
               "off_fraction": report.get("off_fraction"), "mmd_sd": mmd_sd(report),
               "volume_element_cv": report["volume_element_cv"],
               "distance_mean": report["distance_mean"]}
        tried.append(row)
        log(f"periodic {list(periodic) or 'none'}: MMD {row['mmd_sd']:.1f} sd, "
            f"{100 * (row['off_fraction'] or 0):.1f} % of the box off M, volume cv "
            f"{row['volume_element_cv']:.2f} — " + ("trusted" if not report["problems"] else
                                                     f"{len(report['problems'])} problem(s)"))
        if best is None or rank_key(report) < rank_key(best[2]):
            best = (emb, history, report)
    emb, history, report = best
    return emb, history, report, tried
