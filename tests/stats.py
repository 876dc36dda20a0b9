"""Small statistical helpers for tests (fixed seeds; tolerances from standard errors)."""
import math

import torch


def ks_uniform(u: torch.Tensor) -> float:
    """Kolmogorov–Smirnov statistic of samples ``u`` against U(0,1)."""
    u, _ = torch.sort(u.flatten().double())
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - u, u - (i - 1) / n).max())


def ks_critical(n: int, alpha: float = 1e-3) -> float:
    """Asymptotic KS critical value: P(D_n > c) ≈ alpha for c = sqrt(-ln(alpha/2)/2)/sqrt(n)."""
    return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(n)


def mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double().flatten()
    return float(x.mean()), float(x.std() / math.sqrt(x.numel()))


def mmd_permutation_pvalue(x: torch.Tensor, y: torch.Tensor, *, permutations: int = 200,
                           seed: int = 0) -> float:
    """Two-sample test of ``x ~ y`` (same size): MMD² (V-statistic ``sᵀKs`` with ``s = ±1/n``
    labels, a sum of IMQ kernels), p-value from ``permutations`` random relabelings, all
    evaluated in one matrix product (Gretton et al. 2012); fixed seed."""
    n = x.shape[0]
    z = torch.cat([x, y]).double()
    d2 = torch.cdist(z, z).pow(2)
    scale = float(d2.mean())
    k = sum(c / (c + d2) for c in (0.1 * scale, scale, 10 * scale))
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), 1.0 / n), torch.full((n,), -1.0 / n)]).double()
    perms = torch.stack([labels] + [labels[torch.randperm(2 * n, generator=g)]
                                    for _ in range(permutations)], 1)
    stats = ((k @ perms) * perms).sum(0)
    return float((1 + (stats[1:] >= stats[0]).sum()) / (1 + permutations))
