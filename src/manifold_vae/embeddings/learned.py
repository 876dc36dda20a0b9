"""Learned embeddings: the decoder of a WAE-MMD trained on uniform samples of ``M``.

    min_{E,F}  E_{m~U(M)} c(m, F(E(m)))  +  λ · MMD²_IMQ(E#U(M), p(z)),   c(m, m') = ||m - m'||

with ``dim Z = dim M``, the hidden prior ``p(z) = U(0,1)^d``, a sigmoid encoder ``E`` and a decoder
``F``. ``F`` then maps the hidden box onto (approximately) ``M`` and pushes ``p(z)`` to
(approximately) ``U(M)``; it is frozen while a VAE trains on top of it. References: Golikov &
Kretov, arXiv:1812.02769 (section 3); Tolstikhin et al., arXiv:1711.01558 (WAE, any cost ``c``).

A continuous ``E`` cannot map a closed ``M`` (e.g. ``S^1``) bijectively onto the box: it must fold
``M`` or cut it open, and a sharp cut is what we want. Generic, sample-based choices that get one:

* the cost ``c = ||m - m'||`` (smoothed: ``sqrt(||m - m'||² + δ²) - δ``), the W1 case of the WAE.
  With ``||·||²``, ``F(z)`` is the *mean* of the points encoded to ``z`` (a chord through a fold,
  off ``M``); with ``||·||`` it is their *median*, i.e. the majority branch, so folds unwind into a
  cut and the few points inside the cut do not pull ``F`` off ``M``;
* ``λ`` rises geometrically from ``mmd_weight_start`` to ``mmd_weight`` over ``mmd_ramp`` (fractions
  of the WAE phase): a fold with a uniform code is a stationary point of a large-λ loss, and a large
  λ widens the cut, so the encoder cuts first and the code is made uniform afterwards;
* a ReLU encoder (sharp cuts) and a smooth SiLU decoder (smooth volume element).

A last phase (``decoder_fraction`` of the steps) refines ``F`` alone, ``E`` frozen, with an
ambient-space MMD that also stretches ``F`` over the cut:

    min_F  E_{m~U(M)} c(m, F(E(m)))  +  μ · MMD²_IMQ(F#p(z), U(M)).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..common.files import atomic_torch_save, safe_torch_load
from ..common.mlp import MLP
from ..errors import CheckpointError
from ..manifolds import Manifold, Product, parse_latent
from .mmd import DEFAULT_SCALE_FACTORS, imq_mmd2_loss, imq_scales

EMBEDDING_FORMAT = "manifold-vae/embedding"
EMBEDDING_FILE = "embedding.pt"


@dataclass
class EmbedConfig:
    """Settings of a WAE-MMD embedding fit (phases and formulas: see the module docstring)."""

    latent: str = "S1"
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    activation: str = "silu"             # decoder F (= the embedding f)
    encoder_activation: str = "relu"     # encoder E
    steps: int = 2000                    # both phases together
    batch_size: int = 128
    lr: float = 1e-2                     # peak lr of the WAE phase (10% warm-up, cosine decay)
    cost: str = "norm"                   # c(m, m') = ||m - m'|| ("norm") or ||m - m'||² ("squared")
    cost_delta: float = 1e-2             # δ of the smoothed norm, × the RMS radius of U(M)
    mmd_weight: float = 10.0             # λ after the ramp
    mmd_weight_start: float = 1.0        # λ before the ramp
    mmd_ramp: tuple[float, float] = (0.3, 0.8)
    mmd_scales: tuple[float, ...] = DEFAULT_SCALE_FACTORS   # IMQ scales C = 2·dim·variance·factor
    decoder_fraction: float = 0.25       # share of the steps that refine F alone
    decoder_lr: float = 1e-3
    ambient_mmd_weight: float = 1.0      # μ
    # hidden coordinates (of the compact part) that are circles: F sees (cos 2πz_j, sin 2πz_j)
    # and E reads an angle, so F is continuous across z_j = 0 ≡ 1 (see LearnedEmbedding)
    periodic: list[int] = field(default_factory=list)
    # two hidden coordinates [radial, angular] read as a disk: F sees the point
    # sqrt(z_r)·(cos 2πz_a, sin 2πz_a) (uniform on the disk), E reads it back (see LearnedEmbedding)
    disk: list[int] = field(default_factory=list)
    seed: int = 0


def compact_part(manifold: Manifold) -> Manifold | None:
    """The product of the compact factors of ``manifold`` (``None`` if it has none)."""
    factors = [f for f in manifold.factors() if f.compact]
    if not factors:
        return None
    return factors[0] if len(factors) == 1 else Product(factors)


def periodic_coordinates(manifold: Manifold, periodic) -> tuple[int, ...]:
    """``periodic`` checked against the compact part of ``manifold`` (distinct hidden coordinates
    in ``0..d−1``), sorted; ``ValueError`` naming the range otherwise."""
    learned = compact_part(manifold)
    d = learned.dim if learned is not None else 0
    chosen = [int(j) for j in periodic]
    if len(set(chosen)) != len(chosen) or any(not 0 <= j < d for j in chosen):
        raise ValueError(f"must be distinct hidden coordinates in 0..{d - 1} (the compact part of "
                         f"{manifold.spec} has {d}), got {list(periodic)}")
    return tuple(sorted(chosen))


def disk_coordinates(manifold: Manifold, disk, periodic=()) -> tuple[int, ...]:
    """``disk`` checked against the compact part of ``manifold``: empty, or two distinct hidden
    coordinates ``[radial, angular]`` in ``0..d−1`` that are not ``periodic``; ``ValueError``
    naming the problem otherwise."""
    learned = compact_part(manifold)
    d = learned.dim if learned is not None else 0
    chosen = [int(j) for j in disk]
    if not chosen:
        return ()
    if len(chosen) != 2 or chosen[0] == chosen[1] or any(not 0 <= j < d for j in chosen):
        raise ValueError(f"must be two distinct hidden coordinates [radial, angular] in "
                         f"0..{d - 1} (the compact part of {manifold.spec} has {d}), got {list(disk)}")
    if set(chosen) & set(int(j) for j in periodic):
        raise ValueError(f"{list(disk)} overlaps the periodic coordinates {list(periodic)}")
    return tuple(chosen)


class LearnedEmbedding(nn.Module):
    """``f = F``, the WAE decoder ``[0,1]^d -> R^n``; ``encode`` is the WAE encoder ``E``.

    On a product with Euclidean factors (e.g. ``S1xR2``) ``F`` is learned for the product of the
    compact factors (``learned_manifold``) and the Euclidean factors keep the identity map.

    ``periodic`` hidden coordinates are circles: ``F`` sees ``(cos 2πz_j, sin 2πz_j)`` instead of
    ``2z_j − 1`` and ``E`` outputs an angle for them (``atan2`` of two numbers, mod 1), so a loop of
    ``M`` can map onto the hidden circle without a cut — the box ``[0,1]²`` with both coordinates
    periodic is the torus, with one the cylinder, whose ends the Klein bottle glues with a flip.
    The ER latent gives such a coordinate a wrapped posterior (shifted mod 1; the uniform prior
    and the KL are unchanged).

    A ``disk`` pair ``[r, a]`` of hidden coordinates is read as the unit disk: ``F`` sees
    ``sqrt(z_r)·(cos 2πz_a, sin 2πz_a)``, which is uniform on the disk when ``z`` is uniform (area
    element ``π``, constant), and ``E`` outputs a radius (sigmoid) and an angle. The edge
    ``z_r = 0`` closes to the centre and the boundary circle is free for ``F`` to glue: the
    projective plane is the disk with antipodal boundary points glued, a gluing with no corner,
    whereas any square picture of it has two corners of total angle π that no smooth map with a
    constant volume element can close. The angular coordinate has a wrapped posterior.
    """

    kind = "learned"

    def __init__(self, manifold: Manifold, hidden=(128, 128), activation: str = "silu", *,
                 encoder_activation: str = "relu", periodic=(), disk=()):
        super().__init__()
        learned = compact_part(manifold)
        if learned is None:
            raise ValueError(f"a learned embedding needs a compact factor, got {manifold.spec}")
        d = learned.dim
        try:
            self.periodic = periodic_coordinates(manifold, periodic)
        except ValueError as err:
            raise ValueError(f"periodic hidden coordinates {err}") from None
        try:
            self.disk = disk_coordinates(manifold, disk, self.periodic)
        except ValueError as err:
            raise ValueError(f"disk hidden coordinates {err}") from None
        self._flat = tuple(j for j in range(d) if j not in self.periodic and j not in self.disk)
        # E's outputs: flat coordinates, then the periodic ones, then the disk's radius and angle;
        # _unsort puts them back in coordinate order
        order = list(self._flat) + list(self.periodic) + list(self.disk)
        self.register_buffer("_unsort", torch.tensor([order.index(j) for j in range(d)],
                                                     dtype=torch.long), persistent=False)
        self.manifold = manifold
        self.learned_manifold = learned
        self.hidden, self.activation = list(hidden), activation
        self.encoder_activation = encoder_activation
        n_in = len(self._flat) + 2 * len(self.periodic) + (2 if self.disk else 0)   # F's features
        self.decoder = MLP(n_in, hidden, learned.ambient_dim, activation=activation)
        self.encoder = MLP(learned.ambient_dim, hidden, n_in + (1 if self.disk else 0),
                           activation=encoder_activation)
        self._layout = [(f.compact, f.dim, f.ambient_dim) for f in manifold.factors()]
        self._mixed = not all(c for c, _, _ in self._layout)

    @property
    def wrapped_hidden(self) -> tuple[int, ...]:
        """The periodic coordinates as indices of the whole manifold's hidden coordinates (the
        compact factors' own, Euclidean factors skipped), as ``Manifold.wrapped_hidden``."""
        compact, offset = [], 0
        for is_compact, dim, _ in self._layout:
            if is_compact:
                compact += range(offset, offset + dim)
            offset += dim
        return tuple(compact[j] for j in self.periodic + self.disk[1:])

    def features(self, z: Tensor) -> Tensor:
        """What ``F`` reads of hidden box coordinates ``z``: ``2z − 1`` for the flat ones,
        ``(cos 2πz_j, sin 2πz_j)`` for each periodic one and ``sqrt(z_r)·(cos 2πz_a, sin 2πz_a)``
        for a disk pair."""
        if not self.periodic and not self.disk:
            return 2.0 * z - 1.0
        parts = [2.0 * z[..., list(self._flat)] - 1.0]
        if self.periodic:
            angle = 2.0 * math.pi * z[..., list(self.periodic)]
            parts += [torch.cos(angle), torch.sin(angle)]
        if self.disk:
            r, a = self.disk
            # floored so that the gradient to z (for the ER encoder) stays finite at z_r = 0
            radius = z[..., r:r + 1].clamp_min(1e-12).sqrt()
            angle = 2.0 * math.pi * z[..., a:a + 1]
            parts += [radius * torch.cos(angle), radius * torch.sin(angle)]
        return torch.cat(parts, -1)

    def feature_variance(self) -> float:
        """The mean variance of a feature of :meth:`features` under the uniform box: ``1/3`` for
        ``2z − 1``, ``1/2`` for a cosine or sine, ``1/4`` for a disk coordinate."""
        n_disk = 2 if self.disk else 0
        return (len(self._flat) / 3.0 + len(self.periodic) + n_disk / 4.0) / self.decoder.in_dim

    def compact(self, z: Tensor) -> Tensor:
        """``F(z)`` on the compact factors (hidden coordinates in ``[0,1]``)."""
        return self.decoder(self.features(z))

    def forward(self, z: Tensor) -> Tensor:
        if not self._mixed:
            return self.compact(z)
        blocks = torch.split(z, [d for _, d, _ in self._layout], dim=-1)
        learned = self.compact(torch.cat([b for b, (c, _, _) in zip(blocks, self._layout) if c], -1))
        parts = iter(torch.split(learned, [a for c, _, a in self._layout if c], dim=-1))
        return torch.cat([next(parts) if c else b for b, (c, _, _) in zip(blocks, self._layout)], -1)

    def encode(self, m: Tensor) -> Tensor:
        """``E(m)`` for points ``m`` of the compact factors (periodic coordinates: an angle / 2π,
        mod 1)."""
        out = self.encoder(m)
        if not self.periodic and not self.disk:
            return torch.sigmoid(out)
        nf, p = len(self._flat), len(self.periodic)
        parts = [torch.sigmoid(out[..., :nf])]
        if p:
            turn = torch.atan2(out[..., nf + p:nf + 2 * p], out[..., nf:nf + p]) / (2.0 * math.pi)
            parts.append(torch.remainder(turn, 1.0))
        if self.disk:
            k = nf + 2 * p
            turn = torch.atan2(out[..., k + 2:k + 3], out[..., k + 1:k + 2]) / (2.0 * math.pi)
            parts += [torch.sigmoid(out[..., k:k + 1]), torch.remainder(turn, 1.0)]
        return torch.cat(parts, -1).index_select(-1, self._unsort)

    def arch(self) -> dict:
        """The architecture in plain data (saved with checkpoints; :meth:`from_arch` rebuilds)."""
        return {"kind": "learned", "hidden": list(self.hidden), "activation": self.activation,
                "encoder_activation": self.encoder_activation, "periodic": list(self.periodic),
                "disk": list(self.disk)}

    @classmethod
    def from_arch(cls, manifold: Manifold | str, arch: dict) -> "LearnedEmbedding":
        """An untrained embedding of the saved architecture, to receive saved weights."""
        return cls(parse_latent(manifold), arch["hidden"], arch["activation"],
                   encoder_activation=arch.get("encoder_activation", arch["activation"]),
                   periodic=arch.get("periodic", ()), disk=arch.get("disk", ()))


def _check_config(config: EmbedConfig) -> None:
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError("EmbedConfig: steps must be >= 1 and batch_size >= 2")
    if config.cost not in ("norm", "squared"):
        raise ValueError(f"EmbedConfig: cost must be 'norm' or 'squared', got {config.cost!r}")
    if not 0.0 <= config.decoder_fraction < 1.0:
        raise ValueError("EmbedConfig: decoder_fraction must be in [0, 1)")
    r0, r1 = config.mmd_ramp
    if not 0.0 <= r0 <= r1 <= 1.0:
        raise ValueError("EmbedConfig: mmd_ramp must be (start, end) with 0 <= start <= end <= 1")
    if min(config.lr, config.decoder_lr, config.mmd_weight, config.mmd_weight_start) <= 0:
        raise ValueError("EmbedConfig: lr, decoder_lr and the MMD weights must be positive")
    if config.cost_delta <= 0 or config.ambient_mmd_weight < 0 or not config.mmd_scales:
        raise ValueError("EmbedConfig: cost_delta must be positive, ambient_mmd_weight >= 0, "
                         "and mmd_scales non-empty")


def _adam(params, lr: float) -> torch.optim.Adam:
    try:  # one fused kernel per step instead of a loop over the parameters (torch >= 2.4 on CPU)
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _cosine(opt, steps: int, warmup: int = 0, floor: float = 1e-3):
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``floor·lr``."""
    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        t = min(1.0, (i - warmup) / max(1, steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _ramp(t: float, r0: float, r1: float) -> float:
    """0 before ``r0``, 1 after ``r1``, linear in between."""
    if r1 <= r0:
        return float(t >= r0)
    return min(1.0, max(0.0, (t - r0) / (r1 - r0)))


def fit_learned_embedding(config: EmbedConfig, *,
                          callback: Callable[[int, dict], None] | None = None
                          ) -> tuple[LearnedEmbedding, list[dict]]:
    """Train a WAE-MMD on ``U(M)``, then refine its decoder alone; returns the frozen embedding
    and the loss history (a row every 100 steps and at the end of each phase)."""
    _check_config(config)
    try:
        full = parse_latent(config.latent)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            emb = LearnedEmbedding(full, config.hidden, config.activation,
                                   encoder_activation=config.encoder_activation,
                                   periodic=config.periodic, disk=config.disk)
    except ValueError as err:
        raise ValueError(f"EmbedConfig: {err}") from None
    manifold = emb.learned_manifold          # Euclidean factors keep the identity map
    d, batch = manifold.dim, config.batch_size
    gen = torch.Generator().manual_seed(config.seed)
    # IMQ scales around the heuristic 2·dim·variance: U(0,1) has variance 1/12 per coordinate;
    # the per-coordinate variance of U(M) is estimated from a sample
    # with periodic or disk coordinates the codes are compared as F reads them (circles as
    # circles, the disk as a disk)
    if emb.periodic or emb.disk:
        code = emb.features           # F's input: its width is the number of features
        hidden_scales = imq_scales(emb.feature_variance(), emb.decoder.in_dim, config.mmd_scales)
    else:
        code = lambda z: z          # noqa: E731
        hidden_scales = imq_scales(1.0 / 12.0, d, config.mmd_scales)
    ambient_var = float(manifold.sample_uniform(4096, generator=gen).var(0).mean())
    ambient_scales = imq_scales(ambient_var, manifold.ambient_dim, config.mmd_scales)
    delta = config.cost_delta * math.sqrt(ambient_var * manifold.ambient_dim)

    def cost(rec: Tensor, m: Tensor) -> Tensor:
        sq = (rec - m).pow(2).sum(-1)
        return sq.mean() if config.cost == "squared" else ((sq + delta ** 2).sqrt() - delta).mean()

    wae_steps = max(1, config.steps - int(round(config.decoder_fraction * config.steps)))
    dec_steps = config.steps - wae_steps
    history: list[dict] = []

    def log(step: int, **row) -> None:
        row = {"step": step, **{k: float(v) for k, v in row.items()}}
        history.append(row)
        if callback is not None:
            callback(step, row)

    # phase 1: WAE-MMD, encoder and decoder
    lam0, lam1 = config.mmd_weight_start, config.mmd_weight
    opt = _adam(emb.parameters(), config.lr)
    sched = _cosine(opt, wae_steps, warmup=max(1, wae_steps // 10))
    for step in range(1, wae_steps + 1):
        lam = lam0 * (lam1 / lam0) ** _ramp(step / wae_steps, *config.mmd_ramp)
        m = manifold.sample_uniform(batch, generator=gen)
        z = emb.encode(m)
        rec_loss = cost(emb.compact(z), m)
        logging = step % 100 == 0 or step == wae_steps
        # the prior-prior term is constant: computed only when the value is logged
        mmd = imq_mmd2_loss(code(z), code(torch.rand(batch, d, generator=gen)), hidden_scales,
                            with_y_term=logging)
        loss = rec_loss + lam * mmd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if logging:
            log(step, loss=loss.detach(), reconstruction=rec_loss.detach(), mmd=mmd.detach(),
                mmd_weight=lam)

    # phase 2: F alone, reconstruction + μ · MMD²(F#p(z), U(M)) in the ambient space
    if dec_steps > 0:
        emb.encoder.requires_grad_(False)
        opt = _adam(emb.decoder.parameters(), config.decoder_lr)
        sched = _cosine(opt, dec_steps)
        for i in range(1, dec_steps + 1):
            m = manifold.sample_uniform(batch, generator=gen)
            with torch.no_grad():
                z = emb.encode(m)
            out = emb.compact(torch.cat([z, torch.rand(batch, d, generator=gen)]))  # one decoder pass
            rec_loss = cost(out[:batch], m)
            logging = (wae_steps + i) % 100 == 0 or i == dec_steps
            mmd = imq_mmd2_loss(out[batch:], manifold.sample_uniform(batch, generator=gen),
                                ambient_scales, with_y_term=logging)
            loss = rec_loss + config.ambient_mmd_weight * mmd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if logging:
                log(wae_steps + i, loss=loss.detach(), reconstruction=rec_loss.detach(),
                    ambient_mmd=mmd.detach())
    emb.requires_grad_(False)
    emb.eval()
    return emb, history


def save_embedding(emb: LearnedEmbedding, directory: str | os.PathLike, *,
                   report: dict | None = None, config: EmbedConfig | None = None) -> Path:
    """Write ``directory/embedding.pt`` (tensors and plain data only, loadable with weights_only)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format": EMBEDDING_FORMAT, "version": 1, "manifold": emb.manifold.spec,
               **emb.arch(), "state_dict": emb.state_dict(), "report": report or {},
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
    emb = LearnedEmbedding.from_arch(spec, payload)
    try:
        emb.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: embedding weights do not fit: {str(err).splitlines()[0]}")
    emb.requires_grad_(False)
    emb.eval()
    emb.report = payload.get("report") or {}       # the quality report it was saved with
    return emb
