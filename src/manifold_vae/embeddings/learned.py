"""Learned embeddings: the decoder of a WAE-MMD trained on uniform samples of ``M``.

    min_{E,F}  E_{m~U(M)} ||m - F(E(m))||²  +  λ · MMD_IMQ(E#U(M), p(z))

with ``dim Z = dim M`` and the hidden prior ``p(z) = U(0,1)^d``. The decoder ``F`` then maps the
hidden box onto (approximately) ``M`` and pushes ``p(z)`` to (approximately) ``U(M)``; it is frozen
while a VAE trains on top of it. References: Golikov & Kretov, arXiv:1812.02769 (section 3);
Tolstikhin et al., arXiv:1711.01558.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..manifolds import Manifold, parse_latent
from ..models.networks import MLP
from .mmd import imq_mmd2, imq_scales

EMBEDDING_FORMAT = "manifold-vae/embedding"
EMBEDDING_FILE = "embedding.pt"


@dataclass
class EmbedConfig:
    """Settings of a WAE-MMD embedding fit."""

    latent: str = "S1"
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    activation: str = "silu"
    steps: int = 3000
    batch_size: int = 512
    lr: float = 2e-3
    mmd_weight: float = 100.0
    seed: int = 0


class LearnedEmbedding(nn.Module):
    """``f = F``, the WAE decoder ``[0,1]^d -> R^n``; ``encode`` is the WAE encoder ``E``."""

    kind = "learned"

    def __init__(self, manifold: Manifold, hidden=(128, 128), activation: str = "silu"):
        super().__init__()
        if not manifold.compact:
            raise ValueError(f"a learned embedding needs a compact manifold, got {manifold.spec}")
        self.manifold = manifold
        self.hidden, self.activation = list(hidden), activation
        self.decoder = MLP(manifold.dim, hidden, manifold.ambient_dim, activation=activation)
        self.encoder = MLP(manifold.ambient_dim, hidden, manifold.dim, activation=activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.decoder(2.0 * z - 1.0)

    def encode(self, m: Tensor) -> Tensor:
        return torch.sigmoid(self.encoder(m))


def fit_learned_embedding(config: EmbedConfig, *,
                          callback: Callable[[int, dict], None] | None = None
                          ) -> tuple[LearnedEmbedding, list[dict]]:
    """Train a WAE-MMD on ``U(M)``; returns the frozen embedding and the loss history."""
    manifold = parse_latent(config.latent)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        emb = LearnedEmbedding(manifold, config.hidden, config.activation)
    opt = torch.optim.Adam(emb.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps,
                                                pct_start=0.1)
    scales = imq_scales(1.0 / 12.0, manifold.dim)
    history = []
    for step in range(1, config.steps + 1):
        m = manifold.sample_uniform(config.batch_size, generator=gen)
        z = emb.encode(m)
        rec = emb(z)
        prior = torch.rand(config.batch_size, manifold.dim, generator=gen)
        rec_loss = (rec - m).pow(2).sum(-1).mean()
        mmd = imq_mmd2(z, prior, scales)
        loss = rec_loss + config.mmd_weight * mmd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == config.steps:
            row = {"step": step, "loss": float(loss.detach()), "reconstruction": float(rec_loss.detach()),
                   "mmd": float(mmd.detach())}
            history.append(row)
            if callback is not None:
                callback(step, row)
    emb.requires_grad_(False)
    emb.eval()
    return emb, history


def save_embedding(emb: LearnedEmbedding, directory: str | os.PathLike, *,
                   report: dict | None = None, config: EmbedConfig | None = None) -> Path:
    """Write ``directory/embedding.pt`` (tensors and plain data only, loadable with weights_only)."""
    from ..training.checkpoint import atomic_torch_save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format": EMBEDDING_FORMAT, "version": 1, "manifold": emb.manifold.spec,
               "hidden": list(emb.hidden), "activation": emb.activation,
               "state_dict": emb.state_dict(), "report": report or {},
               "config": dataclasses.asdict(config) if config else {}}
    path = directory / EMBEDDING_FILE
    atomic_torch_save(payload, path)
    return path


def load_embedding(path: str | os.PathLike, *, expect: Manifold | str | None = None
                   ) -> LearnedEmbedding:
    """Load a learned embedding saved by :func:`save_embedding` (a directory or the file).

    Raises ``CheckpointError`` if the file is unsafe, corrupt, or made for a manifold other
    than ``expect``.
    """
    from ..training.checkpoint import safe_torch_load

    path = Path(path)
    if path.is_dir():
        path = path / EMBEDDING_FILE
    payload = safe_torch_load(path, what="embedding")
    if not isinstance(payload, dict) or payload.get("format") != EMBEDDING_FORMAT:
        raise CheckpointError(f"{path}: not a manifold-vae embedding file")
    spec = payload["manifold"]
    if expect is not None:
        want = parse_latent(expect).spec
        if want != spec:
            raise CheckpointError(f"{path}: embedding was trained for {spec}, but the model's "
                                  f"latent is {want}")
    emb = LearnedEmbedding(parse_latent(spec), payload["hidden"], payload["activation"])
    try:
        emb.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: embedding weights do not fit: {str(err).splitlines()[0]}")
    emb.requires_grad_(False)
    emb.eval()
    return emb
