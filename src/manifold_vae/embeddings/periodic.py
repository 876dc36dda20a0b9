"""Which hidden coordinates should a learned map treat as circles, or as a disk? Train one map
per choice and keep the best by its quality report.

A map ``[0,1]^d -> M`` with flat coordinates must tear ``M`` open along a cut; where ``M`` closes
up along a coordinate (a circle of the torus, the tube of the Klein bottle) the map's ends must
meet, which a WAE learns only roughly, and its folds near the cut cost likelihood (measured on the
Klein bottle: 11.4 % of the box sent off ``M`` with no periodic coordinate, 2.6 % with both; the
ER row 4.2 nats below the exact map's against 0.33). A user who brings samples of a manifold does
not know which choice fits it, so :func:`search_periodic` tries them: every subset of the compact
hidden coordinates for ``d <= 3``, else none, each one alone and all; and for ``d`` of 2 or 3 a
disk on the first two (the rest flat, or periodic when ``d = 3``). The disk is for surfaces whose
square pictures have corners no smooth uniform map can close, such as the projective plane
(flat box: 19.7 % of the box off ``M``, volume-element cv 0.34; disk: 3.3 %, 0.14 at 2000 steps).

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


Choice = tuple[tuple[int, ...], tuple[int, ...]]    # (periodic coordinates, disk [radial, angular])


def periodic_candidates(manifold: Manifold) -> list[Choice]:
    """The choices tried, as ``(periodic, disk)``: every subset of the compact part's ``d`` hidden
    coordinates periodic for ``d <= 3`` (otherwise none, each alone, and all), no disk; then for
    ``d`` of 2 or 3 the disk ``(0, 1)`` with the other coordinate flat, or periodic."""
    learned = compact_part(manifold)
    d = learned.dim if learned is not None else 0
    if d <= 3:
        sets = [c for r in range(d + 1) for c in itertools.combinations(range(d), r)]
    else:
        sets = [(), *((j,) for j in range(d)), tuple(range(d))]
    choices = [(c, ()) for c in sets]
    if d in (2, 3):
        choices += [((), (0, 1))] + ([((2,), (0, 1))] if d == 3 else [])
    return choices


def describe(choice: Choice) -> str:
    """``periodic [0]``, ``disk [0, 1]``, both, or ``flat``."""
    periodic, disk = choice
    parts = ([f"periodic {list(periodic)}"] if periodic else []) + (
        [f"disk {list(disk)}"] if disk else [])
    return ", ".join(parts) or "flat"


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
    candidate's ``periodic``, ``disk``, trust problems and measures, in the order trained.
    ``trained``: ``{(periodic, disk): (embedding, history, report)}``, maps already trained with
    this config."""
    best, tried = None, []
    candidates = periodic_candidates(manifold)
    trained = trained or {}
    log(f"training {len([c for c in candidates if c not in trained])} WAE-MMD embeddings for "
        f"{manifold.spec} ({config.steps} steps each), one per choice of periodic (or disk) "
        "hidden coordinates")
    for choice in candidates:
        if choice in trained:
            emb, history, report = trained[choice]
        else:
            periodic, disk = choice
            emb, history = fit_learned_embedding(dataclasses.replace(
                config, periodic=list(periodic), disk=list(disk)))
            report = embedding_quality(emb, manifold)
        row = {"periodic": list(choice[0]), "disk": list(choice[1]), "problems": report["problems"],
               "off_fraction": report.get("off_fraction"), "mmd_sd": mmd_sd(report),
               "volume_element_cv": report["volume_element_cv"],
               "distance_mean": report["distance_mean"]}
        tried.append(row)
        log(f"{describe(choice)}: MMD {row['mmd_sd']:.1f} sd, "
            f"{100 * (row['off_fraction'] or 0):.1f} % of the box off M, volume cv "
            f"{row['volume_element_cv']:.2f} — " + ("trusted" if not report["problems"] else
                                                     f"{len(report['problems'])} problem(s)"))
        if best is None or rank_key(report) < rank_key(best[2]):
            best = (emb, history, report)
    emb, history, report = best
    return emb, history, report, tried


def learn_map(config: EmbedConfig, *, log: Callable[[str], None] = lambda m: None
              ) -> tuple[tuple, tuple, list[dict] | None]:
    """Train the map ``config`` asks for; when it reads every hidden coordinate flat and its
    quality report does not trust it, train the other choices too (:func:`search_periodic`) —
    what ``fit`` and the suites do. Returns ``(first, best, tried)``: ``(embedding, history,
    report)`` of the map asked for and of the search's best (``first`` without a search), and
    the search's rows (``None`` without one)."""
    emb, history = fit_learned_embedding(config)
    report = embedding_quality(emb, emb.manifold)
    first = (emb, history, report)
    if (not report["problems"] or config.periodic or config.disk
            or len(periodic_candidates(emb.manifold)) < 2):
        return first, first, None
    log(f"the map with flat hidden coordinates is not trusted ({'; '.join(report['problems'])}); "
        "trying periodic ones and a disk")
    emb, history, report, tried = search_periodic(config, emb.manifold, log=log,
                                                  trained={((), ()): first})
    return first, (emb, history, report), tried
