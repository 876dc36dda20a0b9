"""Numerical robustness: every model family trains for a short run over many seeds without
NaN/inf in loss, parameters or metrics (the tests run a fast subset).

    python benchmarks/robustness.py [--seeds 20] [--steps 300]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from manifold_vae import ManifoldBenchmark
from manifold_vae.training.config import FitConfig
from manifold_vae.training.fit import run_fit

FAMILIES = [("R1", "exact", False), ("R2", "exact", False), ("S1", "exact", False),
            ("S1", "exact", True), ("S1xR1", "exact", True)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3, help="deliberately high")
    args = ap.parse_args()
    bench = ManifoldBenchmark("S1", dim=50, noise=0.05)
    x, _ = bench.sample(3000)
    print(f"{'family':22s} {'seeds ok':>9s} {'worst test IWAE':>16s}")
    for latent, emb, ga in FAMILIES:
        ok, worst, t = 0, math.inf, time.perf_counter()
        for seed in range(args.seeds):
            cfg = FitConfig(latent=latent, embedding=emb, group_action=ga, steps=args.steps,
                            seed=seed, lr=args.lr, iwae_k=50, hidden=[128, 128], batch_size=256)
            try:
                res = run_fit(cfg, x, None, log=lambda s: None)
                m = res.metrics
            except Exception as err:  # report, keep going
                print(f"  {latent} ga={ga} seed {seed}: {type(err).__name__}: {err}")
                continue
            finite = all(math.isfinite(m[k]) for k in ("test_elbo", "test_iwae", "final_train_elbo"))
            finite &= all(torch.isfinite(p).all() for p in res.model.state_dict().values()
                          if p.is_floating_point())
            ok += finite
            worst = min(worst, m["test_iwae"])
        name = f"{latent}{' + group action' if ga else ''}"
        print(f"{name:22s} {ok:>4d}/{args.seeds:<4d} {worst:16.3f}   ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
