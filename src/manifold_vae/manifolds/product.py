"""Products of manifolds, e.g. ``S1xR2`` or ``T2xR4``.

Points are the concatenation of the factors' ambient coordinates; the hidden space is the
concatenation of the factors' hidden spaces (each keeps its own prior/posterior pair); the
group is the product of the factors' groups, acting factor by factor (a factor with no group is
left as it is).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .base import ExactMap, GroupAction, Manifold


class Product(Manifold, ExactMap, GroupAction):
    """Cartesian product ``M_1 × … × M_r`` of manifolds: it has an exact map when every factor
    has one and a group when any factor has one (the others are left as they are)."""

    def __init__(self, factors: Sequence[Manifold]):
        if len(factors) < 2:
            raise ValueError("a product needs at least two factors")
        self._factors = tuple(factors)
        self.spec = "x".join(f.spec for f in self._factors)
        self.dim = sum(f.dim for f in self._factors)
        self.ambient_dim = sum(f.ambient_dim for f in self._factors)
        self.group_param_dim = sum(f.group_param_dim for f in self._factors)
        self.compact = all(f.compact for f in self._factors)
        offsets = [sum(f.dim for f in self._factors[:i]) for i in range(len(self._factors))]
        self.wrapped_hidden = tuple(o + j for o, f in zip(offsets, self._factors)
                                    for j in f.wrapped_hidden)
        # one hidden space serves every compact factor: the normal one only where all prefer it
        compact = [f for f in self._factors if f.compact]
        self.preferred_hidden = ("normal" if compact and all(f.preferred_hidden == "normal"
                                                             for f in compact) else "box")

    def factors(self):
        return self._factors

    @property
    def has_exact_map(self) -> bool:
        return all(f.has_exact_map for f in self._factors)

    @property
    def has_group(self) -> bool:
        return any(f.has_group for f in self._factors)

    @property
    def has_quadrature(self) -> bool:
        return False

    @property
    def has_chart(self) -> bool:
        return False

    @property
    def hidden_kinds(self):
        return tuple(k for f in self._factors for k in f.hidden_kinds)

    def _split(self, x: Tensor, sizes: Sequence[int]):
        return torch.split(x, list(sizes), dim=-1)

    def volume(self) -> float:
        return math.prod(f.volume() for f in self._factors)

    def sample_uniform(self, n, *, generator=None, dtype=torch.float32):
        return torch.cat([f.sample_uniform(n, generator=generator, dtype=dtype)
                          for f in self._factors], -1)

    def sample_prior(self, n, *, generator=None, dtype=torch.float32):
        """Each factor's own prior (``U`` on compact factors, ``N(0, I)`` on Euclidean ones)."""
        return torch.cat([f.sample_prior(n, generator=generator, dtype=dtype)
                          for f in self._factors], -1)

    def project(self, x):
        parts = self._split(x, [f.ambient_dim for f in self._factors])
        return torch.cat([f.project(p) for f, p in zip(self._factors, parts)], -1)

    def exact_map(self, z):
        if not self.has_exact_map:
            raise ValueError(f"{self.spec}: a factor has no exact map; use a learned embedding")
        parts = self._split(z, [f.dim for f in self._factors])
        return torch.cat([f.exact_map(p) for f, p in zip(self._factors, parts)], -1)

    def group_element(self, params):
        parts = self._split(params, [f.group_param_dim for f in self._factors])
        return tuple(f.group_element(p) if f.group_param_dim else None
                     for f, p in zip(self._factors, parts))

    def act(self, g, x):
        parts = self._split(x, [f.ambient_dim for f in self._factors])
        return torch.cat([p if gi is None else f.act(gi, p)
                          for f, gi, p in zip(self._factors, g, parts)], -1)

    def random_group_element(self, n, *, generator=None, dtype=torch.float32):
        return tuple(f.random_group_element(n, generator=generator, dtype=dtype)
                     if f.group_param_dim else None for f in self._factors)
