"""Which hidden space should ER use on S^n? Quality of the Beta box against the normal hidden
space (f ∘ Φ), with Power Spherical beside, on sphere benchmarks of several dimensions.

    python benchmarks/hidden_space.py [--dims 2 5 10] [--seeds 3] [--steps 4000] [--out DIR]

Data per sphere: ``ManifoldBenchmark("S<n>", dim=100, noise=0.05, seed=0)``, 20,000 training and
2,000 test rows (the peers suite's benchmark). Rows (the peers suite's settings: 256-256 MLPs,
batch 512, Adam 1e-3, KL warm-up 20 %, K=1000): ER exact f + group action on the box, the same on
the normal hidden space, Power Spherical. Printed per sphere: each row's test IWAE (mean over
seeds) and the paired per-example difference normal − box with its standard error (over test
examples of the seed-averaged difference): no ceiling is needed to say which is better. Runs are
kept in ``--out`` and reused when the command is run again. Timing is in ``latent_layer.py``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from manifold_vae.experiments.engine import Job, load_finished, run_jobs
from manifold_vae.experiments.rows import Row
from manifold_vae.experiments.suites.circle import BenchmarkSettings
from manifold_vae.data import ManifoldBenchmark


def rows(n: int) -> list[Row]:
    s = f"S{n}"
    return [Row.of("box", "ER exact f + GA, Beta box", s, group_action=True, compact_hidden="box"),
            Row.of("normal", "ER exact f + GA, normal hidden", s, group_action=True,
                   compact_hidden="normal"),
            Row.of("ps", "Power Spherical", f"powerspherical:{s}")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 5, 10])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/hidden-space"))
    args = ap.parse_args()
    base = BenchmarkSettings()
    template = base.training.replace(steps=args.steps)
    jobs, dirs = [], {}
    for n in args.dims:
        bench = ManifoldBenchmark(f"S{n}", dim=base.dim, noise=base.noise, seed=base.data_seed)
        data = (bench.to_dict(), base.n_train, base.n_test)
        for row in rows(n):
            for seed in range(args.seeds):
                d = args.out / f"S{n}" / f"{row.key}-seed{seed}"
                dirs.setdefault(n, {}).setdefault(row.key, []).append(d)
                cfg = row.config(template, seed)
                jobs.append(Job(f"S{n} {row.name} seed {seed}", cfg, d, data))
    run_jobs(jobs, args.workers, args.out, force=False, progress=True, log=print)
    print(f"\n{args.seeds} seeds, {args.steps} steps; test IWAE nats/example (mean over seeds, "
          "± std over seeds); normal − box: paired per example, ± s.e. over test examples")
    for n, by in dirs.items():
        runs = {k: [load_finished(d, with_model=False) for d in ds] for k, ds in by.items()}
        mean = {k: sum(r["iwae"] for r in rs) / len(rs) for k, rs in runs.items()}

        def cell(k):
            v = [float(r["iwae"].mean()) for r in runs[k]]
            m = sum(v) / len(v)
            sd = math.sqrt(sum((x - m) ** 2 for x in v) / max(1, len(v) - 1))
            return f"{m:.3f} ± {sd:.3f}"
        d = mean["normal"] - mean["box"]
        dp = mean["ps"] - mean["box"]
        se = lambda t: float(t.std() / math.sqrt(len(t)))
        print(f"S{n}: box {cell('box')}  normal {cell('normal')}  PS {cell('ps')}  "
              f"normal−box {float(d.mean()):+.3f} ± {se(d):.3f}  PS−box {float(dp.mean()):+.3f} "
              f"± {se(dp):.3f}")


if __name__ == "__main__":
    main()
