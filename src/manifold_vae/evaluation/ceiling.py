"""The data's true log-likelihood by quadrature over ``M``: the ceiling for every model.

``log p(x) = log ∫_M N(x; mean(m), σ² I) dU(m) ≈ log Σ_j w_j N(x; mean(m_j), σ² I)``

with a quadrature rule ``(m_j, w_j)`` of ``U(M)`` from the manifold (``quadrature(level)``:
for the circle, the periodic trapezoid rule on ``2^level`` equispaced angles, which converges
fast for a smooth periodic integrand). The rule is refined until two successive levels agree
to ``tol`` nats for every example; that difference is reported as the numerical error.

Where the rule cannot resolve the posterior (``SO(3)`` with small noise: at σ=0.05 and D=100
the posterior of one example spans a few degrees, finer than 2^21 Sobol points resolve), and the
manifold has a chart (``chart_exp``/``chart_log``), the likelihood is instead estimated by
adaptive importance sampling with a defensive mixture (:func:`adaptive_importance_log_likelihood`);
its numerical error is the largest per-example Monte-Carlo standard error of ``log p(x)``
(delta method), from a fixed seed, so the result is deterministic.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor

from ..data.synthetic import ManifoldBenchmark


def _log_gauss_mixture(x: Tensor, means: Tensor, log_w: Tensor, noise: float,
                       chunk: int = 512, point_chunk: int = 65536) -> Tensor:
    """``log Σ_j exp(log_w_j) N(x; means_j, σ² I)`` per row of ``x`` (float64), in blocks of
    ``chunk`` rows × ``point_chunk`` nodes (at most ~270 MB of distances at a time)."""
    return _blocked_mixture(x, lambda sl: means[sl], log_w, noise, chunk, point_chunk)


def _blocked_mixture(x: Tensor, means_of: Callable, log_w: Tensor, noise: float,
                     chunk: int = 512, point_chunk: int = 65536) -> Tensor:
    d = x.shape[-1]
    n_pts = log_w.shape[0]
    total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    for start in range(0, n_pts, point_chunk):
        sl = slice(start, min(n_pts, start + point_chunk))
        means = means_of(sl)
        mm = (means * means).sum(-1)
        lw = log_w[sl]
        parts = []
        for xs in torch.split(x, chunk):
            sq = (xs * xs).sum(-1, keepdim=True) - 2 * xs @ means.T + mm
            parts.append(torch.logsumexp(lw - sq.clamp_min(0) / (2 * noise**2), -1))
        total = torch.logaddexp(total, torch.cat(parts))
    return total - 0.5 * d * math.log(2 * math.pi * noise**2)


def true_log_likelihood(bench: ManifoldBenchmark, x: Tensor, *, tol: float = 1e-4,
                        start_level: int | None = None, max_level: int | None = None,
                        method: str = "auto", return_info: bool = False,
                        log: Callable[[str], None] | None = None):
    """Per-example true log-likelihood of ``x`` under ``bench`` and its numerical error (nats).

    ``method="quadrature"`` refines the manifold's quadrature rule until the largest
    per-example change between two successive levels is below ``tol``, and returns the finer
    estimate and that change. ``"importance"`` uses :func:`adaptive_importance_log_likelihood`.
    ``"auto"`` (default) picks importance sampling for manifolds of dimension ≥ 3 with a chart
    (``SO3``), quadrature otherwise. With ``return_info`` a third item says which method ran.
    ``log``: called with a line of progress now and then (the work can take minutes).
    """
    if method not in ("auto", "quadrature", "importance"):
        raise ValueError(f"unknown ceiling method {method!r}: use auto, quadrature or importance")
    if bench.noise <= 0:
        raise ValueError("the true log-likelihood needs observation noise > 0 "
                         "(noise-free data have no density)")
    x = x.to(torch.float64)
    if method == "auto":
        method = "importance" if _needs_importance(bench, x) else "quadrature"
    if method == "importance":
        if not bench.manifold.has_chart:
            raise ValueError(f"{bench.latent}: no chart for importance sampling")
        ll, err = adaptive_importance_log_likelihood(bench, x, log=log)
        return (ll, err, {"method": "adaptive importance sampling"}) if return_info else (ll, err)
    ll, err = _quadrature(bench, x, tol, start_level, max_level, log)
    return (ll, err, {"method": "quadrature"}) if return_info else (ll, err)


def _quadrature(bench, x, tol, start_level, max_level, log=None):
    """Refine the rule row by row: a row whose estimate changed by less than ``tol`` at two
    successive refinements is done (one small change can be a coincidence of a rule that is
    still too coarse), and only the others are computed at the next, finer level: most rows
    converge early, the few with sharp posteriors need the finest rules. The error reported is
    the largest last change."""
    manifold = bench.manifold
    if not manifold.has_quadrature:
        raise ValueError(f"{bench.latent}: no quadrature rule and no chart, so no true "
                         "log-likelihood can be computed for these data")
    lo, hi = manifold.quadrature_levels()
    level = lo if start_level is None else start_level
    max_level = hi if max_level is None else max_level
    t0 = time.perf_counter()
    prev = None
    change = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    small = torch.zeros(x.shape[0], dtype=torch.long)       # successive changes below tol
    active = torch.ones(x.shape[0], dtype=torch.bool)
    while level <= max_level:
        pts, log_w = manifold.quadrature(level)
        rows = active.nonzero(as_tuple=True)[0]
        cur = _blocked_mixture(x[rows], lambda sl: bench.mean(pts[sl]), log_w, bench.noise)
        if prev is None:
            prev = torch.empty(x.shape[0], dtype=torch.float64)
        else:
            change[rows] = (cur - prev[rows]).abs()
            small[rows] = torch.where(change[rows] < tol, small[rows] + 1, 0)
            active[rows] = small[rows] < 2
        prev[rows] = cur
        if log is not None:
            log(f"true log-likelihood ({manifold.spec}, quadrature): level {level}, "
                f"{len(pts)} nodes, {len(rows)} of {x.shape[0]} rows computed, "
                f"{int(active.sum())} not yet within {tol:g} ({time.perf_counter() - t0:.0f} s)")
        if not bool(active.any()):
            break
        level += 1
    return prev, float(change.max())


def _needs_importance(bench: ManifoldBenchmark, x: Tensor) -> bool:
    """Importance sampling for manifolds of dimension ≥ 3 that have a chart (``SO3``): their
    quasi-Monte-Carlo rules need ~(1/width)³ nodes to resolve a narrow posterior."""
    return bench.manifold.has_chart and bench.manifold.dim >= 3


def alias_count(chol: Tensor, radius: float) -> int:
    """How many turns of the chart a Gaussian ``N(0, L Lᵀ)`` in it reaches: the aliases of a
    point lie ``2·radius`` apart along its axis, and beyond 8 standard deviations (the widest
    direction of any ``L`` of the batch) the density is below ``e^{-32}``: count the turns up to
    there (at least 2)."""
    sd = float(torch.linalg.matrix_norm(chol, ord=2).max())
    return max(2, math.ceil((8 * sd + radius) / (2 * radius)))


def _log_normal(v: Tensor, chol: Tensor) -> Tensor:
    """``log N(v; 0, L Lᵀ)`` for ``v`` (n, s, d) and Cholesky factors ``chol`` (n, d, d)."""
    d = v.shape[-1]
    sol = torch.linalg.solve_triangular(chol, v.transpose(-1, -2), upper=False)   # (n, d, s)
    logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1, keepdim=True)
    return -0.5 * sol.pow(2).sum(-2) - logdet - 0.5 * d * math.log(2 * math.pi)


def adaptive_importance_log_likelihood(bench: ManifoldBenchmark, x: Tensor, *,
                                       n_final: int = 4096, n_adapt: int = 512,
                                       defensive: float = 0.05, seed: int = 0,
                                       chunk: int = 32, log: Callable[[str], None] | None = None
                                       ) -> tuple[Tensor, float]:
    """``log ∫_M N(x; mean(m), σ²I) dU(m)`` by adaptive importance sampling in a chart of ``M``.

    Per example: (1) the coarsest quadrature rule gives the 4 best nodes; (2) ``n_adapt``
    samples from Gaussians of width 0.2 around them (in the chart ``m = chart_exp(c, v)``) are
    weighted by likelihood / proposal, and their weighted mean and covariance in the chart at
    the best sample give a Gaussian fit of the posterior, refitted once; (3) ``n_final`` samples
    from the defensive mixture ``q = α U(M) + (1-α)(0.7 N(μ, 1.2²Σ) + 0.3 N(μ, 3²Σ))``
    (densities relative to ``U(M)`` via ``chart_log_uniform_density``; ``α = defensive`` bounds
    every weight by ``likelihood/α``) estimate ``p(x) = E_q[N(x; mean(m), σ²I) / q(m)]``.
    Returns the per-example estimates and the largest delta-method standard error of
    ``log p(x)``, ``sd(w) / (mean(w) √n_final)``. (Importance sampling on manifolds with a
    defensive mixture: Hesterberg 1995; Owen & Zhou 2000.)
    """
    manifold = bench.manifold
    x = x.to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    const = -0.5 * x.shape[-1] * math.log(2 * math.pi * bench.noise ** 2)
    d = manifold.dim
    pts, log_w = manifold.quadrature(manifold.quadrature_levels()[0])
    means = bench.mean(pts)
    out, errs = [], []
    t0, done, next_report = time.perf_counter(), 0, max(chunk, x.shape[0] // 10)
    for xs in torch.split(x, chunk):
        n = xs.shape[0]
        done += n
        if log is not None and (done >= next_report or done == x.shape[0]):
            log(f"true log-likelihood ({manifold.spec}, importance sampling): {done} of "
                f"{x.shape[0]} rows ({time.perf_counter() - t0:.0f} s)")
            next_report = done + max(chunk, x.shape[0] // 10)

        def loglik(m):   # m: (n, s, ambient) -> (n, s)
            mu = bench.mean(m)
            return -(xs[:, None, :] - mu).pow(2).sum(-1) / (2 * bench.noise ** 2) + const

        def chart_sample(centers, chol, s):   # centers (n, amb), chol (n, d, d)
            v = torch.randn(n, s, d, generator=gen, dtype=torch.float64) @ chol.transpose(-1, -2)
            return manifold.chart_exp(centers[:, None, :].expand(n, s, -1), v)

        def log_q_local(m, centers, chol):
            """Density relative to U(M) of ``chart_exp(c, N(0, LLᵀ))``: a sum over the chart
            vectors that reach the same point (all of them, where the chart wraps around)."""
            v = manifold.chart_log(centers[:, None, :].expand_as(m), m)
            vs = manifold.chart_aliases(v, alias_count(chol, manifold.chart_radius))
            terms = [_log_normal(va, chol) - manifold.chart_log_uniform_density(va) for va in vs]
            return torch.logsumexp(torch.stack(terms), 0)

        def fit(m, logw, at):                   # weighted Gaussian fit in the chart at `at`
            v = manifold.chart_log(at[:, None, :].expand_as(m), m)
            p = torch.softmax(logw, -1)[..., None]
            mu = (p * v).sum(1)
            c = v - mu[:, None, :]
            cov = (p * c).transpose(1, 2) @ c + 1e-8 * torch.eye(d, dtype=torch.float64)
            return manifold.chart_exp(at, mu), torch.linalg.cholesky(cov)

        # (1)-(2) starting mixture around the best quadrature nodes
        d2 = torch.cdist(xs, means).pow(2)
        top = torch.topk(log_w - d2 / (2 * bench.noise ** 2), 4, dim=-1).indices   # (n, 4)
        chol0 = 0.2 * torch.eye(d, dtype=torch.float64).expand(n, d, d)
        per = n_adapt // 4
        samples, logq = [], []
        for j in range(4):
            samples.append(chart_sample(pts[top[:, j]], chol0, per))
        m = torch.cat(samples, 1)
        comps = torch.stack([log_q_local(m, pts[top[:, j]], chol0) for j in range(4)], 0)
        logq = torch.logsumexp(comps, 0) - math.log(4)
        logw_s = loglik(m) - logq
        best = m[torch.arange(n), logw_s.argmax(-1)]
        center, chol = fit(m, logw_s, best)
        # refit once from the fitted Gaussian (inflated 1.5x)
        chol_a = 1.5 * chol
        m = chart_sample(center, chol_a, n_adapt)
        logw_s = loglik(m) - log_q_local(m, center, chol_a)
        center, chol = fit(m, logw_s, m[torch.arange(n), logw_s.argmax(-1)])
        # (3) final defensive mixture
        k1, k2 = round(0.7 * (1 - defensive) * n_final), None
        k0 = round(defensive * n_final)
        k2 = n_final - k0 - k1
        m = torch.cat([
            manifold.sample_uniform(n * k0, generator=gen, dtype=torch.float64).reshape(n, k0, -1),
            chart_sample(center, 1.2 * chol, k1), chart_sample(center, 3.0 * chol, k2)], 1)
        lq_local = torch.logsumexp(torch.stack([
            math.log(0.7) + log_q_local(m, center, 1.2 * chol),
            math.log(0.3) + log_q_local(m, center, 3.0 * chol)]), 0)
        lq = torch.logaddexp(torch.full_like(lq_local, math.log(defensive)),
                             math.log(1 - defensive) + lq_local)
        lw = loglik(m) - lq
        est = torch.logsumexp(lw, -1) - math.log(n_final)
        wn = torch.exp(lw - lw.max(-1, keepdim=True).values)
        se = wn.std(-1) / (wn.mean(-1) * math.sqrt(n_final))
        out.append(est)
        errs.append(se)
    return torch.cat(out), float(torch.cat(errs).max())
