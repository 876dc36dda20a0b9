"""Overhead of the training engine (logging, checkpoint bookkeeping, batching, LR schedule,
KL warm-up, gradient clipping) over a bare optimisation step of the same model and batch size.

    python benchmarks/engine_overhead.py [--steps 300] [--rounds 5]

Both loops run the same number of steps on the same data; the ratio is engine / bare, median
over interleaved rounds, measured in this run (the issue's target: at most 1.05).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from manifold_vae.training.config import FitConfig
from manifold_vae.training.trainer import train

from timing import model_of   # benchmarks/timing.py


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent", default="S1")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(20000, 100)
    cfg = FitConfig(latent=args.latent, group_action=True, steps=args.steps, log_every=100,
                    checkpoint_every=1000)

    def engine_run():
        model = model_of(100, latent=args.latent, group_action=True)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            train(model, x, cfg, Path(d), device=torch.device("cpu"))
            return (time.perf_counter() - t) / args.steps

    def bare_run():
        model = model_of(100, latent=args.latent, group_action=True)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=g)
            out = model.loss(x[idx])
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
        return (time.perf_counter() - t) / args.steps

    engine_run(), bare_run()  # warm-up
    eng, bare = [], []
    for _ in range(args.rounds):
        eng.append(engine_run())
        bare.append(bare_run())
    e, b = statistics.median(eng), statistics.median(bare)
    print(f"{args.steps} steps x {args.rounds} rounds, batch {cfg.batch_size}, {args.threads} threads")
    print(f"bare step   {b * 1e3:.2f} ms")
    print(f"engine step {e * 1e3:.2f} ms (includes the final checkpoint write)")
    print(f"ratio engine/bare = {e / b:.3f}")


if __name__ == "__main__":
    main()
