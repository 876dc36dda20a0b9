"""The training loop: deterministic, resumable, checkpointed, multi-process aware.

Early stopping (``config.validation_fraction > 0``): at every logging step the model is scored on
held-out validation rows by the IWAE bound with ``config.validation_k`` samples (fixed noise,
drawn outside the training RNG stream), and the best state is kept — in memory and in every
checkpoint — and restored at the end, so the final checkpoint holds the selected model.

Determinism: the batch of step ``s`` is a pure function of ``(seed, s)`` (a per-epoch
permutation), and the RNG state that drives the reparameterization noise is saved in every
checkpoint, so a run killed and resumed reproduces an uninterrupted run bit for bit on CPU.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError, ManifoldVAEError
from ..evaluation.bounds import per_example_bounds
from .checkpoint import atomic_torch_save
from .config import FitConfig
from .distributed import DistInfo, barrier, broadcast_flag
from .runs import CHECKPOINT, CHECKPOINT_FORMAT, METRICS_LOG, embedding_arch


class Interrupted(ManifoldVAEError):
    """Training stopped by SIGINT/SIGTERM after writing a checkpoint."""

    exit_code = 130


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
    opt = torch.optim.Adam(params, lr=config.lr)
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


def validation_score(model: nn.Module, x_val: torch.Tensor, config: FitConfig) -> float | None:
    """Mean IWAE bound (K = ``config.validation_k``) on the validation rows, ``None`` when not
    finite; the noise is seeded and drawn in a forked RNG, so scoring neither perturbs training
    nor varies between calls."""
    iwae = per_example_bounds(model, x_val, k=config.validation_k, generator_seed=config.seed)[1]
    score = float(iwae.mean())
    return score if math.isfinite(score) else None


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


RESTART_STRIDE = 100_003   # restart r draws its initialization, batches and noise from seed + r·stride


def stream_seed(config: FitConfig, restart: int = 0) -> int:
    """The seed of restart ``restart``'s random streams (restart 0: ``config.seed`` itself)."""
    return config.seed + RESTART_STRIDE * int(restart)


def _checkpoint(model, opt, sched, step, config, data_dim, elapsed, extra, best, restart) -> dict:
    return {"restart": restart, "best": best, "format": CHECKPOINT_FORMAT, "version": 1, "step": step, "config": config.to_dict(),
            "data_dim": data_dim, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "elapsed": elapsed, "embedding": embedding_arch(model), **extra}


def train(model: nn.Module, x_train: torch.Tensor, config: FitConfig, run_dir: Path | None, *,
          device: torch.device, dist_info: DistInfo = DistInfo(), resume: dict | None = None,
          extra: dict | None = None, progress: Callable | None = None,
          x_val: torch.Tensor | None = None, restart: int = 0,
          stop_at: int | None = None) -> dict:
    """Optimize ``model`` on ``x_train`` for ``config.steps`` steps.

    Writes checkpoints and ``metrics.jsonl`` into ``run_dir`` (rank 0 only). ``resume`` is a
    loaded checkpoint to continue from. ``x_val``: validation rows for early stopping (the model
    ends in the state with the best validation score). Returns ``{"history": rows,
    "train_seconds": s, "selected": {"step", "validation_iwae"} or None}``.

    ``restart``: which of the config's restarts this is (its random streams, see
    :func:`stream_seed`; a resumed checkpoint's own value wins). ``stop_at``: stop after this
    step of the schedule, write a checkpoint and return it as ``"checkpoint"`` (the restart
    phase; the best state is not restored).
    """
    extra = extra or {}
    opt, sched = make_optimizer(model, config)
    start, elapsed = 0, 0.0
    best = None      # {"step", "validation_iwae", "model": state on the CPU}
    if resume is not None:
        try:
            best = resume.get("best") if x_val is not None else None
            if best is not None and not {"step", "validation_iwae", "model"} <= set(best):
                raise KeyError("best")
            model.load_state_dict(resume["model"])
            opt.load_state_dict(resume["optimizer"])
            sched.load_state_dict(resume["scheduler"])
            start, elapsed = int(resume["step"]), float(resume["elapsed"])
            restart = int(resume.get("restart", 0))
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint does not match the requested model "
                                  f"({str(err).splitlines()[0][:200]})") from None
        if dist_info.is_main:
            torch.set_rng_state(resume["rng_cpu"])
        else:
            torch.manual_seed(stream_seed(config, restart) * 1009 + dist_info.rank * 7 + start)
        if device.type == "cuda" and resume.get("rng_cuda"):
            torch.cuda.set_rng_state_all(resume["rng_cuda"])
    else:
        torch.manual_seed(stream_seed(config, restart) * 1009 + dist_info.rank * 7)
    seed = stream_seed(config, restart)
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)

    net = model
    if dist_info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    data_dim = x_train.shape[1]
    x_train = x_train.to(device)
    if x_val is not None:
        x_val = x_val.to(device)
    n = x_train.shape[0]
    global_batch = min(config.batch_size, n)
    if global_batch % dist_info.world_size:
        raise ManifoldVAEError(f"batch_size {global_batch} is not divisible by the "
                               f"{dist_info.world_size} processes")
    writes = run_dir is not None and dist_info.is_main
    log_path = run_dir / METRICS_LOG if run_dir is not None else None
    history = _read_history(log_path, upto=start) if (writes and resume is not None) else []
    if writes:
        _rewrite_history(log_path, history)
    params = [p for p in model.parameters() if p.requires_grad]
    tb = _tensorboard(run_dir) if (config.tensorboard and writes) else None
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if config.amp
                else contextlib.nullcontext())
    sums = torch.zeros(4, dtype=torch.float64)
    count = 0
    skipped = recent_skips = 0     # steps skipped for a non-finite loss/gradient (this session)
    t0 = time.perf_counter() - elapsed
    model.train()

    def save(step):
        ckpt = _checkpoint(model, opt, sched, step, config, data_dim, time.perf_counter() - t0,
                           extra, best, restart)
        if writes:
            atomic_torch_save(ckpt, run_dir / CHECKPOINT)
        return ckpt

    with _stop_on_signals() as stop:
        for step in range(start, end):
            idx = batch_indices(step, n, global_batch, seed)
            idx = idx[dist_info.rank::dist_info.world_size]
            beta = kl_weight(step, config)
            with autocast:
                out = net(x_train[idx], beta)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            # a step with a non-finite loss or gradient is skipped (one NaN would poison every
            # parameter through Adam); persistent ones stop the run. With several processes
            # the gradients are already all-reduced, so every rank decides alike.
            norm = torch.nn.utils.clip_grad_norm_(
                params, config.grad_clip if config.grad_clip > 0 else float("inf"))
            finite = bool(torch.isfinite(norm)) and bool(torch.isfinite(out["loss"].detach()))
            if finite:
                opt.step()
            else:
                skipped += 1
                recent_skips += 1
                if recent_skips > max(10, config.log_every // 10):
                    raise ManifoldVAEError(
                        f"training diverged: {recent_skips} steps with a non-finite loss or "
                        f"gradient before step {step + 1} (last checkpoint kept)")
            sched.step()
            done = step + 1
            if finite:
                sums += torch.stack([out["loss"].detach(), out["elbo"], out["kl"],
                                     out["reconstruction"]]).double().cpu()
                count += 1
            if done % config.log_every == 0 or done == end:
                avg = (sums / max(count, 1)).tolist()
                if count == 0 or not all(math.isfinite(v) for v in avg):
                    raise ManifoldVAEError(f"training diverged: non-finite loss at step {done} "
                                           f"(last checkpoint kept)")
                row = {"step": done, "loss": avg[0], "elbo": avg[1], "kl": avg[2],
                       "reconstruction": avg[3], "kl_weight": beta,
                       "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0,
                       "skipped_steps": skipped}
                recent_skips = 0
                if x_val is not None:
                    score = row["validation_iwae"] = validation_score(model, x_val, config)
                    if score is not None and (best is None or score > best["validation_iwae"]):
                        best = {"step": done, "validation_iwae": score, "model": _cpu_state(model)}
                history.append(row)
                if writes:
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                if tb is not None:
                    for key in ("loss", "elbo", "kl", "reconstruction", "lr", "kl_weight"):
                        tb.add_scalar(f"train/{key}", row[key], done)
                    if row.get("validation_iwae") is not None:
                        tb.add_scalar("validation/iwae", row["validation_iwae"], done)
                if progress is not None:
                    progress(done, row)
                sums.zero_()
                count = 0
            if done % config.checkpoint_every == 0 and done != end:
                save(done)
            # one process alone must never stop: with several, decide together at logging steps
            stopping = stop["signal"] is not None
            if dist_info.enabled:
                stopping = done % config.log_every == 0 and broadcast_flag(dist_info, stopping)
            if stopping:
                save(done)
                barrier(dist_info)
                raise Interrupted(f"interrupted at step {done}/{config.steps}; checkpoint written "
                                  f"to {run_dir}; continue with: manifold-vae fit --resume {run_dir}")
    seconds = time.perf_counter() - t0
    if tb is not None:
        tb.close()
    if end < config.steps:    # a restart's first stretch: hand back the state to continue from
        ckpt = save(end)
        barrier(dist_info)
        return {"history": history, "train_seconds": seconds, "selected": None, "checkpoint": ckpt}
    if best is not None:      # the final checkpoint holds the selected model
        model.load_state_dict(best["model"])
    save(config.steps)
    barrier(dist_info)
    selected = None if best is None else {"step": best["step"],
                                          "validation_iwae": best["validation_iwae"]}
    return {"history": history, "train_seconds": seconds, "selected": selected}


def _tensorboard(run_dir: Path | None):
    """A SummaryWriter in ``run_dir/tensorboard`` (``None``: only check the package is there)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ManifoldVAEError("tensorboard logging needs the 'tensorboard' package: "
                               "pip install 'manifold-vae[tensorboard]'") from None
    return None if run_dir is None else SummaryWriter(str(run_dir / "tensorboard"))


def _read_history(path: Path | None, *, upto: int) -> list[dict]:
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write
        if isinstance(row, dict) and row.get("step", math.inf) <= upto:
            rows.append(row)
    return rows


def _rewrite_history(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
