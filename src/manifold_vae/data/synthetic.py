"""Synthetic benchmarks: uniform points on a manifold pushed through a fixed random MLP.

The paper's generator (Golikov & Kretov, arXiv:1812.02769, section 4): ``m ~ U(M)``, then
``x = W2 · relu(W1 · m) + σ ε`` with ``W1`` (100 × ambient) and ``W2`` (D × 100) both
Xavier-uniform and no biases, ``ε ~ N(0, I_D)``. On ``R^k`` (for topology discovery) the latent
points are standard normal instead of uniform. ``σ = 0`` is the paper's noise-free setting (no
density, hence no ceiling); ``σ > 0`` gives a proper density whose log-likelihood
``log E_{m~U(M)} N(x; mean(m), σ² I)`` is computed by quadrature (:mod:`..evaluation.ceiling`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..manifolds import Euclidean, Manifold, parse_latent


@dataclass(frozen=True)
class ManifoldBenchmark:
    """The generator's settings; everything it produces is a pure function of them."""

    latent: str = "S1"
    dim: int = 100
    noise: float = 0.05
    hidden: int = 100
    seed: int = 0

    def __post_init__(self):
        m = parse_latent(self.latent)
        if not (m.compact or isinstance(m, Euclidean)):
            raise ValueError(f"benchmark latent must be compact (uniform latents) or Euclidean "
                             f"(standard normal latents), got {self.latent}")
        if self.dim < 1 or self.hidden < 1:
            raise ValueError("dim and hidden must be at least 1")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    @property
    def manifold(self) -> Manifold:
        return parse_latent(self.latent)

    def weights(self) -> tuple[Tensor, Tensor]:
        """``(W1, W2)`` in float64, drawn Xavier-uniform from ``seed``."""
        gen = torch.Generator().manual_seed(self.seed)
        w1 = torch.empty(self.hidden, self.manifold.ambient_dim, dtype=torch.float64)
        w2 = torch.empty(self.dim, self.hidden, dtype=torch.float64)
        torch.nn.init.xavier_uniform_(w1, generator=gen)
        torch.nn.init.xavier_uniform_(w2, generator=gen)
        return w1, w2

    def mean(self, m: Tensor) -> Tensor:
        """Noise-free observation ``W2 · relu(W1 · m)`` of manifold points ``m`` (float64)."""
        w1, w2 = self.weights()
        return torch.relu(m.to(torch.float64) @ w1.T) @ w2.T

    def sample(self, n: int, *, sample_seed: int = 1) -> tuple[Tensor, Tensor]:
        """``n`` observations (float32, n×D) and their latent points on ``M`` (float64)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + sample_seed)
        m = self.manifold.sample_prior(n, generator=gen, dtype=torch.float64)
        mean = self.mean(m)
        x = mean + self.noise * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
        return x.to(torch.float32), m

    def signal_to_noise(self, n: int = 4000) -> float:
        """Mean over coordinates of (std of the noise-free signal) / σ."""
        m = self.manifold.sample_prior(n, generator=torch.Generator().manual_seed(7),
                                       dtype=torch.float64)
        sd = self.mean(m).std(0).mean()
        return float(sd / self.noise) if self.noise > 0 else float("inf")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
