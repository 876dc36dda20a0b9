"""The pose search (``manifold_vae.models.pose_search``) on the images suite's renders: pose error
against training steps, over seeds, and on the hard variant's binarized silhouettes.

    python benchmarks/pose_search.py --steps 250,500,1000,1500 --seeds 0 --threads 2
    python benchmarks/pose_search.py --steps 1500 --seeds 0,1,2 --threads 2
    python benchmarks/pose_search.py --steps 1500 --seeds 0 --binarized --threads 2

The data are the suite's (8000 renders of the cube chain at 32×32, data seed 0, the same 800 test
images); each run trains the suite's ``PoseSearchConfig`` with the given steps and seed on the
7200 training images and reads the test poses by the search. ``--binarized`` trains and reads on
silhouettes binarized once (seeded) at 0.5 — the hard variant's pictures, which cannot tell a pose
from its mirror image. Prints one JSON line per run (the suite's pose metrics, the test bound,
seconds) and writes them all to ``--out`` (a JSON file) when given.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from manifold_vae.data.images import rendered_rotations
from manifold_vae.experiments.suites.images import ImageSuiteSettings, rotation_recovery
from manifold_vae.models.pose_search import fit_pose_search, search_poses


def suite_renders(n: int | None, binarized: bool) -> tuple[dict, torch.Tensor]:
    """The suite's renders (``n`` of them; ``None``: the suite's count) and their images as a
    tensor, binarized at 0.5 when asked."""
    key = ImageSuiteSettings().data_key("renders")
    data = rendered_rotations(n or key["n"], size=key["size"], seed=key["seed"])
    x = torch.from_numpy(data["x"])
    return data, (x > 0.5).float() if binarized else x


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", default="1500", help="comma-separated training steps")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--binarized", action="store_true", help="silhouettes binarized at 0.5")
    p.add_argument("--n", type=int, default=None, help="renders (default: the suite's 8000)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None, help="write the runs to this JSON file")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = ImageSuiteSettings()
    size = settings.data_key("renders")["size"]
    data, x = suite_renders(args.n, args.binarized)
    test = torch.from_numpy(data["test"])
    runs = []
    for n_steps in steps:
        for seed in seeds:
            cfg = settings.renders_search.replace(steps=n_steps, seed=seed)
            t = time.perf_counter()
            model, _ = fit_pose_search(x[~test], size, cfg)
            train_seconds = time.perf_counter() - t
            found = search_poses(model, x[test], cfg)
            rec = rotation_recovery(found["rotations"].numpy(), data["rotation"][data["test"]])
            run = {"steps": n_steps, "seed": seed, "binarized": args.binarized,
                   **{k: v for k, v in rec.items() if not k.startswith("_")},
                   "test_bound": float(found["bound"].mean()), "train_seconds": train_seconds,
                   "search_seconds": time.perf_counter() - t - train_seconds}
            print(json.dumps(run), flush=True)
            runs.append(run)
    for n_steps in steps:
        med = [r["median_geodesic_error_deg"] for r in runs if r["steps"] == n_steps]
        acc = [r["accuracy_30deg"] for r in runs if r["steps"] == n_steps]
        print(f"{n_steps} steps: median error {np.mean(med):.1f}° (seeds {', '.join(f'{m:.1f}' for m in med)}), "
              f"accuracy at 30° {np.mean(acc):.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)
    return runs


if __name__ == "__main__":
    main()
