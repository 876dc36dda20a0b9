"""Exact embeddings ``f: Z -> M`` that push the hidden prior onto the uniform distribution."""
from __future__ import annotations

from torch import Tensor, nn

from ..manifolds import Manifold


class ExactEmbedding(nn.Module):
    """``f = manifold.exact_map`` (e.g. ``z -> (cos 2πz, sin 2πz)`` on the circle); no parameters."""

    kind = "exact"

    def __init__(self, manifold: Manifold):
        super().__init__()
        self.manifold = manifold

    def forward(self, z: Tensor) -> Tensor:
        return self.manifold.exact_map(z)

    def arch(self) -> dict:
        return {"kind": "exact"}
