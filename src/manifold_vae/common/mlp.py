"""The plain multi-layer perceptron that encoders, decoders and learned embeddings are made of."""
from __future__ import annotations

from typing import Sequence

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def activation_class(name: str) -> type[nn.Module]:
    """The activation module class called ``name``; ValueError naming the choices otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Sequential):
    """``in -> [Linear -> activation] * len(hidden) -> Linear -> out``.

    Example::

        >>> import torch
        >>> MLP(100, [256, 256], 4)(torch.zeros(8, 100)).shape
        torch.Size([8, 4])
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *,
                 activation: str = "relu", zero_last: bool = False):
        act = activation_class(activation)
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            # in place where it can be (ReLU): one memory pass fewer per layer, same gradients
            layers += [nn.Linear(width, h), act(inplace=True) if act is nn.ReLU else act()]
            width = h
        last = nn.Linear(width, out_dim)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, list(hidden)
