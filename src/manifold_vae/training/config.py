"""The run config: how a model is trained, on which data, by which engine.

One :class:`FitConfig` per run holds the :class:`~manifold_vae.models.ModelConfig` (what the
model is) and everything else (optimizer, schedule, data split, early stopping, restarts,
evaluation, engine). Defaults here, overridden by a TOML file and ``--set key=value``
(:func:`~manifold_vae.common.config.config_from`); unknown keys and values of the wrong type are
rejected with a :class:`UsageError` naming them; the resolved config is saved with every run so
that ``resume`` and ``evaluate`` need nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..common.config import Config, config_from
from ..errors import UsageError
from ..models.config import ModelConfig

__all__ = ["FitConfig", "config_from"]


def _names(data: dict, key: str) -> bool:
    """Whether ``key`` is set anywhere in the (nested) dict ``data``."""
    return any(k == key or k.endswith("." + key) or (isinstance(v, dict) and _names(v, key))
               for k, v in data.items())


@dataclass(init=False)
class FitConfig(Config):
    """Everything that defines a training run.

    Example::

        >>> cfg = FitConfig(latent="S1", group_action=True, steps=3000)
        >>> cfg.model.latent.group_action, cfg.steps
        (True, 3000)
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    # optimisation
    steps: int = 10000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0        # decoupled weight decay (AdamW, Loshchilov & Hutter 2019); 0: Adam
    schedule: str = "onecycle"       # "onecycle" or "constant"
    kl_warmup: float = 0.2           # fraction of the steps over which the KL weight rises 0 -> 1
    grad_clip: float = 100.0         # max global gradient norm (0: off)
    # exponential moving average of the weights, decay per step (e.g. 0.999; 0: off): the average
    # is what early stopping scores, restarts are chosen by, the run saves and evaluates
    weight_average: float = 0.0
    seed: int = 0
    # early stopping: hold out this fraction of the training rows (seeded by split_seed); at every
    # logging step score the model on them (IWAE, K = validation_k) and keep the best state
    validation_fraction: float = 0.0
    validation_k: int = 16
    # restarts (need a validation fraction): train this many initializations (seeds seed,
    # seed + 1 stream, ...) for the first restart_fraction of the schedule, keep the one with the
    # best validation IWAE there and finish only it: a guard against bad basins (e.g. an
    # encoder map of SO(3) that folds) at a fraction of the cost of whole runs
    restarts: int = 1
    restart_fraction: float = 0.15
    # data
    test_fraction: float = 0.1
    split_seed: int = 0
    standardize: bool = True
    # evaluation
    iwae_k: int = 1000
    # engine
    log_every: int = 100
    checkpoint_every: int = 1000
    device: str = "auto"
    amp: bool = False                # bfloat16 autocast for the networks (off by default)
    tensorboard: bool = False        # also log to DIR/tensorboard (needs the 'tensorboard' extra)
    threads: int = 0                 # torch intra-op threads (0: chosen by the model's size)
    # keys left at their defaults are chosen for the latent and the data (training/defaults.py)
    auto_defaults: bool = True

    def validate(self) -> "FitConfig":
        for name in ("steps", "batch_size", "iwae_k", "log_every", "checkpoint_every",
                     "validation_k"):
            if getattr(self, name) < 1:
                raise UsageError(f"config: {name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"config: lr must be positive, got {self.lr}")
        if not 0 < self.test_fraction < 1:
            raise UsageError(f"config: test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.validation_fraction < 1:
            raise UsageError(f"config: validation_fraction must be in [0, 1) (0: no early stopping), "
                             f"got {self.validation_fraction}")
        if self.restarts < 1:
            raise UsageError(f"config: restarts must be a positive integer, got {self.restarts}")
        if not 0 < self.restart_fraction < 1:
            raise UsageError(f"config: restart_fraction must be in (0, 1), got {self.restart_fraction}")
        if self.restarts > 1 and self.validation_fraction <= 0:
            raise UsageError("config: restarts > 1 choose by the validation score; set "
                             "validation_fraction > 0 (e.g. 0.05)")
        if not 0 <= self.kl_warmup < 1:
            raise UsageError(f"config: kl_warmup must be in [0, 1), got {self.kl_warmup}")
        if not 0 <= self.weight_decay < 1:
            raise UsageError(f"config: weight_decay must be in [0, 1) (decoupled, per unit of "
                             f"learning rate, e.g. 0.01; 0: off), got {self.weight_decay}")
        if not 0 <= self.weight_average < 1:
            raise UsageError(f"config: weight_average must be in [0, 1) (a decay per step, e.g. "
                             f"0.999; 0: off), got {self.weight_average}")
        if self.grad_clip < 0:
            raise UsageError(f"config: grad_clip must be >= 0, got {self.grad_clip}")
        if self.schedule not in ("onecycle", "constant"):
            raise UsageError(f"config: schedule must be 'onecycle' or 'constant', got {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"config: device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads < 0:
            raise UsageError(f"config: threads must be >= 0, got {self.threads}")
        return self

    @classmethod
    def from_dict(cls, data: dict) -> "FitConfig":
        """The config saved as ``data``. One written before ``compact_hidden`` existed reads it as
        ``"box"``, the only hidden space then (today's default, ``"auto"``, picks the normal one on
        spheres: the same parameters, another model)."""
        if isinstance(data, dict) and not _names(data, "compact_hidden"):
            data = {**data, "compact_hidden": "box"}
        return super().from_dict(data)

    @property
    def latent(self):
        """The model's :class:`~manifold_vae.latents.LatentSpec` (``config.model.latent``)."""
        return self.model.latent

    def restart_steps(self) -> int:
        """Steps each restart trains before the choice: ``restart_fraction`` of the schedule."""
        return max(1, min(self.steps - 1, round(self.restart_fraction * self.steps)))
