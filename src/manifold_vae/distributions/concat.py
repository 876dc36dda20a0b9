"""A distribution over a vector made of independent blocks, each with its own distribution.

Used for product latents such as ``S1xR2`` whose hidden space is a box block followed by a
Gaussian block. Each block has event shape ``(size_i,)``; the whole has event shape
``(Σ size_i,)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.distributions import Distribution, constraints, kl_divergence, register_kl


class ConcatIndependent(Distribution):
    """Concatenation of independent blocks ``[X_1, …, X_r]``; log-density is the sum."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, blocks: Sequence[Distribution], validate_args=None):
        self.blocks = list(blocks)
        self.sizes = [b.event_shape[-1] for b in self.blocks]
        batch_shape = torch.broadcast_shapes(*(b.batch_shape for b in self.blocks))
        super().__init__(batch_shape, torch.Size([sum(self.sizes)]), validate_args=False)

    @property
    def has_rsample(self):
        return all(b.has_rsample for b in self.blocks)

    def rsample(self, sample_shape=torch.Size()):
        return torch.cat([b.rsample(sample_shape) for b in self.blocks], -1)

    def sample(self, sample_shape=torch.Size()):
        return torch.cat([b.sample(sample_shape) for b in self.blocks], -1)

    def log_prob(self, value):
        parts = torch.split(value, self.sizes, -1)
        return sum(b.log_prob(p) for b, p in zip(self.blocks, parts))

    def entropy(self):
        return sum(b.entropy() for b in self.blocks)

    @property
    def mean(self):
        return torch.cat([b.mean for b in self.blocks], -1)

    def expand(self, batch_shape, _instance=None):
        return ConcatIndependent([b.expand(batch_shape) for b in self.blocks])


@register_kl(ConcatIndependent, ConcatIndependent)
def _kl_concat(p: ConcatIndependent, q: ConcatIndependent):
    if p.sizes != q.sizes:
        raise ValueError(f"block sizes differ: {p.sizes} vs {q.sizes}")
    return sum(kl_divergence(a, b) for a, b in zip(p.blocks, q.blocks))
