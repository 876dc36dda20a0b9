"""Gaussian likelihood with one learned scale per coordinate, in the data's own units.

The model holds the affine standardization applied to its inputs, ``x_std = (x - shift) / s``
(a per-coordinate shift and one global scale ``s``, which keeps isotropic noise isotropic), and
adds its log-Jacobian ``-D log s``:

    log p(x | m) = Σ_i [ -½ ((x_std,i - μ_i(m)) / σ_i)² - log σ_i ] - (D/2) log 2π - D log s

so its log-likelihoods compare directly with the data's true log-likelihood.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Likelihood

LOG_2PI = math.log(2 * math.pi)
LOG_SCALE_BOUNDS = (-9.0, 5.0)


def standardization(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate shift and one global scale of rows ``x`` (log-Jacobian ``-D log s``)."""
    shift = x.mean(0)
    scale = (x - shift).pow(2).mean().sqrt().clamp_min(1e-12)
    return shift, scale


class GaussianLikelihood(Likelihood):
    """``N(x_std; decoder(m), diag σ²)`` with ``log σ`` learned per coordinate (clamped to
    ``LOG_SCALE_BOUNDS``), scored in the data's own units.

    Example::

        >>> lik = GaussianLikelihood(3)
        >>> lik.log_prob(torch.zeros(2, 3), torch.zeros(2, 3)).shape
        torch.Size([2])
    """

    name = "gaussian"

    def __init__(self, data_dim: int):
        super().__init__(data_dim)
        self.log_scale = nn.Parameter(torch.zeros(self.data_dim))
        self.register_buffer("data_shift", torch.zeros(self.data_dim))
        self.register_buffer("data_scale", torch.ones(()))

    def set_data_transform(self, shift: Tensor, scale: float | Tensor) -> None:
        """Standardize inputs as ``(x - shift) / scale``; ``scale`` is one positive number."""
        scale = torch.as_tensor(scale, dtype=self.data_scale.dtype)
        if scale.numel() != 1 or not bool(scale > 0):
            raise ValueError("the data scale must be one positive number")
        self.data_shift.copy_(torch.as_tensor(shift, dtype=self.data_shift.dtype))
        self.data_scale.copy_(scale.reshape(()))

    def fit_transform(self, x_train: Tensor) -> None:
        self.set_data_transform(*standardization(x_train))

    def transform(self, x: Tensor) -> Tensor:
        return (x - self.data_shift) / self.data_scale

    def log_prob(self, x_obs: Tensor, params: Tensor) -> Tensor:
        loc = params.float()
        log_scale = self.log_scale.clamp(*LOG_SCALE_BOUNDS)
        resid = (x_obs - loc) * torch.exp(-log_scale)
        return (-0.5 * resid.pow(2).sum(-1) - log_scale.sum()
                - 0.5 * self.data_dim * LOG_2PI - self.data_dim * torch.log(self.data_scale))

    def mean(self, params: Tensor) -> Tensor:
        return self.data_shift + self.data_scale * params
