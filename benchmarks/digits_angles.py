"""Relative-angle recovery on the rotated digits under training variants: the likelihood
(Bernoulli with dynamic binarization, or continuous Bernoulli on grey levels), the weight of the
in-plane turn-consistency term and the number of posterior hypotheses per image. Trains the chosen
rows of the images suite's digits table (its data, networks and steps; one seed unless told) and
prints, per row, the test IWAE, the suite's relative-angle metrics on the classes 2 3 4 5 6 7 9
(median error, fraction within 30°, ρ), ρ per class, and two diagnostics of the encoder's angle reading on grey test images: how often it moves
by more than 90° under a second binarization of the same image (Bernoulli rows), and under a turn
of the image by a uniform α (the quantity the turn-consistency term penalizes).

    python benchmarks/digits_angles.py --rows gauss,er-ga --likelihood continuous-bernoulli \
        --turn-consistency 10 [--hypotheses 2] [--steps 2500] [--seeds 1] \
        [--out results/digits-angles]

Finished runs in OUT are reused (same config and data); each setting needs its own OUT.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

import manifold_vae.experiments.suites.images as images
from manifold_vae.data.images import load_image_dataset, rotate_images
from manifold_vae.experiments.engine import load_finished
from manifold_vae.models.equivariance import planar_angle


@torch.no_grad()
def reading_flips(model, x: torch.Tensor, shape, seed: int = 0) -> dict:
    """Fractions of grey test images whose latent angle moves by more than 90°: under a second
    binarization (likelihoods that binarize) and under a turn by α ~ U[0, 2π)."""
    g = torch.Generator().manual_seed(seed)
    lik = model.likelihood

    def angle(obs):     # the chosen hypothesis's reading (the only one without hypotheses)
        return planar_angle(model.latent.mean_point(model.encode(obs)))

    def observe(v):
        return torch.bernoulli(v, generator=g) if lik.name == "bernoulli" else lik.transform(v)

    def far(e):
        return float((torch.remainder(e + math.pi, 2 * math.pi) - math.pi).abs().gt(math.pi / 2)
                     .double().mean())

    a = angle(observe(x))
    alpha = 2 * math.pi * torch.rand(len(x), generator=g)
    turned = rotate_images(x.reshape(len(x), *shape), alpha).reshape(len(x), -1)
    out = {"turn_flip": far(angle(observe(turned)) - a - alpha)}
    if lik.name == "bernoulli":
        out["binarization_flip"] = far(angle(observe(x)) - a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="gauss,er,er-ga",
                    help="digits rows of the images suite (gauss, vmf, powerspherical, er, er-ga)")
    ap.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "continuous-bernoulli"])
    ap.add_argument("--turn-consistency", type=float, default=0.0)
    ap.add_argument("--hypotheses", type=int, default=1,
                    help="posterior hypotheses per image (the model key `hypotheses`)")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="results/digits-angles")
    args = ap.parse_args()
    keep = args.rows.split(",")
    rows = images.image_rows
    images.image_rows = lambda d, s: [r for r in rows(d, s) if r.key in keep]
    base = images.ImageSuiteSettings()
    settings = images.ImageSuiteSettings(
        datasets=["digits"], seeds=args.seeds, workers=args.workers,
        digits=base.digits.replace(steps=args.steps, likelihood=args.likelihood,
                                   turn_consistency=args.turn_consistency,
                                   hypotheses=args.hypotheses))
    out = Path(args.out)
    res = images.reproduce_images(settings, out, log=lambda s: print(s, flush=True))
    d = res["datasets"]["digits"]
    data = load_image_dataset(out / "data" / "digits.npz")
    grey = torch.from_numpy(data["x"][np.flatnonzero(data["test"])])
    print(f"\nlikelihood {args.likelihood}, turn_consistency {args.turn_consistency:g}, "
          f"hypotheses {args.hypotheses}, "
          f"{args.steps} steps, {args.seeds} seed(s)")
    for row in d["rows"]:
        g = d["recovery"][row["key"]]
        flips = [reading_flips(load_finished(out / "runs" / "digits" / f"{row['key']}-seed{s}")["model"],
                               grey, data["image_shape"].tolist()) for s in range(args.seeds)]
        flips = {k: float(np.mean([f[k] for f in flips])) for k in flips[0]}
        per_class = ", ".join(f"{c} {v['relative_angle_correlation']:.2f}"
                              for c, v in g["per_class_mean"].items())
        print(f"{row['key']:15s} IWAE {row['test_iwae_mean']:9.2f}  median "
              f"{g['relative_angle_median_deg_mean']:5.1f}°  within 30° "
              f"{g['relative_angle_within_30deg_mean']:.3f}  ρ {g['relative_angle_correlation_mean']:.3f}"
              f"  flips: " + ", ".join(f"{k} {v:.3f}" for k, v in flips.items()))
        print(f"{'':15s} ρ per class: {per_class}")


if __name__ == "__main__":
    main()
