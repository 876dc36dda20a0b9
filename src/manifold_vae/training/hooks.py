"""Small hooks the training loop calls: the weight average, early stopping, the metrics log,
periodic checkpoints, TensorBoard, a progress callback.

A hook sees the loop (:class:`~.trainer.TrainingLoop`) at three moments: ``on_log(loop, row)``
at every logging step (in the order of the loop's hooks; a hook may add keys to the row, as early
stopping adds the validation score before the log writes it), ``on_step(loop, step)`` after every
step, and ``on_end(loop)`` when the schedule is done. A hook with a ``state_key`` saves
``state()`` in every checkpoint under that key and gets it back with ``load_state`` on resume.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import ManifoldVAEError
from ..evaluation.bounds import per_example_bounds

if TYPE_CHECKING:
    from .rundir import RunDirectory
    from .trainer import TrainingLoop


class Hook:
    """Base of the training hooks: every moment does nothing."""

    state_key: str | None = None

    def on_log(self, loop: "TrainingLoop", row: dict) -> None:
        pass

    def on_step(self, loop: "TrainingLoop", step: int) -> None:
        pass

    def on_end(self, loop: "TrainingLoop") -> None:
        pass

    def state(self):
        return None

    def load_state(self, state) -> None:
        pass


def validation_score(model: nn.Module, x_val: torch.Tensor, k: int, seed: int) -> float | None:
    """Mean IWAE bound (K = ``k``) on the validation rows, ``None`` when not finite; the noise is
    seeded and drawn in a forked RNG, so scoring neither perturbs training nor varies between
    calls."""
    iwae = per_example_bounds(model, x_val, k=k, generator_seed=seed)[1]
    score = float(iwae.mean())
    return score if math.isfinite(score) else None


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class WeightAverage(Hook):
    """An exponential moving average of the weights, ``θ̄ ← decay·θ̄ + (1 − decay)·θ`` after every
    step (Polyak & Juditsky 1992; ``torch.optim.swa_utils``); buffers follow the model. The loop
    scores and keeps the average (``loop.eval_model``) and ends in it."""

    state_key = "weight_average"

    def __init__(self, model: nn.Module, decay: float):
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.average.requires_grad_(False)
        self.model = model

    @property
    def module(self) -> nn.Module:
        return self.average.module

    def update(self) -> None:
        """Fold in the weights of the step just taken (the loop calls it before any hook)."""
        self.average.update_parameters(self.model)

    def on_end(self, loop):
        loop.model.load_state_dict(self.module.state_dict())

    def state(self):
        return {"model": self.module.state_dict(), "n_averaged": int(self.average.n_averaged)}

    def load_state(self, state):
        if state is None:              # a checkpoint from before the average: it starts here
            return
        if not {"model", "n_averaged"} <= set(state):
            raise KeyError("weight_average")
        self.module.load_state_dict(state["model"])
        self.average.n_averaged.fill_(int(state["n_averaged"]))


class EarlyStopping(Hook):
    """Score the model on held-out rows at every logging step (IWAE, K = ``k``), keep the best
    state — in memory and in every checkpoint — and end in it."""

    state_key = "best"

    def __init__(self, x_val: torch.Tensor, k: int, seed: int):
        self.x_val, self.k, self.seed = x_val, k, seed
        self.best: dict | None = None    # {"step", "validation_iwae", "model": state on the CPU}

    def on_log(self, loop, row):
        model = loop.eval_model
        score = row["validation_iwae"] = validation_score(model, self.x_val, self.k, self.seed)
        if score is not None and (self.best is None or score > self.best["validation_iwae"]):
            self.best = {"step": row["step"], "validation_iwae": score,
                         "model": _cpu_state(model)}

    def on_end(self, loop):
        if self.best is not None:      # the final checkpoint holds the selected model
            loop.model.load_state_dict(self.best["model"])

    def state(self):
        return self.best

    def load_state(self, state):
        if state is not None and not {"step", "validation_iwae", "model"} <= set(state):
            raise KeyError("best")
        self.best = state

    @property
    def selected(self) -> dict | None:
        return None if self.best is None else {"step": self.best["step"],
                                               "validation_iwae": self.best["validation_iwae"]}


class MetricsLog(Hook):
    """Append each logged row to the run's ``metrics.jsonl`` (rank 0)."""

    def __init__(self, run: "RunDirectory"):
        self.run = run

    def on_log(self, loop, row):
        self.run.append_history(row)


class PeriodicCheckpoint(Hook):
    """Write a checkpoint every ``every`` steps (the last step's is written by the loop)."""

    def __init__(self, every: int):
        self.every = every

    def on_step(self, loop, step):
        if step % self.every == 0 and step != loop.end:
            loop.save(step)


class TensorBoardLog(Hook):
    """Scalars of every logged row in ``DIR/tensorboard`` (needs the 'tensorboard' package)."""

    def __init__(self, run: "RunDirectory"):
        self.writer = tensorboard_writer(run.tensorboard_dir)

    def on_log(self, loop, row):
        for key in ("loss", "elbo", "kl", "reconstruction", "lr", "kl_weight"):
            self.writer.add_scalar(f"train/{key}", row[key], row["step"])
        if row.get("validation_iwae") is not None:
            self.writer.add_scalar("validation/iwae", row["validation_iwae"], row["step"])

    def on_end(self, loop):
        self.writer.close()


class Progress(Hook):
    """Call ``callback(step, row)`` at every logging step."""

    def __init__(self, callback: Callable[[int, dict], None]):
        self.callback = callback

    def on_log(self, loop, row):
        self.callback(row["step"], row)


def tensorboard_writer(directory=None):
    """A SummaryWriter in ``directory`` (``None``: only check that the package is there)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ManifoldVAEError("tensorboard logging needs the 'tensorboard' package: "
                               "pip install 'manifold-vae[tensorboard]'") from None
    return None if directory is None else SummaryWriter(str(directory))
