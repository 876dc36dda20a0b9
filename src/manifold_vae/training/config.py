"""One typed configuration per run: defaults here, overridden by a TOML file and ``--set k=v``.

Unknown keys and values of the wrong type are rejected with a :class:`UsageError` naming them;
the resolved config is saved with every checkpoint so that ``resume`` and ``evaluate`` need
nothing else.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import UsageError


@dataclass
class FitConfig:
    """Everything that defines a training run."""

    # model
    latent: str = "S1"
    embedding: str = "exact"          # "exact", "learned" (train one now) or a directory/file
    group_action: bool = False
    centred_posterior: bool = False   # with group_action: Beta means fixed at the box centre
    compact_hidden: str = "box"       # compact factors' hidden space: "box" (Beta) or "normal" (Φ)
    init_concentration: float = 2.0   # Beta posterior's κ = a + b at initialization (2: uniform)
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    likelihood: str = "gaussian"      # "gaussian" (learned scale per coordinate) or "bernoulli"
    network: str = "mlp"              # "mlp"; images (need image_shape): "conv", "conv-rotate", "splat"
    image_shape: list[int] = field(default_factory=list)   # (C, H, W) of a row, for "conv"
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    encoder_symmetry: int = 1         # image encoder equivariant to turns by 2π/n (n = 1, 2, 4)
    # optimisation
    steps: int = 10000
    batch_size: int = 512
    lr: float = 1e-3
    schedule: str = "onecycle"       # "onecycle" or "constant"
    kl_warmup: float = 0.2           # fraction of the steps over which the KL weight rises 0 -> 1
    grad_clip: float = 100.0         # max global gradient norm (0: off)
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
    # learned embedding (used when embedding == "learned")
    embed_steps: int = 2000
    embed_hidden: list[int] = field(default_factory=lambda: [128, 128])
    # engine
    log_every: int = 100
    checkpoint_every: int = 1000
    device: str = "auto"
    amp: bool = False                # bfloat16 autocast for the networks (off by default)
    tensorboard: bool = False        # also log to DIR/tensorboard (needs the 'tensorboard' extra)
    threads: int = 0                 # torch intra-op threads (0: leave torch's default)

    def validate(self) -> "FitConfig":
        pos = ["steps", "batch_size", "iwae_k", "log_every", "checkpoint_every", "embed_steps",
               "validation_k"]
        for name in pos:
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
        if self.grad_clip < 0:
            raise UsageError(f"config: grad_clip must be >= 0, got {self.grad_clip}")
        if not 1.0 <= self.init_concentration <= 1.2e6:
            raise UsageError(f"config: init_concentration must lie in [1, 1.2e6] (the bounds of the "
                             f"Beta concentration), got {self.init_concentration}")
        if self.compact_hidden not in ("box", "normal"):
            raise UsageError(f"config: compact_hidden must be 'box' or 'normal', got {self.compact_hidden!r}")
        if self.schedule not in ("onecycle", "constant"):
            raise UsageError(f"config: schedule must be 'onecycle' or 'constant', got {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"config: device must be auto, cpu or cuda, got {self.device!r}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise UsageError(f"config: hidden must be a list of positive widths, got {self.hidden}")
        if self.likelihood not in ("gaussian", "bernoulli"):
            raise UsageError(f"config: likelihood must be 'gaussian' or 'bernoulli', got {self.likelihood!r}")
        if self.network not in ("mlp", "conv", "conv-rotate", "splat"):
            raise UsageError(f"config: network must be one of mlp, conv, conv-rotate, splat; "
                             f"got {self.network!r}")
        if self.network != "mlp" and len(self.image_shape) != 3:
            raise UsageError(f"config: network={self.network!r} needs image_shape = [channels, height, width] "
                             "(image data files made by `manifold-vae data digits|renders` carry it)")
        if self.image_shape and (len(self.image_shape) != 3 or min(self.image_shape) < 1):
            raise UsageError(f"config: image_shape must be three positive integers, got {self.image_shape}")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise UsageError(f"config: conv_channels must be positive widths, got {self.conv_channels}")
        if self.encoder_symmetry not in (1, 2, 4):
            raise UsageError(f"config: encoder_symmetry must be 1, 2 or 4, got {self.encoder_symmetry}")
        if self.threads < 0:
            raise UsageError(f"config: threads must be >= 0, got {self.threads}")
        return self

    def restart_steps(self) -> int:
        """Steps each restart trains before the choice: ``restart_fraction`` of the schedule."""
        return max(1, min(self.steps - 1, round(self.restart_fraction * self.steps)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """``value`` (from TOML or a ``--set`` string) converted to the field's type, or UsageError."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config: {name} must be a list, got {value!r}")
        return [_coerce(name, inner, v) for v in value]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UsageError(f"config: {name} must be of type {getattr(tp, '__name__', tp)}, got {value!r}")


def config_from(cls, *, base: dict | None = None, file: str | Path | None = None,
                overrides: Iterable[str] = (), **explicit):
    """Build ``cls`` from defaults <- ``base`` <- TOML ``file`` <- ``overrides`` <- ``explicit``.

    ``overrides`` are ``"key=value"`` strings; ``explicit`` values that are ``None`` are ignored.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}

    def put(key: str, value: Any, where: str):
        if key not in names:
            raise UsageError(f"unknown config key {key!r} ({where}); valid keys: "
                             f"{', '.join(sorted(names))}")
        values[key] = _coerce(key, hints[key], value)

    for k, v in (base or {}).items():
        put(k, v, "saved config")
    if file is not None:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UsageError(f"config file {path} is not valid TOML: {err}") from None
        for k, v in data.items():
            put(k, v, str(path))
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        put(k.strip(), v.strip(), "--set")
    for k, v in explicit.items():
        if v is not None:
            put(k, v, "command line")
    cfg = cls(**values)
    return cfg.validate() if hasattr(cfg, "validate") else cfg
