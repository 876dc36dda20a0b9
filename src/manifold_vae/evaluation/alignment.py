"""How well a learned latent coordinate recovers a known angle or rotation, up to the symmetries
that no likelihood can see (a global rotation, a reflection).

- Angles: the Fisher–Lee circular correlation ``ρ_T`` (Fisher & Lee 1983, Biometrika 70(2)):
  with ``x_i = (cos a_i, sin a_i)``, ``y_i = (cos b_i, sin b_i)``,
  ``ρ_T = det(Σ x_i y_iᵀ) / sqrt(det(Σ x_i x_iᵀ) det(Σ y_i y_iᵀ))``, in [-1, 1], unchanged by
  rotating either variable and negated by reflecting one; +1 iff ``b = a + c``. Unlike the
  Jammalamadaka–SenGupta coefficient it needs no mean direction, which uniform angles lack. After
  the best reflection it is ``|ρ_T|``. The aligned angle ``s·a + c`` (``s = ±1``, ``c`` the
  circular mean of ``b - s·a``) also gives per-example errors.
- Relative angles (what is identifiable when each source image's orientation is a free offset,
  as for rotated copies of one digit): for every pair ``(i, j)`` of copies of one source, the
  error ``wrap(s·(a_i − a_j) − (b_i − b_j))`` with one reflection ``s = ±1`` for the whole set
  (modulo π for sources that look the same after a half turn), and ``ρ_T`` of the angles measured
  from each source's first copy.
- Rotations: the best ``A R B`` (or ``A Rᵀ B``) with ``A, B ∈ SO(3)`` by alternating orthogonal
  Procrustes (each step an SVD), several starts; errors are geodesic angles
  ``arccos((tr(R̂ᵀ A R B) - 1) / 2)``, scored on a half of the examples the alignment was not
  fitted on (:func:`held_out_rotation_errors`). Fit-free: the Spearman correlation of latent and
  true pairwise geodesic distances, and the latent-neighbour precision (of the pairs closer than
  20° in the latent, the fraction truly closer than 30°), which a folded map fails. Chance for
  Haar-random poses: the angle's CDF is ``(θ − sin θ)/π`` (median 132.3°, 0.75 % within 30°).
"""
from __future__ import annotations

import numpy as np


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles mapped to (-π, π]."""
    return np.angle(np.exp(1j * np.asarray(a, dtype=np.float64)))


def fisher_lee_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """``ρ_T`` of two samples of angles (radians), see the module docstring."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError("need two 1-D arrays of the same length (at least 3 angles)")
    x = np.stack([np.cos(a), np.sin(a)], 1)
    y = np.stack([np.cos(b), np.sin(b)], 1)
    den = np.sqrt(np.linalg.det(x.T @ x) * np.linalg.det(y.T @ y))
    return float(np.linalg.det(x.T @ y) / den) if den > 0 else float("nan")


def align_angles(learned: np.ndarray, true: np.ndarray) -> dict:
    """Best ``s·learned + c ≈ true`` over reflections ``s = ±1`` and offsets ``c``.

    Returns ``aligned`` angles, ``reflection`` (bool), ``offset``, per-example ``error`` (wrapped,
    radians), ``circular_correlation`` (``|ρ_T|`` of the aligned pair, ≥ 0) and the mean cosine of
    the errors."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    best = None
    for s in (1.0, -1.0):
        c = float(np.angle(np.exp(1j * (true - s * learned)).mean()))
        err = wrap_angle(s * learned + c - true)
        score = float(np.cos(err).mean())
        if best is None or score > best["mean_cos_error"]:
            best = {"aligned": wrap_angle(s * learned + c), "reflection": s < 0, "offset": c,
                    "error": err, "mean_cos_error": score}
    best["circular_correlation"] = fisher_lee_correlation(best["aligned"], true)
    return best


def same_source_pairs(source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(i, j)`` of every pair of examples with the same ``source`` label, each pair
    once (vectorized: one pass per copy offset within a source, not per example)."""
    source = np.asarray(source)
    order = np.argsort(source, kind="stable")
    s = source[order]
    firsts, seconds = [], []
    for d in range(1, len(s)):
        k = np.flatnonzero(s[d:] == s[:-d])
        if len(k) == 0:              # sorted: no pair d apart means none further apart either
            break
        firsts.append(order[k])
        seconds.append(order[k + d])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _wrap_period(a: np.ndarray, half_turn) -> np.ndarray:
    """``a`` wrapped to (-π, π], or to (-π/2, π/2] where ``half_turn`` (angles modulo π)."""
    return np.where(half_turn, wrap_angle(2 * a) / 2, wrap_angle(a))


def best_relative_reflection(learned: np.ndarray, true: np.ndarray, i: np.ndarray,
                             j: np.ndarray) -> bool:
    """Whether the learned angle differences match the true ones better reflected (the larger mean
    cosine of the pairs' errors): the one global reflection the metric allows."""
    dl, dt = learned[i] - learned[j], true[i] - true[j]
    return bool(np.cos(-dl - dt).mean() > np.cos(dl - dt).mean())


def relative_angle_errors(learned: np.ndarray, true: np.ndarray, i: np.ndarray, j: np.ndarray, *,
                          reflection: bool, half_turn=False) -> np.ndarray:
    """``|wrap(s·(a_i − a_j) − (b_i − b_j))|`` in degrees for the pairs ``(i, j)``; modulo π where
    ``half_turn`` (a bool, or one per pair)."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    s = -1.0 if reflection else 1.0
    err = s * (learned[i] - learned[j]) - (true[i] - true[j])
    return np.degrees(np.abs(_wrap_period(err, half_turn)))


def relative_to_first(learned: np.ndarray, true: np.ndarray, source: np.ndarray, *,
                      reflection: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(wrap(s·(a_i − a_first)), wrap(b_i − b_first), kept)`` for every example ``i`` that is
    not the first copy of its source (in the order given; ``kept`` marks them): the angles the
    relative correlation compares."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    _, first_index, inverse = np.unique(np.asarray(source), return_index=True, return_inverse=True)
    first = first_index[inverse.reshape(-1)]
    keep = first != np.arange(len(first))
    s = -1.0 if reflection else 1.0
    return (wrap_angle(s * (learned[keep] - learned[first[keep]])),
            wrap_angle(true[keep] - true[first[keep]]), keep)


def relative_angle_correlation(learned: np.ndarray, true: np.ndarray, source: np.ndarray, *,
                               reflection: bool, half_turn: bool = False) -> float:
    """Fisher–Lee ``ρ_T`` of :func:`relative_to_first`'s two angles (of the doubled angles when
    ``half_turn``). Signed: the reflection is applied, so a recovered geometry gives +1."""
    a, b, _ = relative_to_first(learned, true, source, reflection=reflection)
    if half_turn:
        a, b = 2 * a, 2 * b
    return fisher_lee_correlation(a, b) if len(a) >= 3 else float("nan")


def relative_angle_summary(errors_deg: np.ndarray) -> dict:
    """``relative_angle_median_deg``, ``relative_angle_within_30deg`` (fraction of pairs) and the
    number of ``pairs``."""
    e = np.asarray(errors_deg, np.float64)
    if len(e) == 0:
        return {"relative_angle_median_deg": float("nan"), "relative_angle_within_30deg": float("nan"),
                "pairs": 0}
    return {"relative_angle_median_deg": float(np.median(e)),
            "relative_angle_within_30deg": float((e <= 30).mean()), "pairs": int(len(e))}


def _project_so3(m: np.ndarray) -> np.ndarray:
    """The rotation nearest to ``m`` in Frobenius norm (SVD, sign-fixed)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def geodesic_angle(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Rotation angle of ``r1ᵀ r2`` (radians) for stacks of 3×3 rotations."""
    tr = np.einsum("nij,nij->n", r1, r2)
    return np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0))


def align_rotations(learned: np.ndarray, true: np.ndarray, *, starts: int = 8, iters: int = 30,
                    seed: int = 0) -> dict:
    """Best ``A · T_i · B`` with ``T_i = true_i`` or ``true_iᵀ``, ``A, B ∈ SO(3)``, against
    ``learned_i`` (least squares in Frobenius norm, then judged by geodesic error).

    Returns ``errors_deg`` (per example), ``median_geodesic_error_deg``, ``A``, ``B`` and whether
    the transposed (inverse) map fitted best."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    if learned.shape != true.shape or learned.shape[1:] != (3, 3):
        raise ValueError("need two stacks of 3×3 rotations of the same length")
    rng = np.random.default_rng(seed)
    best = None
    for transpose in (False, True):
        t = np.swapaxes(true, 1, 2) if transpose else true
        for k in range(starts):
            b = np.eye(3) if k == 0 else _project_so3(rng.standard_normal((3, 3)))
            for _ in range(iters):
                a = _project_so3(np.einsum("nij,nkj->ik", learned, t @ b))      # Σ N (T B)ᵀ
                b = _project_so3(np.einsum("nji,njk->ik", a @ t, learned))      # Σ (A T)ᵀ N
            err = np.degrees(geodesic_angle(learned, a @ t @ b))
            med = float(np.median(err))
            if best is None or med < best["median_geodesic_error_deg"]:
                best = {"errors_deg": err, "median_geodesic_error_deg": med, "A": a, "B": b,
                        "inverse": transpose}
    return best


HAAR_MEDIAN_DEG = 132.3          # the median angle of a Haar-random rotation: (θ − sin θ)/π = 1/2


def haar_angle_cdf(theta_deg: float) -> float:
    """``P(angle ≤ θ)`` of a Haar-random rotation: ``(θ − sin θ)/π``."""
    t = np.radians(theta_deg)
    return float((t - np.sin(t)) / np.pi)


def held_out_rotation_errors(learned: np.ndarray, true: np.ndarray, *, seed: int = 0,
                             threshold_deg: float = 30.0) -> dict:
    """Alignment (:func:`align_rotations`) fitted on a random half of the examples, geodesic
    errors on the other half: ``errors_deg``, ``median_geodesic_error_deg``, ``accuracy_30deg``
    (fraction within ``threshold_deg``) and ``inverse``."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    perm = np.random.default_rng(seed).permutation(len(learned))
    fit_idx, test_idx = perm[: len(perm) // 2], perm[len(perm) // 2:]
    fit = align_rotations(learned[fit_idx], true[fit_idx], seed=seed)
    t = np.swapaxes(true[test_idx], 1, 2) if fit["inverse"] else true[test_idx]
    err = np.degrees(geodesic_angle(learned[test_idx], fit["A"] @ t @ fit["B"]))
    return {"errors_deg": err, "median_geodesic_error_deg": float(np.median(err)),
            "accuracy_30deg": float((err <= threshold_deg).mean()), "inverse": fit["inverse"]}


def _pairwise_geodesic_deg(r: np.ndarray) -> np.ndarray:
    """Geodesic angles (degrees) of every pair ``i < j`` of a stack of rotations."""
    tr = np.einsum("aij,bij->ab", r, r)
    i, j = np.triu_indices(len(r), 1)
    return np.degrees(np.arccos(np.clip((tr[i, j] - 1) / 2, -1.0, 1.0)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (the Pearson correlation of the ranks; ties, which continuous
    distances do not have, are ranked by order)."""
    ra = np.empty(len(a)); ra[np.argsort(a, kind="stable")] = np.arange(len(a))
    rb = np.empty(len(b)); rb[np.argsort(b, kind="stable")] = np.arange(len(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _subsample(n: int, most: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= most else np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def rotation_distance_agreement(learned: np.ndarray, true: np.ndarray, *, most: int = 2000,
                                seed: int = 0, near_latent_deg: float = 20.0,
                                near_true_deg: float = 30.0) -> dict:
    """Fit-free agreement of two stacks of rotations over every pair of (at most ``most``,
    seeded) examples: ``distance_rank_correlation`` (Spearman's ρ of latent against true pairwise
    geodesic distances), ``latent_neighbour_precision`` (of the pairs closer than
    ``near_latent_deg`` in the latent, the fraction closer than ``near_true_deg`` in truth; NaN if
    none) with its chance level ``neighbour_chance`` (the fraction of all pairs closer than
    ``near_true_deg`` in truth) and ``latent_neighbour_pairs``."""
    idx = _subsample(len(learned), most, seed)
    dl = _pairwise_geodesic_deg(np.asarray(learned, np.float64)[idx])
    dt = _pairwise_geodesic_deg(np.asarray(true, np.float64)[idx])
    near = dl < near_latent_deg
    return {"distance_rank_correlation": spearman(dl, dt),
            "latent_neighbour_precision": float((dt[near] < near_true_deg).mean()) if near.any()
            else float("nan"),
            "latent_neighbour_pairs": int(near.sum()),
            "neighbour_chance": float((dt < near_true_deg).mean())}
