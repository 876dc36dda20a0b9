"""Does ``discover`` name the true latent topology? Synthetic data from R1, R2, S1, S2, T2 and SO3
(uniform latents on compact manifolds, standard normal on R^k) through the paper's random MLP,
over generator seeds, observation dimensions D in [20, 200] and noise σ in [0.02, 0.2].

    python benchmarks/discovery_accuracy.py [--budget quick] [--n 5000] [--out results/discovery-bench]

A case passes when the verdict names the true topology, or is "undecided" with the truth among
the tied candidates. Prints the table of cases and verdicts and writes it to OUT/accuracy.json;
finished cases are reused when the script is run again with the same OUT.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from manifold_vae.data import ManifoldBenchmark
from manifold_vae.experiments.discover import DEFAULT_CANDIDATES, discover

# (truth, generator seed, D, σ): every truth at three (D, σ) settings spanning the ranges
SETTINGS = [(20, 0.02, 0), (100, 0.1, 1), (200, 0.2, 2)]
TRUTHS = ["R1", "R2", "S1", "S2", "T2", "SO3"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="quick", choices=["quick", "default", "thorough"])
    ap.add_argument("--n", type=int, default=5000, help="data rows per case")
    ap.add_argument("--truths", default=",".join(TRUTHS))
    ap.add_argument("--out", default="results/discovery-bench")
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    t0 = time.perf_counter()
    for truth in args.truths.split(","):
        for dim, noise, seed in SETTINGS:
            bench = ManifoldBenchmark(truth, dim=dim, noise=noise, seed=seed)
            x, _ = bench.sample(args.n)
            case = out / f"{truth}-D{dim}-s{noise}-seed{seed}"
            res = discover(x, case, candidates=DEFAULT_CANDIDATES, budget=args.budget,
                           log=lambda s: None)
            ok = res["best"] == truth or (res["verdict"] == "undecided" and truth in res["tied"])
            rows.append({"truth": truth, "dim": dim, "noise": noise, "seed": seed,
                         "verdict": res["verdict"], "best": res["best"], "tied": res["tied"],
                         "top": res["ranking"][0]["latent"], "z_top_two": res["top_two"]["z"],
                         "correct": ok})
            print(f"{truth:4s} D={dim:3d} σ={noise:<5} seed={seed}: {res['verdict']:9s} "
                  f"best={res['best']:4s} top={rows[-1]['top']:4s} tied={','.join(res['tied']) or '-':20s} "
                  f"{'OK' if ok else 'WRONG'}", flush=True)
    n_ok = sum(r["correct"] for r in rows)
    print(f"\n{n_ok}/{len(rows)} cases correct (budget {args.budget}, {args.n} rows each, "
          f"{time.perf_counter() - t0:.0f} s)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps({"budget": args.budget, "n": args.n,
                                                   "correct": n_ok, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
