"""Does more training recover the renders' poses? One image-suite model (default: ER SO3xR1 with
the group-action encoder, the `splat` decoder) trained with the suite's settings but a chosen
number of steps; prints its test IWAE and the median geodesic pose errors after the best global
alignment (the SO(3) latent and the decoder's rotation), as in `reproduce --suite images`.

    python benchmarks/renders_steps.py --steps 4000 [--seed 0] [--out /tmp/renders-steps]

The data are the suite's (`ImageSuiteSettings` defaults, cached in OUT/data). Long: about
0.3 s per step on this 2-core machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from manifold_vae.experiments.image_suite import (ImageSuiteSettings, _dataset, _test_set,
                                                  render_recovery)
from manifold_vae.training.fit import run_fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latent", default="SO3xR1")
    ap.add_argument("--no-group-action", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/renders-steps"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = ImageSuiteSettings()
    data = _dataset("renders", settings, args.out, print)
    cfg = settings.fit_config("renders", args.latent, not args.no_group_action, args.seed,
                              data["image_shape"].tolist())
    cfg = dataclasses.replace(cfg, steps=args.steps, checkpoint_every=max(1, args.steps // 4),
                              threads=args.threads)
    with np.load(data["split_path"]) as split:
        x_train, x_test = torch.from_numpy(split["x_train"]), torch.from_numpy(split["x_test"])
    t0 = time.perf_counter()
    m = run_fit(cfg, x_train, args.out / f"run-{args.steps}-seed{args.seed}", x_test=x_test,
                force=True, log=lambda s: None)
    x, idx = _test_set(data)
    rec = render_recovery(m["_model"], x, data["rotation"][idx])
    print(json.dumps({"latent": args.latent, "group_action": not args.no_group_action,
                      "steps": args.steps, "seed": args.seed, "test_iwae": m["test_iwae"],
                      "median_geodesic_error_deg": rec.get("median_geodesic_error_deg"),
                      "decoder_median_geodesic_error_deg": rec.get("decoder_median_geodesic_error_deg"),
                      "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
