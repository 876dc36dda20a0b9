"""The training loop: deterministic, resumable, multi-process aware; the rest is hooks.

Each step takes the batch of that step, computes the (KL-warmed) negative ELBO, clips the gradient
and steps Adam and the learning-rate schedule; a step with a non-finite loss or gradient is
skipped (persistent ones stop the run). With ``weight_average`` a moving average of the weights
follows them; it is what the hooks score and what the run ends in. Every ``log_every`` steps the
averages form a row that the hooks (:mod:`.hooks`) see in turn: early stopping scores the model on held-out rows, the metrics
log writes the row, TensorBoard and the progress callback show it. Checkpoints are written every
``checkpoint_every`` steps, on SIGINT/SIGTERM and at the end.

Determinism: the batch of step ``s`` is a pure function of ``(seed, s)`` (a per-epoch
permutation), and the RNG state that drives the reparameterization noise is saved in every
checkpoint, so a run killed and resumed reproduces an uninterrupted run bit for bit on CPU.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError, ManifoldVAEError
from .config import FitConfig
from .distributed import DistInfo, barrier, broadcast_flag
from .hooks import (EarlyStopping, Hook, MetricsLog, PeriodicCheckpoint, Progress,
                    TensorBoardLog, WeightAverage)
from .rundir import RunDirectory


_LOGGED = {"loss", "elbo", "kl", "reconstruction"}     # the loss parts every model reports


class Interrupted(ManifoldVAEError):
    """Training stopped by SIGINT/SIGTERM after writing a checkpoint."""

    exit_code = 130


RESTART_STRIDE = 100_003   # restart r draws its initialization, batches and noise from seed + r·stride


def stream_seed(config: FitConfig, restart: int = 0) -> int:
    """The seed of restart ``restart``'s random streams (restart 0: ``config.seed`` itself)."""
    return config.seed + RESTART_STRIDE * int(restart)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ManifoldVAEError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def kl_weight(step: int, config: FitConfig) -> float:
    """Linear KL warm-up from 0 to 1 over the first ``kl_warmup`` fraction of the steps."""
    warm = config.kl_warmup * config.steps
    return 1.0 if warm <= 0 else min(1.0, step / warm)


def make_optimizer(model: nn.Module, config: FitConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
           if config.weight_decay > 0 else torch.optim.Adam(params, lr=config.lr))
    # OneCycleLR needs at least two steps in its warm-up quarter; shorter runs keep lr constant
    if config.schedule == "onecycle" and config.steps >= 8:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps,
                                                    pct_start=0.25)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return opt, sched


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Rows of the global batch of (0-based) ``step``: epoch-wise permutations, drop-last."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return perm[pos * batch_size:(pos + 1) * batch_size]


@contextmanager
def _stop_on_signals():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps."""
    state = {"signal": None}

    def handler(signum, frame):
        state["signal"] = signum

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield state
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class TrainingLoop:
    """Optimize ``model`` on ``x_train`` (see the module docstring and :func:`train`)."""

    def __init__(self, model: nn.Module, x_train: torch.Tensor, config: FitConfig,
                 run: RunDirectory | None, *, device: torch.device, dist_info: DistInfo,
                 resume: dict | None, extra: dict | None, progress: Callable | None,
                 x_val: torch.Tensor | None, restart: int, stop_at: int | None):
        self.model, self.config, self.device, self.dist = model, config, device, dist_info
        self.extra = extra or {}
        self.writes = run is not None and dist_info.is_main
        self.run = run if self.writes else None
        self.opt, self.sched = make_optimizer(model, config)
        self.data_dim = x_train.shape[1]
        self.x_train = x_train.to(device)
        self.early = (EarlyStopping(x_val.to(device), config.validation_k, config.seed)
                      if x_val is not None else None)
        # the average first: its state is final before early stopping scores or restores
        self.average = (WeightAverage(model, config.weight_average)
                        if config.weight_average > 0 else None)
        hooks: list[Hook] = [h for h in (self.average, self.early) if h is not None]
        if self.writes:
            hooks.append(MetricsLog(self.run))
            if config.tensorboard:
                hooks.append(TensorBoardLog(self.run))
        if progress is not None:
            hooks.append(Progress(progress))
        hooks.append(PeriodicCheckpoint(config.checkpoint_every))
        self.hooks = hooks
        self.start, elapsed, self.restart = 0, 0.0, restart
        if resume is not None:
            self._resume(resume)
            elapsed = float(resume["elapsed"])
        else:
            torch.manual_seed(stream_seed(config, restart) * 1009 + dist_info.rank * 7)
        self.seed = stream_seed(config, self.restart)
        self.end = config.steps if stop_at is None else min(int(stop_at), config.steps)
        self.t0 = time.perf_counter() - elapsed
        self.history = self.run.history(upto=self.start) if (self.run and resume is not None) else []
        if self.run:
            self.run.rewrite_history(self.history)

    @property
    def eval_model(self) -> nn.Module:
        """The weights to score and keep: the moving average when there is one."""
        return self.average.module if self.average is not None else self.model

    def _resume(self, ckpt: dict) -> None:
        try:
            for hook in self.hooks:
                if hook.state_key is not None:
                    hook.load_state(ckpt.get(hook.state_key))
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.start = int(ckpt["step"])
            float(ckpt["elapsed"])
            self.restart = int(ckpt.get("restart", 0))
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint does not match the requested model "
                                  f"({str(err).splitlines()[0][:200]})") from None
        if self.dist.is_main:
            torch.set_rng_state(ckpt["rng_cpu"])
        else:
            torch.manual_seed(stream_seed(self.config, self.restart) * 1009 + self.dist.rank * 7
                              + self.start)
        if self.device.type == "cuda" and ckpt.get("rng_cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])

    def checkpoint(self, step: int) -> dict:
        """The loop's state at ``step`` as checkpoint data (tensors and plain data only)."""
        model = self.model
        state = {"restart": self.restart, "step": step, "config": self.config.to_dict(),
                 "data_dim": self.data_dim, "model": model.state_dict(),
                 "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "elapsed": time.perf_counter() - self.t0,
                 "embedding": _embedding_arch(model), **self.extra}
        for hook in self.hooks:
            if hook.state_key is not None:
                state[hook.state_key] = hook.state()
        return state

    def save(self, step: int) -> dict:
        ckpt = self.checkpoint(step)
        if self.run:
            self.run.save_checkpoint(ckpt)
        return ckpt

    def run_loop(self) -> dict:
        config, model, dist = self.config, self.model, self.dist
        net = model
        if dist.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        n = self.x_train.shape[0]
        global_batch = min(config.batch_size, n)
        if global_batch % dist.world_size:
            raise ManifoldVAEError(f"batch_size {global_batch} is not divisible by the "
                                   f"{dist.world_size} processes")
        params = [p for p in model.parameters() if p.requires_grad]
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if config.amp
                    else contextlib.nullcontext())
        sums = torch.zeros(4, dtype=torch.float64)
        extra: dict[str, float] = {}   # training-only terms a model reports (e.g. turn_consistency)
        count = 0
        skipped = recent_skips = 0     # steps skipped for a non-finite loss/gradient (this session)
        clip = config.grad_clip if config.grad_clip > 0 else float("inf")
        model.train()
        with _stop_on_signals() as stop:
            for step in range(self.start, self.end):
                idx = batch_indices(step, n, global_batch, self.seed)[dist.rank::dist.world_size]
                beta = kl_weight(step, config)
                with autocast:
                    out = net(self.x_train[idx], beta)
                self.opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                # a step with a non-finite loss or gradient is skipped (one NaN would poison every
                # parameter through Adam); persistent ones stop the run. With several processes
                # the gradients are already all-reduced, so every rank decides alike.
                norm = torch.nn.utils.clip_grad_norm_(params, clip)
                finite = bool(torch.isfinite(norm)) and bool(torch.isfinite(out["loss"].detach()))
                if finite:
                    self.opt.step()
                else:
                    skipped += 1
                    recent_skips += 1
                    if recent_skips > max(10, config.log_every // 10):
                        raise ManifoldVAEError(
                            f"training diverged: {recent_skips} steps with a non-finite loss or "
                            f"gradient before step {step + 1} (last checkpoint kept)")
                self.sched.step()
                if self.average is not None:
                    self.average.update()
                done = step + 1
                if finite:
                    sums += torch.stack([out["loss"].detach(), out["elbo"], out["kl"],
                                         out["reconstruction"]]).double().cpu()
                    for key in out.keys() - _LOGGED:
                        extra[key] = extra.get(key, 0.0) + float(out[key])
                    count += 1
                if done % config.log_every == 0 or done == self.end:
                    avg = (sums / max(count, 1)).tolist()
                    if count == 0 or not all(math.isfinite(v) for v in avg):
                        raise ManifoldVAEError(f"training diverged: non-finite loss at step {done} "
                                               f"(last checkpoint kept)")
                    row = {"step": done, "loss": avg[0], "elbo": avg[1], "kl": avg[2],
                           "reconstruction": avg[3], "kl_weight": beta,
                           "lr": self.sched.get_last_lr()[0],
                           "seconds": time.perf_counter() - self.t0, "skipped_steps": skipped,
                           **{k: v / max(count, 1) for k, v in extra.items()}}
                    recent_skips = 0
                    for hook in self.hooks:
                        hook.on_log(self, row)
                    self.history.append(row)
                    sums.zero_()
                    extra.clear()
                    count = 0
                for hook in self.hooks:
                    hook.on_step(self, done)
                # one process alone must never stop: with several, decide together at logging steps
                stopping = stop["signal"] is not None
                if dist.enabled:
                    stopping = done % config.log_every == 0 and broadcast_flag(dist, stopping)
                if stopping:
                    self.save(done)
                    barrier(dist)
                    where = self.run.path if self.run else None
                    raise Interrupted(f"interrupted at step {done}/{config.steps}; checkpoint "
                                      f"written to {where}; continue with: manifold-vae fit "
                                      f"--resume {where}")
        seconds = time.perf_counter() - self.t0
        if self.end < config.steps:   # a restart's first stretch: hand back the state to continue
            for hook in self.hooks:
                if isinstance(hook, TensorBoardLog):
                    hook.on_end(self)
            ckpt = self.save(self.end)
            barrier(dist)
            return {"history": self.history, "train_seconds": seconds, "selected": None,
                    "checkpoint": ckpt}
        for hook in self.hooks:
            hook.on_end(self)
        self.save(config.steps)
        barrier(dist)
        return {"history": self.history, "train_seconds": seconds,
                "selected": self.early.selected if self.early else None}


def _embedding_arch(model: nn.Module) -> dict:
    emb = getattr(getattr(model, "latent", None), "embedding", None)
    return emb.arch() if hasattr(emb, "arch") else {"kind": "exact"}


def train(model: nn.Module, x_train: torch.Tensor, config: FitConfig,
          run: RunDirectory | None, *, device: torch.device, dist_info: DistInfo = DistInfo(),
          resume: dict | None = None, extra: dict | None = None,
          progress: Callable | None = None, x_val: torch.Tensor | None = None,
          restart: int = 0, stop_at: int | None = None) -> dict:
    """Optimize ``model`` on ``x_train`` for ``config.steps`` steps.

    Writes checkpoints and ``metrics.jsonl`` into ``run`` (rank 0 only). ``resume`` is a loaded
    checkpoint to continue from. ``x_val``: validation rows for early stopping (the model ends in
    the state with the best validation score). Returns ``{"history": rows, "train_seconds": s,
    "selected": {"step", "validation_iwae"} or None}``.

    ``restart``: which of the config's restarts this is (its random streams, see
    :func:`stream_seed`; a resumed checkpoint's own value wins). ``stop_at``: stop after this
    step of the schedule, write a checkpoint and return it as ``"checkpoint"`` (the restart
    phase; the best state is not restored).
    """
    if run is not None and not isinstance(run, RunDirectory):
        run = RunDirectory(run)
    loop = TrainingLoop(model, x_train, config, run, device=device, dist_info=dist_info,
                        resume=resume, extra=extra, progress=progress, x_val=x_val,
                        restart=restart, stop_at=stop_at)
    return loop.run_loop()
