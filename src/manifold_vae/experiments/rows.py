"""The rows of the suites' tables: which model each is, defined once.

A :class:`Row` names a model by its latent (a :class:`~manifold_vae.latents.LatentSpec`, whose
``is_bound`` is the one rule for whether the row's IWAE is a likelihood bound) and becomes a run
config by :meth:`Row.config`. The flat baselines and the spherical peers that several suites
show are made here (:func:`gaussian_rows`, :func:`sphere_peer_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..latents import LatentSpec
from ..manifolds import parse_latent
from ..training import FitConfig


@dataclass(frozen=True)
class Row:
    """One model of a table: ``key`` (run folders, results), ``name`` (tables) and its latent."""

    key: str
    name: str
    latent: LatentSpec

    @classmethod
    def of(cls, key: str, name: str, latent: str, **options) -> "Row":
        return cls(key, name, LatentSpec(latent, **options))

    @property
    def valid_bound(self) -> bool:
        """Whether this row's IWAE is a bound on its model's likelihood (see
        :attr:`LatentSpec.is_bound`)."""
        return self.latent.is_bound

    @property
    def learned(self) -> bool:
        return self.latent.embedding != "exact"

    def config(self, template: FitConfig, seed: int, *, embedding_dir=None) -> FitConfig:
        """The run config of this row: ``template`` with this latent and ``seed`` (a learned
        embedding is the suite's shared one in ``embedding_dir``)."""
        latent = self.latent
        if self.learned:
            latent = latent.replace(embedding=str(embedding_dir))
        return template.replace(latent=latent, seed=seed,
                                checkpoint_every=max(1, template.steps // 4))

    def to_dict(self) -> dict:
        """What results tables record of the row."""
        return {"key": self.key, "name": self.name, "latent": self.latent.name,
                "embedding": "learned" if self.learned else "exact",
                "group_action": self.latent.group_action,
                "compact_hidden": self.latent.hidden, "valid_bound": self.valid_bound}


def gaussian_rows(spec: str, *, named: str = "M") -> list[Row]:
    """The flat baselines of a manifold: Gaussian VAEs with ``d = dim(M)`` and ``d = ambient(M)``."""
    m = parse_latent(spec)
    return [Row.of("gauss-dim", f"Gaussian VAE, d={m.dim} = dim({named})", f"R{m.dim}"),
            Row.of("gauss-ambient", f"Gaussian VAE, d={m.ambient_dim} = ambient({named})",
                   f"R{m.ambient_dim}")]


def sphere_peer_rows(sphere: str, *, suffix: str = "") -> list[Row]:
    """The spherical peers on ``sphere``: von Mises–Fisher (S-VAE) and Power Spherical VAEs."""
    return [Row.of("vmf", f"von Mises–Fisher (S-VAE){suffix}", f"vmf:{sphere}"),
            Row.of("powerspherical", f"Power Spherical{suffix}", f"powerspherical:{sphere}")]


def er_rows(spec: str, *, prefix: str = "ER", plain: bool = False, learned: bool = True,
            normal: bool = False) -> list[Row]:
    """ER rows on ``spec``: exact f without group action (``plain``), exact f + group action,
    learned f + group action (``learned``; not a bound), exact f + group action on the normal
    hidden space (``normal``). The others name the Beta box (the suites' tables were measured on
    it; the layer's default on spheres S^n, n >= 2, is the normal hidden space)."""
    box = {"compact_hidden": "box"}
    rows = [Row.of("er-exact", f"{prefix}, exact f", spec, **box)] if plain else []
    rows.append(Row.of("er-exact-ga", f"{prefix}, exact f + group action", spec, group_action=True,
                       **box))
    if learned:
        rows.append(Row.of("er-learned-ga", f"{prefix}, learned f + group action", spec,
                           group_action=True, embedding="learned", **box))
    if normal:
        rows.append(Row.of("er-normal-ga", f"{prefix}, exact f + group action, normal hidden "
                           "(f ∘ Φ)", spec, group_action=True, compact_hidden="normal"))
    return rows
