"""Run directories: what a run writes and how a model is rebuilt from them.

    DIR/config.json       resolved FitConfig (+ data description)
    DIR/checkpoint.pt     latest checkpoint (model, optimizer, scheduler, step, RNG states)
    DIR/metrics.jsonl     one row per logging step
    DIR/metrics.json      final metrics
    DIR/embedding/        the learned embedding, when one was trained for this run
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..embeddings import EmbedConfig, LearnedEmbedding, fit_learned_embedding, load_embedding
from ..embeddings.learned import save_embedding
from ..embeddings.quality import embedding_quality
from ..errors import CheckpointError, UsageError
from ..manifolds import parse_latent
from ..models import VAE
from ..models.vae import parse_model_latent
from .checkpoint import safe_torch_load
from .config import FitConfig, config_from

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
CHECKPOINT_FORMAT = "manifold-vae/run"
RESTARTS = "restarts"          # a run's restart phase: RESTARTS/restart<r>/ (checkpoint, metrics.jsonl)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def build_model(config: FitConfig, data_dim: int, *, embedding: torch.nn.Module | None = None
                ) -> VAE:
    """The untrained model a config describes (``embedding``: a ready learned embedding)."""
    try:
        family, manifold = parse_model_latent(config.latent)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if family and (config.group_action or config.embedding != "exact"):
        raise UsageError(f"the {family} posterior lives on the sphere itself: it takes no "
                         "--group-action and no learned embedding")
    if config.group_action and manifold.group_param_dim == 0:
        raise UsageError(f"latent {manifold.spec} has no group action; drop --group-action")
    try:
        return VAE(data_dim, config.latent, embedding=embedding, group_action=config.group_action,
                   hidden=config.hidden, activation=config.activation,
                   likelihood=config.likelihood, network=config.network,
                   image_shape=config.image_shape or None, conv_channels=config.conv_channels,
                   encoder_symmetry=config.encoder_symmetry,
                   centred_posterior=config.centred_posterior,
                   compact_hidden=config.compact_hidden,
                   init_concentration=config.init_concentration)
    except ValueError as err:
        raise UsageError(str(err)) from None


def prepare_embedding(config: FitConfig, run_dir: Path | None, *, log=print):
    """The embedding a config asks for: ``None`` (exact), a freshly trained or a loaded one."""
    if config.embedding == "exact":
        return None
    try:
        family, manifold = parse_model_latent(config.latent)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if family:
        raise UsageError(f"the {family} posterior lives on the sphere itself: it takes no "
                         "learned embedding")
    if config.embedding == "learned":
        if not any(f.compact for f in manifold.factors()):
            raise UsageError(f"a learned embedding needs a compact factor (S<n>, T<k>, SO3), "
                             f"got {manifold.spec}")
        ecfg = EmbedConfig(latent=manifold.spec, hidden=list(config.embed_hidden),
                           steps=config.embed_steps, seed=config.seed)
        log(f"training a learned embedding for {manifold.spec} (WAE-MMD, {ecfg.steps} steps)")
        emb, _ = fit_learned_embedding(ecfg)
        report = embedding_quality(emb, manifold)
        if run_dir is not None:
            save_embedding(emb, run_dir / "embedding", report=report, config=ecfg)
        return emb
    return load_embedding(config.embedding, expect=manifold)


def embedding_skeleton(config: FitConfig, arch: dict | None):
    """An embedding module of the saved architecture, to receive a checkpoint's weights."""
    if not arch or arch.get("kind") == "exact":
        return None
    return LearnedEmbedding(parse_latent(config.latent), arch["hidden"], arch["activation"],
                            encoder_activation=arch.get("encoder_activation", arch["activation"]))


def embedding_arch(model: VAE) -> dict:
    emb = model.embedding
    if isinstance(emb, LearnedEmbedding):
        return {"kind": "learned", "hidden": list(emb.hidden), "activation": emb.activation,
                "encoder_activation": emb.encoder_activation}
    return {"kind": "exact"}


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The checkpoint of a run directory, checked to be a manifold-vae checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    ckpt = safe_torch_load(run_dir / CHECKPOINT)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{run_dir / CHECKPOINT}: not a manifold-vae checkpoint")
    return ckpt


def resumable_config(run_dir: str | os.PathLike) -> dict:
    """The config of the run to continue in ``run_dir``: its checkpoint's, or — interrupted in
    its restart phase, before the top-level checkpoint exists — its ``config.json``'s."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file() and (run_dir / RESTARTS).is_dir():
        try:
            return json.loads((run_dir / CONFIG).read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{run_dir}: interrupted in its restart phase but "
                                  f"{CONFIG} is missing or unreadable") from None
    return load_checkpoint(run_dir)["config"]


def model_from_checkpoint(ckpt: dict, *, where: str = "checkpoint") -> tuple[VAE, FitConfig]:
    """Rebuild the trained model and its config from a loaded checkpoint."""
    try:
        config = config_from(FitConfig, base=ckpt["config"])
        data_dim = int(ckpt["data_dim"])
        model = build_model(config, data_dim, embedding=embedding_skeleton(config, ckpt.get("embedding")))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, UsageError) as err:
        raise CheckpointError(f"{where}: checkpoint does not describe a model ({err})") from None
    except RuntimeError as err:
        raise CheckpointError(f"{where}: checkpoint weights do not match its config "
                              f"({str(err).splitlines()[0][:200]})") from None
    model.embedding.requires_grad_(False)
    return model, config


def load_run(run_dir: str | os.PathLike) -> tuple[VAE, FitConfig, dict]:
    """``(model, config, checkpoint)`` of a saved run, in eval mode."""
    ckpt = load_checkpoint(run_dir)
    model, config = model_from_checkpoint(ckpt, where=str(run_dir))
    model.eval()
    return model, config, ckpt
