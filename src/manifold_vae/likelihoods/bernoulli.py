"""Bernoulli likelihood with dynamic binarization (Salakhutdinov & Murray 2008).

Data are pixel probabilities in ``[0, 1]``; a training step scores a fresh binary image
``x ~ Bernoulli(pixel)`` each time it sees a row, and held-out rows are binarized once with a
fixed seed so that every model is scored on the same binary data:

    log p(x | m) = Σ_i x_i log σ(ℓ_i) + (1 - x_i) log σ(-ℓ_i)     (decoder logits ℓ)
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError
from .base import Likelihood


def fixed_binarization(x: Tensor, seed: int) -> Tensor:
    """``x ~ Bernoulli(x)`` drawn once from ``seed`` (binary input is returned unchanged)."""
    if bool(((x == 0) | (x == 1)).all()):
        return x
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x.cpu(), generator=gen).to(x.device)


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder.

    Example::

        >>> lik = BernoulliLikelihood(4)
        >>> lik.log_prob(torch.ones(2, 4), torch.zeros(2, 4))
        tensor([-2.7726, -2.7726])
    """

    name = "bernoulli"

    def observe(self, x: Tensor) -> Tensor:
        return torch.bernoulli(x) if self.training else x

    def log_prob(self, x_obs: Tensor, params: Tensor) -> Tensor:
        logits = params.float()
        return -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x_obs.expand_as(logits), reduction="none").sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def check_data(self, x: Tensor, name: str = "data") -> None:
        if bool((x < 0).any() or (x > 1).any()):
            raise DataError(f"a Bernoulli likelihood needs {name} in [0, 1]; values range "
                            f"over [{float(x.min()):.3g}, {float(x.max()):.3g}]")

    def fix_observations(self, x: Tensor, seed: int) -> Tensor:
        return fixed_binarization(x, seed)
