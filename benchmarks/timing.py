"""Shared timing helpers of the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def model_of(data_dim: int, **keys):
    """The library's model for ``data_dim`` columns from config keys (``latent="S1"``, …)."""
    from manifold_vae import ModelConfig, build_model

    return build_model(ModelConfig(**keys), data_dim)


def make_step(model, x):
    """One Adam training step of ``model`` on the batch ``x`` (the same for every model)."""
    import torch

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        out = model.loss(x, 1.0)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return step


def interleaved_medians(fns: dict[str, Callable[[], None]], rounds: int, reps: int, *,
                        warmup: int) -> dict[str, float]:
    """Seconds per call of each function: ``warmup`` calls each, then ``rounds`` rounds that time
    ``reps`` calls of every function in turn (drifts of the machine hit all alike); median."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t) / reps)
    return {k: statistics.median(v) for k, v in times.items()}
