"""A run directory: the one place that knows a run's file names and how to read and write them.

    DIR/config.json            the resolved run config (+ what data it was trained on)
    DIR/checkpoint.pt          latest checkpoint (model, optimizer, scheduler, step, RNG states)
    DIR/metrics.jsonl          one row per logging step
    DIR/metrics.json           final metrics
    DIR/test_per_example.npy   per-example test ELBO and IWAE (2 × n_test)
    DIR/test_index.npy         which rows of the data file were the test split
    DIR/evaluation.json        the last ``evaluate`` of the run
    DIR/embedding/             the learned embedding, when one was trained for this run
    DIR/restarts/restart<r>/   each restart of the restart phase (a run directory of its own)
    DIR/tensorboard/           TensorBoard events, when asked for
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..common.files import atomic_torch_save, read_json, safe_torch_load, save_arrays, write_json
from ..embeddings import LearnedEmbedding
from ..errors import CheckpointError, UsageError
from ..models import VAE, build_model
from .config import FitConfig

CHECKPOINT_FORMAT = "manifold-vae/run"
CHECKPOINT_VERSION = 2     # 1: flat config, one VAE class (state keys without latent./likelihood.)


class RunDirectory:
    """The files of one run in ``path`` (see the module docstring)."""

    CONFIG = "config.json"
    CHECKPOINT = "checkpoint.pt"
    HISTORY = "metrics.jsonl"
    METRICS = "metrics.json"
    PER_EXAMPLE = "test_per_example.npy"
    TEST_INDEX = "test_index.npy"
    EVALUATION = "evaluation.json"
    EMBEDDING = "embedding"
    RESTARTS = "restarts"
    TENSORBOARD = "tensorboard"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ state
    @property
    def has_checkpoint(self) -> bool:
        return (self.path / self.CHECKPOINT).is_file()

    @property
    def in_restart_phase(self) -> bool:
        """Interrupted in the restart phase: restarts exist, the run's own checkpoint not yet."""
        return not self.has_checkpoint and (self.path / self.RESTARTS).is_dir()

    @property
    def is_started(self) -> bool:
        """Whether a checkpoint or a restart phase is here (a run that can be continued)."""
        return self.has_checkpoint or (self.path / self.RESTARTS).is_dir()

    @property
    def is_finished(self) -> bool:
        return (self.path / self.METRICS).is_file()

    def holds_run(self) -> bool:
        """Whether any of a run's files is here."""
        return self.is_started or any((self.path / n).exists() for n in
                                      (self.CONFIG, self.HISTORY, self.METRICS))

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Remove the run's own files (not anything else in the folder), so that a stale file of
        an earlier run (e.g. its test index) cannot be read as this run's."""
        for name in (self.CONFIG, self.CHECKPOINT, self.HISTORY, self.METRICS, self.PER_EXAMPLE,
                     self.TEST_INDEX, self.EVALUATION):
            (self.path / name).unlink(missing_ok=True)
        for name in (self.EMBEDDING, self.RESTARTS):
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)

    def forget_config(self) -> None:
        """Remove ``config.json`` only (a run that was refused before it started, whose other
        files, e.g. a learned map, stay for inspection): the folder no longer holds a run."""
        (self.path / self.CONFIG).unlink(missing_ok=True)

    def restart(self, r: int) -> "RunDirectory":
        """The run directory of restart ``r`` of the restart phase."""
        return RunDirectory(self.path / self.RESTARTS / f"restart{r}")

    @property
    def embedding_dir(self) -> Path:
        return self.path / self.EMBEDDING

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    # ------------------------------------------------------------------ config
    def write_config(self, config: FitConfig, data: dict | None = None, **extra) -> None:
        write_json(self.path / self.CONFIG, {"config": config.to_dict(), "data": data or {},
                                             **extra})

    def read_config_file(self) -> dict | None:
        """The whole ``config.json`` (``None`` if missing or unreadable)."""
        data = read_json(self.path / self.CONFIG)
        return data if isinstance(data, dict) else None

    def saved_config(self) -> FitConfig | None:
        """The run's config as a :class:`FitConfig` (keys added since it was written take their
        defaults, which is what the run used); ``None`` if missing, unreadable or not a config."""
        data = self.read_config_file()
        try:
            return FitConfig.from_dict(data["config"])
        except (TypeError, KeyError, UsageError):
            return None

    def saved_data_key(self) -> dict | None:
        """What identifies the data the run was trained on, as recorded (``None`` if not)."""
        data = self.read_config_file()
        return (data.get("data") or None) if data else None

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, payload: dict) -> None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload},
                          self.path / self.CHECKPOINT)

    def load_checkpoint(self) -> dict:
        """The checkpoint, checked to be a manifold-vae checkpoint, in today's layout."""
        if not self.path.is_dir():
            raise CheckpointError(f"run directory not found: {self.path}")
        ckpt = safe_torch_load(self.path / self.CHECKPOINT)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{self.path / self.CHECKPOINT}: not a manifold-vae checkpoint")
        return _upgrade(ckpt)

    def resumable_config(self) -> dict:
        """The config (as saved) of the run to continue here: its checkpoint's, or — interrupted
        in its restart phase, before the run's own checkpoint exists — its ``config.json``'s."""
        if self.in_restart_phase:
            data = self.read_config_file()
            if not data or not isinstance(data.get("config"), dict):
                raise CheckpointError(f"{self.path}: interrupted in its restart phase but "
                                      f"{self.CONFIG} is missing or unreadable")
            return data["config"]
        return self.load_checkpoint()["config"]

    # ------------------------------------------------------------------ history
    def history(self, upto: float = math.inf) -> list[dict]:
        """The logged rows up to step ``upto`` (a line cut by a kill mid-write is skipped)."""
        path = self.path / self.HISTORY
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", math.inf) <= upto:
                rows.append(row)
        return rows

    def append_history(self, row: dict) -> None:
        with open(self.path / self.HISTORY, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def rewrite_history(self, rows: list[dict]) -> None:
        path = self.path / self.HISTORY
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)

    # ------------------------------------------------------------------ results
    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / self.METRICS, metrics)

    def read_metrics(self) -> dict:
        try:
            return json.loads((self.path / self.METRICS).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{self.path / self.METRICS}: missing or unreadable "
                                  f"({type(err).__name__})") from None

    def write_per_example(self, elbo: torch.Tensor, iwae: torch.Tensor) -> None:
        save_arrays(self.path / self.PER_EXAMPLE, np.stack([elbo.numpy(), iwae.numpy()]))

    def per_example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example test ``(elbo, iwae)`` (float64)."""
        both = torch.from_numpy(np.load(self.path / self.PER_EXAMPLE, allow_pickle=False))
        return both[0], both[1]

    def write_test_index(self, index: torch.Tensor) -> None:
        save_arrays(self.path / self.TEST_INDEX, index.numpy())

    def test_index(self) -> torch.Tensor | None:
        path = self.path / self.TEST_INDEX
        return torch.from_numpy(np.load(path, allow_pickle=False)) if path.is_file() else None

    def write_evaluation(self, result: dict) -> None:
        write_json(self.path / self.EVALUATION, result)

    # ------------------------------------------------------------------ models
    def load(self, model: torch.nn.Module | None = None) -> tuple[VAE, FitConfig, dict]:
        """``(model, config, checkpoint)`` of the saved run, the model in eval mode (``model``:
        a model built in Python for a run trained with one, to receive the weights)."""
        ckpt = self.load_checkpoint()
        model, config = model_from_checkpoint(ckpt, where=str(self.path), model=model)
        model.eval()
        return model, config, ckpt


def load_run(run_dir: str | os.PathLike, model: torch.nn.Module | None = None
             ) -> tuple[VAE, FitConfig, dict]:
    """``(model, config, checkpoint)`` of a saved run, in eval mode (``model``: see
    :meth:`RunDirectory.load`)."""
    return RunDirectory(run_dir).load(model)


def embedding_skeleton(config: FitConfig, arch: dict | None) -> torch.nn.Module | None:
    """An embedding module of the saved architecture, to receive a checkpoint's weights."""
    if not arch or arch.get("kind") == "exact":
        return None
    return LearnedEmbedding.from_arch(config.latent.manifold, arch)


def model_from_checkpoint(ckpt: dict, *, where: str = "checkpoint",
                          model: torch.nn.Module | None = None) -> tuple[VAE, FitConfig]:
    """The trained model and its config from a loaded checkpoint (``model``: a user-built model
    to load the weights into, for runs made with one)."""
    try:
        config = FitConfig.from_dict(ckpt["config"])
        data_dim = int(ckpt["data_dim"])
        if model is None:
            if ckpt.get("model_source") == "user":
                raise CheckpointError(
                    f"{where}: this run was trained with a model built in Python "
                    f"({ckpt.get('model_class', 'a user model')}); build the same model and pass "
                    f"it: load_run(DIR, model=...)")
            model = build_model(config.model, data_dim,
                                embedding=embedding_skeleton(config, ckpt.get("embedding")))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, UsageError) as err:
        raise CheckpointError(f"{where}: checkpoint does not describe a model ({err})") from None
    except RuntimeError as err:
        raise CheckpointError(f"{where}: checkpoint weights do not match its config "
                              f"({str(err).splitlines()[0][:200]})") from None
    return model, config


def _upgrade(ckpt: dict) -> dict:
    """A version-1 checkpoint (one ``VAE`` class, flat config) in today's layout: the embedding
    moved into the latent layer, the scale and data transform into the likelihood."""
    if int(ckpt.get("version", 1)) >= CHECKPOINT_VERSION:
        return ckpt
    try:
        likelihood = ckpt["config"].get("likelihood", "gaussian")
    except AttributeError:
        raise CheckpointError("checkpoint does not describe a model (config)") from None
    state = {}
    for key, value in ckpt.get("model", {}).items():
        if key.startswith("embedding."):
            state["latent." + key] = value
        elif key in ("log_scale", "data_shift", "data_scale"):
            if likelihood == "gaussian":
                state["likelihood." + key] = value
        else:
            state[key] = value
    ckpt = dict(ckpt, model=state, version=CHECKPOINT_VERSION)
    opt = ckpt.get("optimizer")
    if likelihood != "gaussian" and isinstance(opt, dict) and opt.get("param_groups"):
        # the unused scale of a version-1 Bernoulli model was its first parameter
        group = opt["param_groups"][0]
        first = group["params"][0]
        shift = lambda i: i - 1 if i > first else i     # noqa: E731
        opt = dict(opt, state={shift(k): v for k, v in opt["state"].items() if k != first},
                   param_groups=[dict(g, params=[shift(i) for i in g["params"] if i != first])
                                 for g in opt["param_groups"]])
        ckpt["optimizer"] = opt
    if isinstance(ckpt.get("best"), dict) and isinstance(ckpt["best"].get("model"), dict):
        ckpt["best"] = dict(ckpt["best"], model=_upgrade({"config": ckpt["config"], "model":
                                                          ckpt["best"]["model"]})["model"])
    return ckpt
