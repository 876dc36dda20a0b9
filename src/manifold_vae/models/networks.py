"""Plain networks shared by every model, so that comparisons between latent spaces are fair."""
from __future__ import annotations

from typing import Sequence

from torch import nn


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


class MLP(nn.Sequential):
    """``in -> [Linear -> ReLU] * len(hidden) -> Linear -> out``.

    Example::

        >>> MLP(100, [256, 256], 4)(torch.zeros(8, 100)).shape
        torch.Size([8, 4])
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *,
                 activation: str = "relu", zero_last: bool = False):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        last = nn.Linear(width, out_dim)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, list(hidden)
