"""``reproduce --suite images``: manifold latents on images with a known symmetry.

Two datasets (:mod:`..data.images`): rotated handwritten digits (the circle acts by rotating the
picture) and renders of a chain of cubes at random orientations (SO(3) acts). Every model has the
same convolutional encoder and decoder, Bernoulli likelihood with dynamic binarization, optimiser,
KL warm-up and number of steps within a dataset; the test set is binarized once (seeded) and the
IWAE bound (K importance samples) is reported in nats per image.

Rows — digits: Gaussian VAE of the ER model's dimension ``1 + k``, von Mises–Fisher and Power
Spherical VAEs on ``S^{1+k}`` (same dimension), ER on ``S1xRk`` with and without the group-action
encoder. Renders: Gaussian VAE of dimension ``3 + k``, ER on ``SO3xRk`` with and without group
action (the spherical families have no posterior on SO(3) × R^k, so they have no row there).

What the latent learned: the S1 coordinate of the ER models against the true angle (Fisher–Lee
circular correlation after the best global rotation/reflection, on the test digits of classes 2, 3,
4, 5, 7, overall and per class) and the SO(3) coordinate against the true rotation (median
geodesic error after the best global alignment ``A R B``), see :mod:`..evaluation.alignment`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...data.images import load_image_dataset, rendered_rotations, rotated_digits, save_image_dataset
from ...evaluation.alignment import align_angles, align_rotations, fisher_lee_correlation
from ...likelihoods import fixed_binarization
from ...manifolds import parse_latent
from ...manifolds.rotations import quaternion_to_matrix
from ...manifolds.so3 import matrix_to_quaternion, quaternion_exp, quaternion_multiply
from ...models.networks import RotatingConvDecoder
from ...training import FitConfig
from ..engine import Job, load_finished, run_jobs, seed_statistics, write_results
from ..figures import plot_angle_recovery, plot_error_histogram, plot_grouped_bars, plot_image_grid
from ..rows import Row, sphere_peer_rows

DATASETS = ("digits", "renders")
ASYMMETRIC_DIGITS = (2, 3, 4, 5, 7)   # no rotational self-symmetry and no rotated twin


def image_training(**changes) -> FitConfig:
    """The run config image models start from: conv encoder, Bernoulli likelihood with dynamic
    binarization, batch 128, Adam 1e-3 one-cycle, KL warm-up over the first 20%."""
    base = dict(hidden=[256], likelihood="bernoulli", conv_channels=[32, 64], batch_size=128,
                lr=1e-3, kl_warmup=0.2, iwae_k=50)
    return FitConfig(**{**base, **changes})


@dataclass
class ImageSuiteSettings:
    """Sizes of the image suite (defaults: the full table; ``quick()``: a smoke test). Each
    dataset's models start from its own run config (``digits``, ``renders``)."""

    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    data_seed: int = 0
    digits_size: int = 16            # canvas side; the digit fills its central 3/4
    digits_copies: int = 8           # rotated copies of each of the 1797 digits
    digits_style: int = 4            # k of S1xRk: dimensions for everything but the angle
    renders_n: int = 8000
    renders_size: int = 32
    renders_style: int = 1           # k of SO3xRk
    seeds: int = 2
    workers: int = 0
    # digits: a decoder equivariant to turns, an encoder equivariant to quarter turns
    digits: FitConfig = field(default_factory=lambda: image_training(
        network="conv-rotate", encoder_symmetry=4, image_shape=[1, 16, 16], steps=2500))
    # renders: a decoder that turns a learned 3D object
    renders: FitConfig = field(default_factory=lambda: image_training(
        network="splat", image_shape=[1, 32, 32], steps=1000))

    @classmethod
    def quick(cls) -> "ImageSuiteSettings":
        base = cls()
        return cls(digits_copies=2, renders_n=1000, seeds=1,
                   digits=base.digits.replace(steps=300, iwae_k=10, conv_channels=[16, 32]),
                   renders=base.renders.replace(steps=120, iwae_k=10, conv_channels=[16, 32]))

    def with_steps(self, steps: int) -> "ImageSuiteSettings":
        return dataclasses.replace(self, digits=self.digits.replace(steps=steps),
                                   renders=self.renders.replace(steps=steps))

    def steps(self, dataset: str) -> int:
        return getattr(self, dataset).steps

    def data_key(self, dataset: str) -> dict:
        if dataset == "digits":
            return {"size": self.digits_size, "copies": self.digits_copies, "seed": self.data_seed}
        return {"n": self.renders_n, "size": self.renders_size, "seed": self.data_seed}

    def template(self, dataset: str, image_shape) -> FitConfig:
        return getattr(self, dataset).replace(image_shape=list(image_shape))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "digits": self.digits.to_dict(), "renders": self.renders.to_dict()}


def _with_style(base: str, k: int) -> str:
    return base if k == 0 else f"{base}xR{k}"


def image_rows(dataset: str, settings: ImageSuiteSettings) -> list[Row]:
    """The rows of ``dataset``: a Gaussian VAE of the ER model's dimension, the spherical peers
    of the same dimension (digits only: there is no spherical posterior on SO(3) × R^k), ER with
    and without the group action."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown image dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    base, k = ("S1", settings.digits_style) if dataset == "digits" else ("SO3", settings.renders_style)
    d, er = parse_latent(base).dim + k, _with_style(base, k)
    peers = sphere_peer_rows(f"S{d}", suffix=f", S{d}") if dataset == "digits" else []
    return [Row.of("gauss", f"Gaussian VAE, R{d}", f"R{d}"), *peers,
            Row.of("er", f"ER {er}, exact f", er),
            Row.of("er-ga", f"ER {er}, exact f + group action", er, group_action=True)]


def image_dataset(dataset: str, settings: ImageSuiteSettings, out: Path, log) -> dict:
    """The dataset (cached in ``out/data`` under its settings) and its train/test file for the
    training workers."""
    path = out / "data" / f"{dataset}.npz"
    key_path = path.with_suffix(".json")
    key = settings.data_key(dataset)
    if not (path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key):
        t = time.perf_counter()
        if dataset == "digits":
            data = rotated_digits(size=key["size"], copies=key["copies"], seed=key["seed"])
        else:
            data = rendered_rotations(key["n"], size=key["size"], seed=key["seed"])
        save_image_dataset(path, data)
        np.savez(path.with_name(f"{dataset}-split.npz"), x_train=data["x"][~data["test"]],
                 x_test=data["x"][data["test"]])
        key_path.write_text(json.dumps(key))
        log(f"{dataset}: wrote {path} ({len(data['x'])} images) in {time.perf_counter() - t:.0f} s")
    data = load_image_dataset(path)
    data["split_path"] = str(path.with_name(f"{dataset}-split.npz"))
    return data


def reproduce_images(settings: ImageSuiteSettings, out: Path, *, force: bool = False,
                     progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the image suite; writes results.json, results.md and figures."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    datasets, jobs, runs = {}, [], {}
    for name in settings.datasets:
        data = image_dataset(name, settings, out, log)
        datasets[name] = data
        template = settings.template(name, data["image_shape"].tolist())
        for row in image_rows(name, settings):
            for seed in range(settings.seeds):
                run_dir = out / "runs" / name / f"{row.key}-seed{seed}"
                runs.setdefault(name, {}).setdefault(row.key, []).append(run_dir)
                jobs.append(Job(f"{name} {row.name} seed {seed}", row.config(template, seed),
                                run_dir, data["split_path"]))
    run_jobs(jobs, settings.workers, out, force=force, progress=progress, log=log)
    results = {"suite": "images", "settings": settings.to_dict(), "datasets": {}}
    for name, data in datasets.items():
        loaded = {key: [load_finished(d) for d in dirs] for key, dirs in runs[name].items()}
        results["datasets"][name] = _summarize(name, settings, data, loaded, out)
    d, r = results["datasets"].get("digits"), results["datasets"].get("renders")
    if d:
        results["circular_correlation"] = d["recovery"]["er-ga"]["circular_correlation_mean"]
        results["circular_correlation_per_class"] = d["recovery"]["er-ga"]["per_class_mean"]
    if r:
        results["median_geodesic_error_deg"] = r["recovery"]["er-ga"]["median_geodesic_error_deg_mean"]
    _bars(results, out / "iwae.png")
    return write_results(out, results, results_markdown, t_start, log, "figures")


# ---------------------------------------------------------------------- analysis
def image_test_set(data: dict, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The binarized test images every model was evaluated on, and their row numbers."""
    idx = np.flatnonzero(data["test"])
    x = torch.from_numpy(data["x"][idx])
    return fixed_binarization(x, seed=seed), idx


@torch.no_grad()
def latent_angles(model, x: torch.Tensor) -> np.ndarray:
    """The polar angle of the first two coordinates of each posterior's central latent point:
    the S1 factor's angle for ``S1xRk``, the angle the rotating decoder reads for any latent."""
    return RotatingConvDecoder.angle(model.embed(x)).double().numpy()


@torch.no_grad()
def so3_matrices(model, x: torch.Tensor) -> np.ndarray:
    """The SO(3) factor of each posterior's central latent point (the first factor), N×3×3."""
    m = model.embed(x)
    return m[:, :9].double().reshape(-1, 3, 3).numpy()


@torch.no_grad()
def decoder_rotations(model, x: torch.Tensor) -> np.ndarray | None:
    """The rotation a splat decoder applies to its 3D object for each posterior's central point
    (defined for every latent space); ``None`` for decoders without one."""
    if not hasattr(model.decoder, "rotation"):
        return None
    return model.decoder.rotation(model.embed(x)).double().numpy()


def digit_recovery(model, x: torch.Tensor, angle: np.ndarray, digit: np.ndarray) -> dict:
    """Angle recovery on the asymmetric classes: overall and per-class Fisher–Lee correlation
    after one global alignment, per-example errors."""
    sel = np.isin(digit, ASYMMETRIC_DIGITS)
    learned = latent_angles(model, x[torch.from_numpy(sel)])
    fit = align_angles(learned, angle[sel])
    per_class = {}
    for cls in ASYMMETRIC_DIGITS:
        c = digit[sel] == cls
        if c.sum() >= 3:
            per_class[str(cls)] = fisher_lee_correlation(fit["aligned"][c], angle[sel][c])
    err = np.degrees(np.abs(fit["error"]))
    return {"circular_correlation": fit["circular_correlation"], "per_class": per_class,
            "reflection": fit["reflection"], "median_abs_error_deg": float(np.median(err)),
            # the typical failure: right up to a half turn (a digit read upside down)
            "fraction_within_30_deg": float((err <= 30).mean()),
            "fraction_half_turn": float((err >= 150).mean()),
            "_aligned": fit["aligned"], "_true": angle[sel], "_digit": digit[sel], "_errors": err}


def render_recovery(model, x: torch.Tensor, rotation: np.ndarray) -> dict:
    """Median geodesic error after the best global alignment, of the latent SO(3) factor (ER
    models) and of the decoder's rotation (any latent with a splat decoder)."""
    out = {}
    if model.manifold.factors()[0].spec == "SO3" and not model.spec.on_sphere:
        fit = align_rotations(so3_matrices(model, x), rotation)
        out.update(median_geodesic_error_deg=fit["median_geodesic_error_deg"],
                   inverse=fit["inverse"], _errors=fit["errors_deg"])
    dec = decoder_rotations(model, x)
    if dec is not None:
        out["decoder_median_geodesic_error_deg"] = align_rotations(dec, rotation)["median_geodesic_error_deg"]
    return out


def _summarize(name, settings, data, loaded, out: Path) -> dict:
    x_test, idx = image_test_set(data, getattr(settings, name).split_seed)
    rows = [{**row.to_dict(), **seed_statistics(loaded[row.key]), "steps": settings.steps(name)}
            for row in image_rows(name, settings)]
    recovery, figs = {}, out / "figures"
    figs.mkdir(exist_ok=True)
    for row in image_rows(name, settings):
        key = row.key
        per_seed = []
        for r in loaded[key]:
            if name == "digits":
                per_seed.append(digit_recovery(r["model"], x_test, data["angle"][idx], data["digit"][idx]))
            else:
                per_seed.append(render_recovery(r["model"], x_test, data["rotation"][idx]))
        rec = {}
        for field_ in ("circular_correlation", "median_abs_error_deg", "fraction_within_30_deg",
                       "fraction_half_turn", "median_geodesic_error_deg",
                       "decoder_median_geodesic_error_deg"):
            vals = [p[field_] for p in per_seed if field_ in p]
            if vals:
                rec[f"{field_}_mean"] = float(np.mean(vals))
                rec[f"{field_}_per_seed"] = vals
        if name == "digits":
            rec["per_class_mean"] = {c: float(np.mean([p["per_class"][c] for p in per_seed]))
                                     for c in per_seed[0]["per_class"]}
        recovery[key] = rec
        if key == "er-ga":
            _pictures(name, data, x_test, loaded[key][0]["model"], per_seed[0], figs)
    return {"rows": rows, "recovery": recovery, "n_train": int((~data["test"]).sum()),
            "n_test": int(data["test"].sum()), "image_shape": data["image_shape"].tolist()}


# ---------------------------------------------------------------------- pictures
@torch.no_grad()
def _pictures(name, data, x_test, model, rec: dict, figs: Path) -> None:
    shape = data["image_shape"].tolist()
    n_show = 12
    x = x_test[:n_show]
    recon = model.decode_mean(model.embed(x))
    plot_image_grid([x.numpy(), recon.numpy()], figs / f"{name}_reconstructions.png",
                    image_shape=shape, row_labels=["test", "recon."],
                    title=f"{name}: test images and reconstructions ({model.spec}, group action)")
    steps = 12
    if name == "digits":
        digit = data["digit"][np.flatnonzero(data["test"])]
        picks = [int(np.flatnonzero(digit == c)[0]) for c in ASYMMETRIC_DIGITS]
        m = model.embed(x_test[picks])                              # (5, 2 + k)
        t = torch.arange(steps, dtype=m.dtype) * (2 * math.pi / steps)
        walk = m[:, None, :].repeat(1, steps, 1)
        walk[..., 0], walk[..., 1] = torch.cos(t), torch.sin(t)
        imgs = model.decode_mean(walk)
        plot_image_grid(list(imgs.numpy()), figs / "digits_circle_walk.png", image_shape=shape,
                        row_labels=[str(c) for c in ASYMMETRIC_DIGITS],
                        title="decoding once around the latent circle (style part held fixed)")
        plot_angle_recovery(rec["_true"], rec["_aligned"], rec["_digit"],
                            figs / "digits_angle_recovery.png",
                            title=f"learned S1 angle vs true angle, classes 2 3 4 5 7 "
                                  f"(Fisher–Lee ρ = {rec['circular_correlation']:.3f})")
        plot_error_histogram(rec["_errors"], figs / "digits_angle_errors.png",
                             xlabel="|aligned learned angle − true angle| (deg)",
                             title="rotated digits: angle-recovery error")
    else:
        m = model.embed(x_test[:1])[0]
        r0 = matrix_to_quaternion(m[:9].reshape(3, 3).double())
        t = torch.arange(steps, dtype=torch.float64) * (2 * math.pi / steps)
        rows = []
        for axis in torch.eye(3, dtype=torch.float64):
            q = quaternion_multiply(quaternion_exp(t[:, None] * axis), r0.expand(steps, 4))
            walk = m.double().repeat(steps, 1)
            walk[:, :9] = quaternion_to_matrix(q).reshape(steps, 9)
            rows.append(model.decode_mean(walk.float()).numpy())
        plot_image_grid(rows, figs / "renders_great_circles.png", image_shape=shape,
                        row_labels=["x axis", "y axis", "z axis"],
                        title="decoding along three great circles of SO(3) through one test pose")
        plot_error_histogram(rec["_errors"], figs / "renders_rotation_errors.png",
                             xlabel="geodesic error after global alignment (deg)",
                             title="renders: rotation-recovery error")


def _bars(results: dict, path: Path) -> None:
    for name, res in results["datasets"].items():
        rows = res["rows"]
        plot_grouped_bars([name], [r["name"] for r in rows], [[r["test_iwae_mean"]] for r in rows],
                          [[r["test_iwae_std"]] for r in rows],
                          path.with_name(f"iwae_{name}.png"), ylabel="test IWAE (nats per image)")


# ---------------------------------------------------------------------- report
def results_markdown(res: dict) -> str:
    s = res["settings"]
    d, r = s["digits"], s["renders"]
    dm, rm = d["model"], r["model"]
    lines = ["# Image suite: manifold latents on rotated digits and rendered rotations", "",
             f"Every model of a dataset has the same conv encoder (channels {dm['conv_channels']}, "
             f"then {dm['hidden']}; digits: equivariant to turns by 2π/{dm['encoder_symmetry']} "
             f"where the model has an output that can turn) and decoder (digits: "
             f"`{dm['network']}`, renders: `{rm['network']}`), Bernoulli likelihood with dynamic "
             f"binarization, Adam {d['lr']} one-cycle, batch {d['batch_size']}, KL warm-up over the "
             f"first {d['kl_warmup']:.0%} and the same number of steps (digits {d['steps']}, "
             f"renders {r['steps']}); {s['seeds']} seed(s). Test IWAE with K={d['iwae_k']} "
             f"(nats per image) on a test set binarized once. Mean ± std over seeds.", ""]
    for name, d in res["datasets"].items():
        rec = d["recovery"]
        if name == "digits":
            extra = ("angle recovery ρ", lambda k: _fmt(rec[k].get("circular_correlation_mean"), 3))
        else:
            extra = ("SO(3) latent error", lambda k: _fmt(rec[k].get("median_geodesic_error_deg_mean"), 1, "°"))
        lines += [f"## {name} ({d['n_train']} train / {d['n_test']} test images, "
                  f"{'×'.join(map(str, d['image_shape']))})", "",
                  f"| model | test ELBO | test IWAE | {extra[0]} |"
                  + (" decoder-rotation error |" if name == "renders" else "") + " s/step |",
                  "|---|---|---|---|" + ("---|" if name == "renders" else "") + "---|"]
        best = max(d["rows"], key=lambda r: r["test_iwae_mean"])
        for r in d["rows"]:
            mark = " **(best)**" if r is best else ""
            cells = [f"{r['name']}{mark}", f"{r['test_elbo_mean']:.2f} ± {r['test_elbo_std']:.2f}",
                     f"{r['test_iwae_mean']:.2f} ± {r['test_iwae_std']:.2f}", extra[1](r["key"])]
            if name == "renders":
                cells.append(_fmt(rec[r["key"]].get("decoder_median_geodesic_error_deg_mean"), 1, "°"))
            cells.append(f"{r['seconds_per_step_mean']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if name == "digits":
            pc = ", ".join(f"{c}: {v:.3f}" for c, v in rec["er-ga"]["per_class_mean"].items())
            g = rec["er-ga"]
            lines += [f"Angle recovery: Fisher–Lee circular correlation between the polar angle of "
                      f"the latent's first two coordinates (the S1 factor for ER) and the true angle "
                      f"on the test digits of classes 2 3 4 5 7, after one global rotation/"
                      f"reflection. ER + group action per class: {pc}; "
                      f"{g['fraction_within_30_deg_mean']:.0%} of these test digits within 30° of "
                      f"the true angle, {g['fraction_half_turn_mean']:.0%} within 30° of a half "
                      f"turn from it.", ""]
        else:
            lines += ["SO(3) latent error: median geodesic distance between the ER model's SO(3) "
                      "coordinate and the true rotation after the best global alignment A·R·B "
                      "(or A·Rᵀ·B); decoder-rotation error: the same for the rotation the splat "
                      "decoder applies to its 3D object, defined for every latent.", ""]
    lines.append("Figures in `figures/`: reconstructions, the circle walk, the SO(3) great circles, "
                 "angle recovery, error histograms.")
    return "\n".join(lines) + "\n"


def _fmt(v, digits: int, unit: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"
