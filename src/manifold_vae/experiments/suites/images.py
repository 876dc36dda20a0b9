"""``reproduce --suite images``: manifold latents on images with a known symmetry.

Two datasets (:mod:`..data.images`): rotated handwritten digits (the circle acts by rotating the
picture) and renders of a chain of cubes at random orientations (SO(3) acts). Every model has the
same convolutional encoder and decoder, likelihood, optimiser, KL warm-up and number of steps
within a dataset; the IWAE bound (K importance samples) is reported in nats per image. By default
the models see grey levels (continuous Bernoulli), train with the in-plane turn-consistency term
and give several posterior hypotheses per image (:data:`IDENTIFYING`); ``binarized()`` is the hard
variant (Bernoulli with dynamic binarization, the test set binarized once, one hypothesis, no
turn term).

Rows — digits: Gaussian VAE of the ER model's dimension ``1 + k``, von Mises–Fisher and Power
Spherical VAEs on ``S^{1+k}`` (same dimension), ER on ``S1xRk`` with and without the group-action
encoder. Renders: Gaussian VAE of dimension ``3 + k``, ER on ``SO3xRk`` with and without group
action (the spherical families have no posterior on SO(3) × R^k, so they have no row there), and
the pose search (:mod:`...models.pose_search`: a rigid object under the Haar prior whose poses are
marginalised over Haar draws, no encoder; grey levels only, so not in the binarized variant). The
renders' pose row — whose figures ``results.json`` reports at the top — is the pose search when it
ran, else the best valid ER row.

What the latent learned. Digits: the angle is identifiable only *relative to the source
image* (with a uniform angle prior each source digit's "upright" is a free offset), so the score
is the field's own: for every pair of test copies of one source digit, the error of the latent
angle difference against the true difference (one global reflection allowed), its median and the
fraction within 30°, and the circular correlation of the angles measured from each source's first
copy — for every row (the polar angle of the latent's first two coordinates: the S1 factor for
ER, what the rotating decoder turns by), per class, with the near half-turn-symmetric classes 0,
1, 8 scored modulo π and reported apart. Renders: the SO(3) coordinate against the true rotation
(median geodesic error and accuracy at 30° after the best global alignment ``A R B`` fitted on one
half of the test images and scored on the other; the fit-free distance rank correlation and
latent-neighbour precision), see :mod:`..evaluation.alignment`.
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

from ...common.files import read_json, save_arrays, write_json
from ...data.images import load_image_dataset, rendered_rotations, rotated_digits, save_image_dataset
from ...evaluation.alignment import (HAAR_MEDIAN_DEG, best_relative_reflection, haar_angle_cdf,
                                     held_out_rotation_errors, relative_angle_correlation,
                                     relative_angle_errors, relative_angle_summary,
                                     relative_to_first, rotation_distance_agreement,
                                     same_source_pairs)
from ...likelihoods import LIKELIHOODS
from ...manifolds import parse_latent
from ...manifolds.rotations import quaternion_to_matrix
from ...manifolds.so3 import matrix_to_quaternion, quaternion_exp, quaternion_multiply
from ...models.networks import RotatingConvDecoder
from ...models.pose_search import (PoseSearchConfig, fit_pose_search, load_pose_search,
                                   save_pose_search, search_poses)
from ...training import FitConfig
from ...training.defaults import UNIMODAL_START
from ..engine import Job, data_key, load_finished, mean_std, run_jobs, seed_statistics, write_results
from ..figures import plot_angle_recovery, plot_error_histogram, plot_grouped_bars, plot_image_grid
from ..rows import Row, sphere_peer_rows

DATASETS = ("digits", "renders")
HALF_TURN_DIGITS = (0, 1, 8)             # look alike after a half turn: scored modulo π
REST_DIGITS = (2, 3, 4, 5, 6, 7, 9)      # the classes the targets are stated on
DIGIT_METRICS = ("relative_angle_median_deg", "relative_angle_within_30deg",
                 "relative_angle_correlation")
# What lets the models find the symmetry (measured in the README): grey levels scored by the
# continuous Bernoulli, the label-free in-plane turn-consistency term, several posterior hypotheses
# per image (each image takes the one whose central point decodes it best).
IDENTIFYING = {"digits": dict(likelihood="continuous-bernoulli", turn_consistency=10.0, hypotheses=2),
               "renders": dict(likelihood="continuous-bernoulli", turn_consistency=10.0, hypotheses=4)}
BINARIZED = dict(likelihood="bernoulli", turn_consistency=0.0, hypotheses=1)
RENDER_METRICS = ("median_geodesic_error_deg", "accuracy_30deg", "distance_rank_correlation",
                  "latent_neighbour_precision", "decoder_median_geodesic_error_deg")
POSE_SEARCH = ("pose-search", "Pose search: Haar prior on SO(3), rigid surfel object, no encoder")


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
    # digits: a decoder equivariant to turns, an encoder equivariant to quarter turns; grey
    # levels, the in-plane turn term and two posterior hypotheses per image
    digits: FitConfig = field(default_factory=lambda: image_training(
        network="conv-rotate", encoder_symmetry=4, image_shape=[1, 16, 16], steps=2500,
        **IDENTIFYING["digits"]))
    # renders: a decoder that turns a learned 3D object; grey levels, the turn term, four
    # pose hypotheses per image
    renders: FitConfig = field(default_factory=lambda: image_training(
        network="splat", image_shape=[1, 32, 32], steps=1000, **IDENTIFYING["renders"]))
    # renders: the pose search (None: no such row)
    renders_search: PoseSearchConfig | None = field(default_factory=PoseSearchConfig)

    @classmethod
    def quick(cls) -> "ImageSuiteSettings":
        base = cls()
        return cls(digits_copies=2, renders_n=1000, seeds=1,
                   digits=base.digits.replace(steps=300, iwae_k=10, conv_channels=[16, 32]),
                   renders=base.renders.replace(steps=100, iwae_k=10, conv_channels=[16, 32]),
                   renders_search=PoseSearchConfig(points=32, steps=150, grid=384, search=4000))

    def binarized(self) -> "ImageSuiteSettings":
        """The hard variant: Bernoulli likelihood with dynamic binarization (silhouettes that
        cannot tell a pose from its mirror image), one hypothesis, no turn term; no pose search
        (it models grey levels)."""
        return dataclasses.replace(self, renders_search=None,
                                   **{name: getattr(self, name).replace(**BINARIZED)
                                      for name in DATASETS})

    @property
    def is_binarized(self) -> bool:
        return all(getattr(self, name).model.likelihood == "bernoulli" for name in DATASETS)

    def with_steps(self, steps: int) -> "ImageSuiteSettings":
        search = self.renders_search.replace(steps=steps) if self.renders_search else None
        return dataclasses.replace(self, digits=self.digits.replace(steps=steps),
                                   renders=self.renders.replace(steps=steps), renders_search=search)

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
        return {**d, "digits": self.digits.to_dict(), "renders": self.renders.to_dict(),
                "renders_search": self.renders_search.to_dict() if self.renders_search else None}


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
            # a unimodal start, as `fit` gives every ER latent with a group action (a U-shaped
            # start settled one digits seed in a basin 120 nats of ELBO lower)
            Row.of("er-ga", f"ER {er}, exact f + group action", er, group_action=True,
                   init_concentration=UNIMODAL_START)]


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
        save_arrays(path.with_name(f"{dataset}-split.npz"), x_train=data["x"][~data["test"]],
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
    searched = []
    if "renders" in datasets and settings.renders_search is not None:
        for seed in range(settings.seeds):
            searched.append(run_pose_search(
                datasets["renders"], settings.renders_search.replace(seed=seed),
                out / "runs" / "renders" / f"{POSE_SEARCH[0]}-seed{seed}", force=force, log=log))
    results = {"suite": "images", "settings": settings.to_dict(), "datasets": {}}
    for name, data in datasets.items():
        loaded = {key: [load_finished(d) for d in dirs] for key, dirs in runs[name].items()}
        results["datasets"][name] = _summarize(name, settings, data, loaded, out,
                                               searched if name == "renders" else [])
    d, r = results["datasets"].get("digits"), results["datasets"].get("renders")
    if d:
        key = d["best_er_row"]
        g = d["recovery"][key]
        results.update({m: g[f"{m}_mean"] for m in DIGIT_METRICS})
        results.update(relative_angle_row=key, relative_angle_per_class=g["per_class_mean"],
                       relative_angle_half_turn_classes=g["half_turn_mean"])
    if r:
        key = r["pose_row"]
        results.update({m: r["recovery"][key][f"{m}_mean"] for m in RENDER_METRICS[:4]})
        results["pose_row"] = key
    _bars(results, out / "iwae.png")
    return write_results(out, results, results_markdown, t_start, log, "figures")


def run_pose_search(data: dict, config: PoseSearchConfig, run_dir: Path, *, force: bool,
                    log: Callable[[str], None]) -> dict:
    """Train (or reuse) one pose search on the renders' training split and read the poses of
    the test images. ``run_dir`` holds ``object.pt`` (safe to load), ``test_rotations.npy`` and,
    written last, ``metrics.json`` (config, data key, the test bound ``test_iwae``: the
    prior-proposal bound with K = ``search`` draws, per image in nats, Gaussian likelihood). A
    finished run of the same config on the same data is reused."""
    key, path = data_key(data["split_path"]), run_dir / "metrics.json"
    saved = read_json(path) if path.is_file() else None
    if (not force and saved and saved.get("config") == config.to_dict() and saved.get("data") == key
            and (run_dir / "test_rotations.npy").is_file()):
        return {"metrics": saved, "rotations": np.load(run_dir / "test_rotations.npy"),
                "run_dir": run_dir}
    c, h, w = data["image_shape"].tolist()
    with np.load(data["split_path"]) as split:
        x_train, x_test = torch.from_numpy(split["x_train"]), torch.from_numpy(split["x_test"])
    t = time.perf_counter()
    model, history = fit_pose_search(x_train, h, config)
    train_seconds = time.perf_counter() - t
    found = search_poses(model, x_test, config)
    bound = found["bound"]
    metrics = {"config": config.to_dict(), "data": key, "likelihood": "gaussian",
               "test_iwae": float(bound.mean()),
               "test_iwae_stderr": float(bound.std() / math.sqrt(len(bound))),
               "test_iwae_k": config.search, "train_seconds": train_seconds,
               "seconds_per_step": train_seconds / config.steps,
               "search_seconds": time.perf_counter() - t - train_seconds, "history": history}
    run_dir.mkdir(parents=True, exist_ok=True)
    save_pose_search(run_dir / "object.pt", model, config)
    np.save(run_dir / "test_rotations.npy", found["rotations"].numpy())
    write_json(path, metrics)
    log(f"renders {POSE_SEARCH[1]} seed {config.seed}: {train_seconds:.0f} s, "
        f"test bound {metrics['test_iwae']:.2f}")
    return {"metrics": metrics, "rotations": found["rotations"].numpy(), "run_dir": run_dir}


def pose_search_row(runs: list[dict]) -> dict:
    """The table row of the pose search's runs (one per seed); no ELBO: its proposal is the
    prior."""
    m = [r["metrics"] for r in runs]
    iwae_m, iwae_s = mean_std([x["test_iwae"] for x in m])
    return {"key": POSE_SEARCH[0], "name": POSE_SEARCH[1], "latent": "SO3", "embedding": "exact",
            "group_action": False, "compact_hidden": None, "valid_bound": True,
            "likelihood": "gaussian", "seeds": len(m), "test_elbo_mean": None,
            "test_elbo_std": None, "test_iwae_mean": iwae_m, "test_iwae_std": iwae_s,
            "test_iwae_stderr": float(np.mean([x["test_iwae_stderr"] for x in m])),
            "test_iwae_k": m[0]["test_iwae_k"],
            "train_seconds_mean": float(np.mean([x["train_seconds"] for x in m])),
            "seconds_per_step_mean": float(np.mean([x["seconds_per_step"] for x in m])),
            "steps": m[0]["config"]["steps"]}


# ---------------------------------------------------------------------- analysis
def image_test_set(data: dict, config: FitConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The test images every model was evaluated on (as the run's likelihood fixes them:
    binarized once, seeded, for the Bernoulli) and their row numbers."""
    idx = np.flatnonzero(data["test"])
    x = torch.from_numpy(data["x"][idx])
    likelihood = LIKELIHOODS[config.model.likelihood](x.shape[1])
    return likelihood.fix_observations(x, seed=config.split_seed), idx


@torch.no_grad()
def latent_angles(model, x: torch.Tensor) -> np.ndarray:
    """The polar angle of the first two coordinates of each posterior's central latent point:
    the S1 factor's angle for ``S1xRk``, the angle the rotating decoder reads for any latent."""
    return RotatingConvDecoder.angle(model.embed(x)).double().numpy()


def so3_matrices(points: torch.Tensor) -> np.ndarray:
    """The SO(3) factor (the first) of posteriors' central latent points (``model.embed``),
    N×3×3."""
    return points[:, :9].double().reshape(-1, 3, 3).numpy()


@torch.no_grad()
def decoder_rotations(model, points: torch.Tensor) -> np.ndarray | None:
    """The rotation a splat decoder applies to its 3D object at posteriors' central latent points
    (``model.embed``; defined for every latent space); ``None`` for decoders without one."""
    if not hasattr(model.decoder, "rotation"):
        return None
    return model.decoder.rotation(points).double().numpy()


def digit_recovery(model, x: torch.Tensor, angle: np.ndarray, digit: np.ndarray,
                   source: np.ndarray) -> dict:
    """Relative-angle recovery over pairs of test copies of one source digit (see the module
    docstring): on the classes 2 3 4 5 6 7 9 (the top-level keys), on 0 1 8 modulo π
    (``half_turn``) and per class; the one reflection is chosen on the first group's pairs."""
    learned = latent_angles(model, x)
    i, j = same_source_pairs(source)
    half = np.isin(digit, HALF_TURN_DIGITS)
    rest_pairs = ~half[i]                                       # a pair shares its source's class
    reflection = best_relative_reflection(learned, angle, i[rest_pairs], j[rest_pairs])

    def score(pairs: np.ndarray, examples: np.ndarray, half_turn: bool) -> dict:
        err = relative_angle_errors(learned, angle, i[pairs], j[pairs], reflection=reflection,
                                    half_turn=half_turn)
        corr = relative_angle_correlation(learned[examples], angle[examples], source[examples],
                                          reflection=reflection, half_turn=half_turn)
        return {**relative_angle_summary(err), "relative_angle_correlation": corr}

    rest = score(rest_pairs, ~half, False)
    per_class = {str(c): score(digit[i] == c, digit == c, c in HALF_TURN_DIGITS)
                 for c in range(10) if (digit[i] == c).any()}
    # for the figures: the pairs' errors and the angles from each source's first copy
    err = relative_angle_errors(learned, angle, i[rest_pairs], j[rest_pairs], reflection=reflection)
    a, b, kept = relative_to_first(learned[~half], angle[~half], source[~half],
                                   reflection=reflection)
    return {**rest, "reflection": reflection, "half_turn": score(~rest_pairs, half, True),
            "per_class": per_class, "_errors": err, "_latent_relative": a, "_true_relative": b,
            "_digit": digit[~half][kept]}


def render_recovery(model, x: torch.Tensor, rotation: np.ndarray) -> dict:
    """Pose recovery of the latent SO(3) factor (ER models): median geodesic error and accuracy
    at 30° after the best global alignment fitted on one half of the test images and scored on
    the other; the fit-free distance rank correlation and latent-neighbour precision (see
    :mod:`...evaluation.alignment`). And the held-out median error of the rotation a splat
    decoder applies (any latent). ``_latent``: the latent rotations (N×3×3), for further
    measures. The posteriors are chosen once (with hypotheses, ``C`` decoder passes per image)."""
    out = {}
    points = model.embed(x)
    if model.manifold.factors()[0].spec == "SO3" and not model.spec.on_sphere:
        out.update(rotation_recovery(so3_matrices(points), rotation))
    dec = decoder_rotations(model, points)
    if dec is not None:
        out["decoder_median_geodesic_error_deg"] = held_out_rotation_errors(
            dec, rotation)["median_geodesic_error_deg"]
    return out


def rotation_recovery(latent: np.ndarray, rotation: np.ndarray) -> dict:
    """The pose metrics of rotations read from the test images (N×3×3) against the true ones
    (see :func:`render_recovery`); ``_errors`` and ``_latent`` for figures and further measures."""
    held = held_out_rotation_errors(latent, rotation)
    agree = rotation_distance_agreement(latent, rotation)
    return {"median_geodesic_error_deg": held["median_geodesic_error_deg"],
            "accuracy_30deg": held["accuracy_30deg"], "inverse": held["inverse"],
            "distance_rank_correlation": agree["distance_rank_correlation"],
            "latent_neighbour_precision": agree["latent_neighbour_precision"],
            "_errors": held["errors_deg"], "_latent": latent}


def render_chance(rotation: np.ndarray) -> dict:
    """What the render metrics give for a latent unrelated to the pose (Haar-random poses):
    median 132.3°, accuracy at 30° 0.75 %, rank correlation 0, neighbour precision the share of
    test pairs truly closer than 30° (measured on these poses)."""
    return {"median_geodesic_error_deg": HAAR_MEDIAN_DEG, "accuracy_30deg": haar_angle_cdf(30.0),
            "distance_rank_correlation": 0.0,
            "latent_neighbour_precision": rotation_distance_agreement(rotation, rotation)[
                "neighbour_chance"]}


def _summarize(name, settings, data, loaded, out: Path, searched=()) -> dict:
    x_test, idx = image_test_set(data, getattr(settings, name))
    rows = [{**row.to_dict(), **seed_statistics(loaded[row.key]), "steps": settings.steps(name)}
            for row in image_rows(name, settings)]
    recovery, figs, examples = {}, out / "figures", {}
    figs.mkdir(exist_ok=True)
    for row in image_rows(name, settings):
        key = row.key
        per_seed = []
        for r in loaded[key]:
            if name == "digits":
                per_seed.append(digit_recovery(r["model"], x_test, data["angle"][idx],
                                               data["digit"][idx], data["source"][idx]))
            else:
                per_seed.append(render_recovery(r["model"], x_test, data["rotation"][idx]))
        rec = _over_seeds(per_seed)
        if name == "digits":
            rec["reflection_per_seed"] = [p["reflection"] for p in per_seed]
            rec["half_turn_mean"] = _mean_of(p["half_turn"] for p in per_seed)
            rec["per_class_mean"] = {c: _mean_of(p["per_class"][c] for p in per_seed)
                                     for c in per_seed[0]["per_class"]}
        recovery[key] = rec
        examples[key] = per_seed[0]
    # the best valid ER row (highest test IWAE; both ER rows here have the exact map: bounds)
    er = [r for r in rows if r["key"] in ("er", "er-ga") and r["valid_bound"]]
    best = max(er, key=lambda r: r["test_iwae_mean"])["key"]
    pose = best
    if searched:
        pose = POSE_SEARCH[0]
        rows.append(pose_search_row(list(searched)))
        per_seed = [rotation_recovery(r["rotations"], data["rotation"][idx]) for r in searched]
        recovery[pose], examples[pose] = _over_seeds(per_seed), per_seed[0]
    _pictures(name, data, x_test, loaded[best][0]["model"], examples[best], figs,
              pose=(examples[pose], searched[0] if searched else None))
    chance = render_chance(data["rotation"][idx]) if name == "renders" else {
        "relative_angle_median_deg": 90.0, "relative_angle_within_30deg": 1 / 6,
        "relative_angle_correlation": 0.0}
    return {"rows": rows, "recovery": recovery, "best_er_row": best, "pose_row": pose,
            "chance": chance, "n_train": int((~data["test"]).sum()),
            "n_test": int(data["test"].sum()), "image_shape": data["image_shape"].tolist()}


def _over_seeds(per_seed: list[dict]) -> dict:
    """Mean and per-seed values of every metric the seeds' recovery dicts hold."""
    rec = {}
    for field_ in DIGIT_METRICS + RENDER_METRICS:
        vals = [p[field_] for p in per_seed if field_ in p]
        if vals:
            rec[f"{field_}_mean"] = float(np.mean(vals))
            rec[f"{field_}_per_seed"] = vals
    return rec


def _mean_of(dicts) -> dict:
    """Key-wise mean of metric dicts (one per seed)."""
    dicts = list(dicts)
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


# ---------------------------------------------------------------------- pictures
@torch.no_grad()
def _pictures(name, data, x_test, model, rec: dict, figs: Path, pose=None) -> None:
    """The dataset's figures from the best ER row's ``model`` (``rec``: its recovery at one
    seed); renders: the pose errors and, for the pose search, its object along great circles from
    the pose row (``pose = (its recovery, its search run or None)``)."""
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
        picks = [int(np.flatnonzero(digit == c)[0]) for c in REST_DIGITS if (digit == c).any()]
        m = model.embed(x_test[picks])                              # (5, 2 + k)
        t = torch.arange(steps, dtype=m.dtype) * (2 * math.pi / steps)
        walk = m[:, None, :].repeat(1, steps, 1)
        walk[..., 0], walk[..., 1] = torch.cos(t), torch.sin(t)
        imgs = model.decode_mean(walk)
        plot_image_grid(list(imgs.numpy()), figs / "digits_circle_walk.png", image_shape=shape,
                        row_labels=[str(digit[p]) for p in picks],
                        title="decoding once around the latent circle (style part held fixed)")
        plot_angle_recovery(rec["_true_relative"], rec["_latent_relative"], rec["_digit"],
                            figs / "digits_angle_recovery.png",
                            xlabel="true angle − true angle of the source's first copy (deg)",
                            ylabel="latent angle − latent angle of that copy (deg)",
                            title=f"{model.spec}: relative angles, classes 2 3 4 5 6 7 9 "
                                  f"(ρ = {rec['relative_angle_correlation']:.3f})")
        plot_error_histogram(rec["_errors"], figs / "digits_angle_errors.png",
                             xlabel="|latent angle difference − true angle difference| over pairs "
                                    "of copies of one source (deg)",
                             title=f"rotated digits: relative-angle error (median "
                                   f"{rec['relative_angle_median_deg']:.1f}°)")
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
        pose_rec, search = pose if pose is not None else (rec, None)
        plot_error_histogram(pose_rec["_errors"], figs / "renders_rotation_errors.png",
                             xlabel="geodesic error after global alignment (deg)",
                             title=f"renders: rotation-recovery error of the pose row (median "
                                   f"{pose_rec['median_geodesic_error_deg']:.1f}°)")
        if search is not None:
            obj, _ = load_pose_search(search["run_dir"] / "object.pt")
            r0 = matrix_to_quaternion(torch.from_numpy(search["rotations"][0]).double())
            rows = [x_test[:1].numpy().repeat(steps, 0)]
            for axis in torch.eye(3, dtype=torch.float64):
                q = quaternion_multiply(quaternion_exp(t[:, None] * axis), r0.expand(steps, 4))
                rows.append(obj.render(quaternion_to_matrix(q).float()).numpy())
            plot_image_grid(rows, figs / "renders_search_great_circles.png", image_shape=shape,
                            row_labels=["test image", "x axis", "y axis", "z axis"],
                            title="pose search: its object along three great circles through "
                                  "the pose it found for one test image")


def _bars(results: dict, path: Path) -> None:
    for name, res in results["datasets"].items():
        # the pose search's bound is a Gaussian density, not comparable: not in the bars
        rows = [r for r in res["rows"] if r["key"] != POSE_SEARCH[0]]
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
             f"`{dm['network']}`, renders: `{rm['network']}`), likelihood, turn term and "
             f"hypotheses (digits: {_training_words(dm)}; renders: {_training_words(rm)}), "
             f"Adam {d['lr']} one-cycle, batch {d['batch_size']}, KL warm-up over the "
             f"first {d['kl_warmup']:.0%} and the same number of steps (digits {d['steps']}, "
             f"renders {r['steps']}); {s['seeds']} seed(s). Test IWAE with K={d['iwae_k']} in "
             f"nats per image ({_iwae_words(dm, rm)}); with hypotheses it is the bound of the "
             "posterior each image chooses, a bound of the same model. Mean ± std over seeds.", ""]
    for name, d in res["datasets"].items():
        rec = d["recovery"]
        if name == "digits":
            extra = [("relative angle: median", lambda k: _fmt(rec[k].get("relative_angle_median_deg_mean"), 1, "°")),
                     ("within 30°", lambda k: _fmt(rec[k].get("relative_angle_within_30deg_mean"), 3)),
                     ("ρ", lambda k: _fmt(rec[k].get("relative_angle_correlation_mean"), 3)),
                     ("0 1 8 (mod π): median", lambda k: _fmt(
                         rec[k].get("half_turn_mean", {}).get("relative_angle_median_deg"), 1, "°"))]
        else:
            extra = [("SO(3) latent: median error", lambda k: _fmt(rec[k].get("median_geodesic_error_deg_mean"), 1, "°")),
                     ("accuracy at 30°", lambda k: _fmt(rec[k].get("accuracy_30deg_mean"), 3)),
                     ("distance rank corr.", lambda k: _fmt(rec[k].get("distance_rank_correlation_mean"), 3)),
                     ("neighbour precision", lambda k: _fmt(rec[k].get("latent_neighbour_precision_mean"), 3)),
                     ("decoder-rotation error", lambda k: _fmt(
                         rec[k].get("decoder_median_geodesic_error_deg_mean"), 1, "°"))]
        lines += [f"## {name} ({d['n_train']} train / {d['n_test']} test images, "
                  f"{'×'.join(map(str, d['image_shape']))})", "",
                  "| model | test ELBO | test IWAE | " + " | ".join(e[0] for e in extra) + " | s/step |",
                  "|---|---|---|" + "---|" * len(extra) + "---|"]
        best = max((r for r in d["rows"] if r["key"] != POSE_SEARCH[0]),
                   key=lambda r: r["test_iwae_mean"])
        for r in d["rows"]:
            mark = " **(best)**" if r is best else ""
            elbo = ("—" if r["test_elbo_mean"] is None
                    else f"{r['test_elbo_mean']:.2f} ± {r['test_elbo_std']:.2f}")
            cells = [f"{r['name']}{mark}", elbo,
                     f"{r['test_iwae_mean']:.2f} ± {r['test_iwae_std']:.2f}",
                     *(e[1](r["key"]) for e in extra), f"{r['seconds_per_step_mean']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if name == "digits":
            key = d["best_er_row"]
            g = rec[key]
            pc = "; ".join(f"{c}: {v['relative_angle_median_deg']:.1f}°, "
                           f"{v['relative_angle_within_30deg']:.0%}, ρ {v['relative_angle_correlation']:.2f}"
                           for c, v in g["per_class_mean"].items())
            lines += ["Relative angles: for every pair of test copies of one source digit, the error "
                      "of the latent angle difference (the polar angle of the latent's first two "
                      "coordinates: the S1 factor for ER) against the true difference, one "
                      "reflection for the whole test set; median, fraction of pairs within 30°, and "
                      "ρ, the Fisher–Lee correlation of the angles measured from each source's "
                      "first copy; classes 2 3 4 5 6 7 9 (0 1 8, near half-turn symmetric, modulo "
                      "π in their own column). Chance: median 90°, 1/6 within 30°, ρ 0. "
                      "Targets for the best valid ER row: median ≤ 10°, ≥ 90 % within 30°, "
                      f"ρ ≥ 0.9. Best valid ER row (by test IWAE): {key}; per class (median, "
                      f"within 30°, ρ): {pc}.", ""]
        else:
            c = d["chance"]
            lines += ["SO(3) latent: median geodesic distance between the ER model's SO(3) "
                      "coordinate and the true rotation, and the fraction within 30°, after the best "
                      "global alignment A·R·B (or A·Rᵀ·B) fitted on one half of the test images and "
                      "scored on the other; distance rank correlation: Spearman's ρ of latent and "
                      "true pairwise geodesic distances (no fit); neighbour precision: of the pairs "
                      "closer than 20° in the latent, the fraction truly closer than 30° (a folded "
                      "map fails it); decoder-rotation error: the held-out median error of the "
                      "rotation the splat decoder applies, defined for every latent. Chance "
                      f"(a latent unrelated to the pose): {c['median_geodesic_error_deg']:.1f}°, "
                      f"{c['accuracy_30deg']:.4f}, {c['distance_rank_correlation']:.1f}, "
                      f"{c['latent_neighbour_precision']:.4f}. Targets for the best row: median "
                      f"≤ 30° and accuracy at 30° ≥ 50 %; the pose row (`results.json`'s top-level "
                      f"figures): {d['pose_row']}.", ""]
            search = next((r for r in d["rows"] if r["key"] == POSE_SEARCH[0]), None)
            if search is not None:
                sc = s["renders_search"]
                lines += [f"Pose search: R ~ Haar(SO(3)), x | R ~ N(render(R), σ² I) with a learned "
                          f"σ; the object is {sc['points']} surfels (positions, normals, albedos) "
                          f"under one learned light, trained {sc['steps']} steps by the bound "
                          f"log (1/G) Σ_j p(x | R_j) over G = {sc['grid']} fresh Haar draws (the "
                          f"IWAE bound with the prior as proposal; noise floor annealed from "
                          f"{sc['sigma_start']:g} to {sc['sigma_end']:g}); no encoder: a test "
                          f"image's pose is the posterior mode over {sc['search']} Haar draws, "
                          f"and its test IWAE is that bound with K = {sc['search']} — a bound of "
                          f"its own model, a Gaussian density, not comparable with the continuous "
                          f"Bernoulli rows (no ELBO: the proposal is the prior).", ""]
    lines.append("Figures in `figures/`: reconstructions, the circle walk, the SO(3) great circles "
                 "(the best ER row's decoder; the pose search's object), angle recovery, error "
                 "histograms (renders: of the pose row).")
    return "\n".join(lines) + "\n"


def _training_words(model: dict) -> str:
    lik = {"bernoulli": "Bernoulli with dynamic binarization",
           "continuous-bernoulli": "continuous Bernoulli on grey levels"}.get(model["likelihood"],
                                                                              model["likelihood"])
    turn = (f"turn consistency {model['turn_consistency']:g}" if model["turn_consistency"]
            else "no turn term")
    h = model["hypotheses"]
    return f"{lik}, {turn}, {h} hypothes{'is' if h == 1 else 'es'}"


def _iwae_words(*models: dict) -> str:
    liks = {m["likelihood"] for m in models}
    words = []
    if "bernoulli" in liks:
        words.append("Bernoulli: log-probability of a test set binarized once")
    if "continuous-bernoulli" in liks:
        words.append("continuous Bernoulli: log-density of the grey levels, not comparable with "
                     "a Bernoulli row")
    return "; ".join(words) or "log-density"


def _fmt(v, digits: int, unit: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"
