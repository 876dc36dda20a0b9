"""The uniform distribution on ``S^{p-1} ⊂ R^p`` (density w.r.t. surface measure)."""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints


def log_sphere_volume(p: int) -> float:
    """``log vol(S^{p-1}) = log(2 π^{p/2} / Γ(p/2))`` (2π for the circle, 4π for S^2)."""
    return math.log(2) + (p / 2) * math.log(math.pi) - math.lgamma(p / 2)


class HypersphericalUniform(Distribution):
    """``U(S^{p-1})``: ``log_prob = -log vol(S^{p-1})`` on the sphere.

    Samples are drawn with ``dtype`` on ``device``; densities follow the value's device and dtype.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, p: int, *, batch_shape=torch.Size(), dtype=torch.float32, device=None,
                 validate_args=None):
        if p < 2:
            raise ValueError(f"the sphere S^(p-1) needs p >= 2, got {p}")
        self.p = int(p)
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        super().__init__(torch.Size(batch_shape), torch.Size([p]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return HypersphericalUniform(self.p, batch_shape=batch_shape, dtype=self.dtype,
                                     device=self.device)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        x = torch.randn(self._extended_shape(sample_shape), dtype=self.dtype, device=self.device)
        return x / x.norm(dim=-1, keepdim=True)

    def log_prob(self, value: Tensor) -> Tensor:
        return value.new_full(value.shape[:-1], -log_sphere_volume(self.p))

    def entropy(self) -> Tensor:
        return torch.full(self.batch_shape, log_sphere_volume(self.p), dtype=self.dtype,
                          device=self.device)
