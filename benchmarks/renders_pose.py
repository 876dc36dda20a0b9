"""Why the renders' poses are not recovered: the image suite's renders model trained longer, and
the same conv encoder trained *with* the true rotations as a reference for what the images hold.

    python benchmarks/renders_pose.py --steps 4000 [--seed 0]      # ER SO3xR1 + group action
    python benchmarks/renders_pose.py --steps 1000 --likelihood continuous-bernoulli \
        --turn-consistency 10 --hypotheses 4                          # grey levels, 4 pose hypotheses
    python benchmarks/renders_pose.py --supervised --steps 1000    # encoder -> rotation, supervised
    python benchmarks/renders_pose.py --supervised --grey          # ... on the grey images
    python benchmarks/renders_pose.py --steps 1000 ... --search-grid 24   # + a pose search at test time
    python benchmarks/renders_pose.py --run DIR --search-grid 24   # measure a trained run again

The VAE mode trains one image-suite model (`ImageSuiteSettings` defaults, `splat` decoder; the
likelihood, turn-consistency weight and number of pose hypotheses can be changed) for a chosen
number of steps and prints its test IWAE, the suite's pose metrics (held-out median geodesic
error and accuracy at 30° after the best global alignment, for the SO(3) latent and the decoder
rotation; distance rank correlation; latent-neighbour precision), as `reproduce --suite images`
does, and how the encoder maps SO(3) (:func:`map_consistency`). ``--pose-grid G`` trains with a
pose search over the G rotations of a polyhedral group (the model key ``pose_grid``);
``--search-grid G`` measures the trained model again with that search switched on at test time
only (the decoder unchanged; the test IWAE is then the bound of the posterior it chooses).
The supervised mode trains the suite's conv encoder (same channels, hidden layer, batch, Adam
one-cycle) with a 6-vector Gram–Schmidt head to the true rotation (squared Frobenius loss), on
dynamically binarized images unless --grey, and prints the median and 90th-percentile geodesic
error on the test images (binarized once, as the suite's): no alignment is needed. Data: the
suite's renders, cached in OUT/data. About 0.3 s per VAE step and 0.07 s per supervised step
on this 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from manifold_vae.data.images import rotate_images
from manifold_vae.evaluation.alignment import geodesic_angle
from manifold_vae.experiments.rows import Row
from manifold_vae.experiments.suites.images import (RENDER_METRICS, ImageSuiteSettings,
                                                    image_dataset, image_rows, image_test_set,
                                                    render_recovery)
from manifold_vae.manifolds.rotations import rotation_from_6d
from manifold_vae.models.equivariance import camera_turns
from manifold_vae.models.networks import ConvEncoder
from manifold_vae.evaluation.bounds import evaluate
from manifold_vae.training import FitConfig
from manifold_vae.training.fit import run_fit
from manifold_vae.training.rundir import load_run


def map_consistency(learned: np.ndarray, true: np.ndarray, close_deg: float = 15.0) -> dict:
    """Is the encoder's map true pose -> latent pose continuous, and is it one-to-one? Over all
    pairs of test images: the latent distance of pairs within ``close_deg`` in truth (small:
    continuous) and the true distance of pairs within ``close_deg`` in the latent (small:
    one-to-one; large: poses far apart share a latent pose). Distances are geodesic, degrees."""
    i, j = np.triu_indices(len(true), 1)
    d_true = np.degrees(geodesic_angle(true[i], true[j]))
    d_latent = np.degrees(geodesic_angle(learned[i], learned[j]))
    near_true, near_latent = d_true < close_deg, d_latent < close_deg
    return {"latent_distance_of_pairs_close_in_truth_median_deg": float(np.median(d_latent[near_true])),
            "true_distance_of_pairs_close_in_latent_median_deg": float(np.median(d_true[near_latent])),
            "pairs_close_in_latent_over_90deg_apart": float((d_true[near_latent] > 90).mean())}


def supervised(data: dict, settings: ImageSuiteSettings, steps: int, seed: int, grey: bool) -> dict:
    torch.manual_seed(seed)
    x, rot = torch.from_numpy(data["x"]), torch.from_numpy(data["rotation"]).float()
    test = torch.from_numpy(data["test"])
    x_train, r_train = x[~test], rot[~test]
    cfg = settings.renders
    x_test = x[test] if grey else image_test_set(data, cfg)[0]
    enc = ConvEncoder(data["image_shape"].tolist(), cfg.model.hidden, 6,
                      channels=cfg.model.conv_channels)
    opt = torch.optim.Adam(enc.parameters(), cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.25)
    for _ in range(steps):
        i = torch.randint(len(x_train), (cfg.batch_size,))
        xb = x_train[i] if grey else torch.bernoulli(x_train[i])
        loss = (rotation_from_6d(enc(xb)) - r_train[i]).pow(2).sum((-2, -1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        pred = rotation_from_6d(enc(x_test)).double().numpy()
    err = np.degrees(geodesic_angle(pred, rot[test].double().numpy()))
    return {"median_geodesic_error_deg": float(np.median(err)),
            "p90_geodesic_error_deg": float(np.quantile(err, 0.9))}


@torch.no_grad()
def turn_residuals(model, x: torch.Tensor, seed: int = 0) -> dict:
    """How far the encoder is from the in-plane turn consistency the turn term asks for: the
    geodesic angle between the rotation read from each test image turned by ``α`` (uniform,
    seeded) and ``R_z(α)`` times the rotation read from the image itself (degrees, medians over
    the images). ``same_head``: per candidate (hypothesis, or hypothesis × grid rotation), head against the same head (what the turn term
    penalises); ``chosen``: the hypothesis the model chooses for the turned image against the one
    it chooses for the image."""
    gen = torch.Generator().manual_seed(seed)
    b = len(x)
    alpha = (2 * math.pi * torch.rand(b, generator=gen, dtype=x.dtype)).to(x.device)
    turned = rotate_images(x.reshape(b, *model.image_shape), alpha).reshape(b, -1)

    def read(v):
        obs = model.likelihood.observe(v)
        raw = model.raw(obs).float()
        rot = model.decoder.rotation(model.latent.mean_point(model.candidates(raw)))
        return rot, model.chosen(obs, raw)                       # (C, b, 3, 3), (b,)

    (r, chosen), (r_turned, chosen_turned) = read(x), read(turned)
    target = camera_turns(alpha).to(r.dtype)[None] @ r
    angle = torch.rad2deg(torch.arccos((((r_turned * target).sum((-2, -1)) - 1) / 2).clamp(-1, 1)))
    rows = torch.arange(b, device=x.device)
    both = (r_turned[chosen_turned, rows] * target[chosen, rows]).sum((-2, -1))
    return {"turn_residual_same_head_median_deg": angle.median(1).values.tolist(),
            "turn_residual_chosen_median_deg":
                float(torch.rad2deg(torch.arccos(((both - 1) / 2).clamp(-1, 1))).median())}


def measure(model, data: dict, config) -> dict:
    """The suite's pose metrics, :func:`map_consistency` and :func:`turn_residuals` on the test
    images."""
    x, idx = image_test_set(data, config)
    rec = render_recovery(model, x, data["rotation"][idx])
    model.eval()
    return {**{k: rec.get(k) for k in RENDER_METRICS},
            **map_consistency(rec["_latent"], data["rotation"][idx]),
            **turn_residuals(model, x)}


def test_iwae(model, data: dict, config) -> float:
    """The test IWAE of ``model`` on the suite's test rows (the config's K)."""
    with np.load(data["split_path"]) as split:
        x_test = torch.from_numpy(split["x_test"])
    return evaluate(model, x_test, k=config.iwae_k)["iwae"]


def vae(data: dict, settings: ImageSuiteSettings, steps: int, seed: int, latent: str,
        group_action: bool, threads: int, out: Path, as_suite: bool = False, **model) -> dict:
    """``model``: ModelConfig keys changed from the suite's (likelihood, turn_consistency,
    hypotheses, pose_grid)."""
    grid = {k: v for k, v in model.items() if k == "pose_grid"}    # needs the row's latent
    template = settings.template("renders", data["image_shape"].tolist()).replace(
        steps=steps, **{k: v for k, v in model.items() if k != "pose_grid"})
    row = Row.of("vae", "VAE", latent, group_action=group_action)
    if as_suite:       # the suite's own ER + GA row, every key as given (as its engine passes it)
        row = next(r for r in image_rows("renders", settings) if r.key == "er-ga")
    cfg = row.config(template, seed).replace(threads=threads, **grid)
    if as_suite:
        cfg = FitConfig.from_dict(cfg.to_dict())
    with np.load(data["split_path"]) as split:
        x_train, x_test = torch.from_numpy(split["x_train"]), torch.from_numpy(split["x_test"])
    tag = "".join(f"-{k}{v}" for k, v in sorted(model.items()))
    res = run_fit(cfg, x_train, out / f"run-{latent}-{steps}{tag}-seed{seed}", x_test=x_test,
                  force=True, log=lambda s: None)
    return {"test_iwae": res.metrics["test_iwae"], "run": str(res.run_dir),
            **measure(res.model, data, cfg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="default: VAE 4000, supervised 1000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--supervised", action="store_true")
    ap.add_argument("--grey", action="store_true", help="supervised on the grey images")
    ap.add_argument("--latent", default="SO3xR1")
    ap.add_argument("--no-group-action", action="store_true")
    ap.add_argument("--likelihood", choices=["bernoulli", "continuous-bernoulli"], default=None,
                    help="default: the suite's")
    ap.add_argument("--turn-consistency", type=float, default=None, help="default: the suite's")
    ap.add_argument("--hypotheses", type=int, default=None, help="default: the suite's")
    ap.add_argument("--pose-grid", type=int, default=None, help="train with a pose search over "
                    "12, 24 or 60 grid rotations (default: the suite's, none)")
    ap.add_argument("--search-grid", type=int, default=None, help="also measure the trained "
                    "model with a test-time pose search over 12, 24 or 60 grid rotations")
    ap.add_argument("--run", type=Path, default=None, help="measure this trained run (with "
                    "--search-grid) instead of training one")
    ap.add_argument("--as-suite", action="store_true", help="train the suite's ER + GA row as "
                    "the suite does (no automatic restarts or early stopping; default: fit's "
                    "automatic defaults)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/renders-pose"))
    args = ap.parse_args()
    if args.steps is not None and args.steps < 8:
        ap.error("--steps must be at least 8 (the one-cycle schedule's warm-up)")
    torch.set_num_threads(args.threads)
    settings = ImageSuiteSettings()
    data = image_dataset("renders", settings, args.out, print)
    t0 = time.perf_counter()
    if args.run is not None:
        model, cfg, _ = load_run(args.run)
        steps = cfg.steps
        res = {"mode": "vae", "run": str(args.run), "test_iwae": test_iwae(model, data, cfg),
               **measure(model, data, cfg)}
        args.seed = cfg.seed
    elif args.supervised:
        steps = args.steps or 1000
        res = {"mode": "supervised", "grey": args.grey,
               **supervised(data, settings, steps, args.seed, args.grey)}
    else:
        steps = args.steps or 4000
        model = {k: v for k, v in (("likelihood", args.likelihood),
                                   ("turn_consistency", args.turn_consistency),
                                   ("hypotheses", args.hypotheses),
                                   ("pose_grid", args.pose_grid)) if v is not None}
        res = {"mode": "vae", "latent": args.latent, "group_action": not args.no_group_action,
               **model, **vae(data, settings, steps, args.seed, args.latent,
                              not args.no_group_action, args.threads, args.out,
                              as_suite=args.as_suite, **model)}
    res.update(steps=steps, seed=args.seed, seconds=time.perf_counter() - t0)
    print(json.dumps(res), flush=True)
    if args.search_grid and res["mode"] == "vae":
        t = time.perf_counter()
        model, cfg, _ = load_run(res["run"])
        model.set_pose_grid(args.search_grid)
        print(json.dumps({"mode": "test-time pose search", "search_grid": args.search_grid,
                          "run": res["run"], "test_iwae": test_iwae(model, data, cfg),
                          **measure(model, data, cfg),
                          "seconds": time.perf_counter() - t}), flush=True)


if __name__ == "__main__":
    main()
