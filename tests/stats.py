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
