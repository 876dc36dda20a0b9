"""Is a run's gap to the true log-likelihood in its encoder or in its decoder?

    python benchmarks/inference_gap.py RUN_DIR --test TEST.npy [--train TRAIN.npy] [--steps 1000 3000]

The IWAE bound holds for any proposal, so the encoder may be refined on the test rows themselves
(decoder, prior and likelihood frozen; Adam on the negative ELBO, batches of the test rows):
what the test IWAE gains is the amortization gap (Cremer, Li & Duvenaud 2018, "Inference
Suboptimality in VAEs"); what is left to the true log-likelihood belongs to the generative model.
Prints the test ELBO and IWAE before and after each number of refinement steps, with the gap to
the true log-likelihood when the run's ``metrics.json`` has one. With ``--train`` (data from
``manifold-vae data``, with its ``.json`` sidecar) also the gap on the first ``--rows`` training
rows: a gap on the test rows that the training rows do not have is the decoder's generalization.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from manifold_vae.data.io import read_sidecar
from manifold_vae.evaluation.bounds import evaluate
from manifold_vae.training import load_run
from manifold_vae.training.fit import ceiling_metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--test", type=Path, required=True, help="the run's test rows (.npy)")
    ap.add_argument("--train", type=Path, help="the run's training rows (.npy with its sidecar)")
    ap.add_argument("--rows", type=int, default=2000, help="training rows scored (the first)")
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    model, _, _ = load_run(args.run)
    x = torch.as_tensor(np.load(args.test, allow_pickle=False)).float()
    metrics = json.loads((args.run / "metrics.json").read_text())
    true = metrics.get("true_log_likelihood")

    def report(label, seconds=0.0):
        r = evaluate(model, x, k=args.k)
        gap = f"  gap {true - r['iwae']:.3f}" if true is not None else ""
        print(f"{label:>24s}  ELBO {r['elbo']:9.3f}  IWAE {r['iwae']:9.3f} ± {r['iwae_stderr']:.3f}"
              f"{gap}  ({seconds:.0f} s)", flush=True)
        return r["per_example_iwae"]

    print(f"{args.run}: {len(x)} test rows, K = {args.k}"
          + (f", true log-likelihood {true:.3f}" if true is not None else ""))
    before = report("as trained")
    if args.train is not None:
        rows = torch.as_tensor(np.load(args.train, allow_pickle=False)[:args.rows]).float()
        r = evaluate(model, rows, k=args.k)
        c = ceiling_metrics(read_sidecar(args.train), rows, r["per_example_iwae"])
        if c:
            print(f"{'training rows':>24s}  ELBO {r['elbo']:9.3f}  IWAE {r['iwae']:9.3f} ± "
                  f"{r['iwae_stderr']:.3f}  gap {c['gap_iwae']:.3f} ± {c['gap_iwae_stderr']:.3f} "
                  f"(first {len(rows)}; a few may be the run's validation rows)", flush=True)
        else:
            print(f"{args.train}: no generator in its sidecar, no true log-likelihood")
    model.requires_grad_(False)
    encoder = list(model.encoder.parameters())
    for p in encoder:
        p.requires_grad_(True)
    opt = torch.optim.Adam(encoder, lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    done, t0 = 0, time.perf_counter()
    for target in sorted(args.steps):
        model.train()
        while done < target:
            idx = torch.randint(0, len(x), (min(args.batch_size, len(x)),), generator=gen)
            loss = model.loss(x[idx], 1.0)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        after = report(f"encoder refined {done} steps", time.perf_counter() - t0)
        d = after - before          # paired over the same rows
        print(f"{'':>24s}  change of the test IWAE {float(d.mean()):+.4f} ± "
              f"{float(d.std() / len(d) ** 0.5):.4f} (paired)")


if __name__ == "__main__":
    main()
