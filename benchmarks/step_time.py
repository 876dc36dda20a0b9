"""Cost of one training step of the ER VAE relative to a Gaussian VAE with the same networks
(S1 against d=1, SO3 against d=3), and the throughput of the batched IWAE evaluation.

    python benchmarks/step_time.py [--batch 512] [--rounds 7] [--threads 2]

All models share the 256-256 MLP encoder/decoder, D=100, Adam. Each round times every model
for the same number of steps, one after another (interleaved, so that drifts of the machine hit
all alike); the reported time is the median over rounds, and ratios are taken within this run.
"""
from __future__ import annotations

import argparse
import time

import torch

from manifold_vae.evaluation import per_example_bounds

from timing import interleaved_medians, make_step, model_of   # benchmarks/timing.py

# model -> (constructor arguments, the Gaussian VAE it is compared with)
MODELS = {
    "gaussian d=1 (R1)": (dict(latent="R1"), "gaussian d=1 (R1)"),
    "gaussian d=2 (R2)": (dict(latent="R2"), "gaussian d=1 (R1)"),
    "ER exact S1": (dict(latent="S1"), "gaussian d=1 (R1)"),
    "ER exact S1 + group action": (dict(latent="S1", group_action=True), "gaussian d=1 (R1)"),
    "gaussian d=3 (R3)": (dict(latent="R3"), "gaussian d=3 (R3)"),
    "ER exact SO3": (dict(latent="SO3"), "gaussian d=3 (R3)"),
    "ER exact SO3 + group action": (dict(latent="SO3", group_action=True), "gaussian d=3 (R3)"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100, help="steps per model per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iwae-k", type=int, default=1000)
    ap.add_argument("--iwae-n", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.dim)
    steps = {name: make_step(model_of(args.dim, **kw), x) for name, (kw, _) in MODELS.items()}
    times = interleaved_medians(steps, args.rounds, args.steps, warmup=10)
    print(f"training step, batch {args.batch}, D={args.dim}, 256-256 MLPs, {args.threads} threads "
          f"(median of {args.rounds} rounds x {args.steps} steps)")
    print(f"{'model':32s} {'ms/step':>9s} {'ratio':>7s}  to")
    for name, (_, base) in MODELS.items():
        med = times[name]
        ratio = med / times[base]
        print(f"{name:32s} {med * 1e3:9.2f} {ratio:7.3f}  {base}")

    xs = torch.randn(args.iwae_n, args.dim)
    print(f"\nIWAE evaluation, K={args.iwae_k}, {args.iwae_n} examples")
    for name, (kw, _) in MODELS.items():
        model = model_of(args.dim, **kw)
        per_example_bounds(model, xs[:20], k=args.iwae_k)
        t = time.perf_counter()
        per_example_bounds(model, xs, k=args.iwae_k)
        dt = time.perf_counter() - t
        print(f"{name:32s} {args.iwae_n * args.iwae_k / dt:12.0f} (examples x K)/s  ({dt:.2f} s)")


if __name__ == "__main__":
    main()
