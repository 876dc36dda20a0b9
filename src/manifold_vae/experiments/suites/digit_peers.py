"""The peers table on rotated digits (part of ``reproduce --suite peers``).

The same rows as the sphere benchmarks — Gaussian VAEs of ``dim(M)`` and ``ambient(M)``, von
Mises–Fisher and Power Spherical VAEs, ER exact f with and without the group action, ER learned
f + group action, ER exact f + group action on the normal hidden space — with ``M = S^d`` on the
rotated digits of :func:`~manifold_vae.data.images.rotated_digits`. Every row has the same
networks: a conv encoder and the plain conv decoder (its mirror), which favours no geometry (the
image suite's rotating decoder reads an angle from the first two latent coordinates, which suits
a circle factor and made both spherical families collapse). Bernoulli likelihood with dynamic
binarization, same steps and optimiser; test IWAE with K importance samples in nats per image.
Images have no true likelihood, so there is no ceiling and no gap column.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ...training import FitConfig
from ..engine import (Job, load_finished, run_jobs, seed_statistics, suite_embed_config,
                      write_results)
from ..figures import plot_grouped_bars
from ..rows import Row, er_rows, gaussian_rows, sphere_peer_rows
from .images import ImageSuiteSettings, image_dataset, image_training


@dataclass
class DigitPeersSettings:
    """Sizes of the digits peers table (defaults: the full table; ``quick()``: a smoke test)."""

    sphere_dim: int = 5              # M = S^d (d = 5: the image suite's S1xR4 has 5 dimensions)
    digits_size: int = 16
    digits_copies: int = 8
    data_seed: int = 0
    seeds: int = 2
    embed_steps: int | None = None   # learned f of S^d: EmbedConfig's default
    workers: int = 0
    # every row: conv encoder and the plain conv decoder (see the module docstring)
    training: FitConfig = field(default_factory=lambda: image_training(
        network="conv", image_shape=[1, 16, 16], steps=2500))

    @classmethod
    def quick(cls) -> "DigitPeersSettings":
        return cls(sphere_dim=2, digits_copies=1, seeds=1, embed_steps=200,
                   training=cls().training.replace(steps=60, iwae_k=5, conv_channels=[8, 16],
                                                   hidden=[32]))

    def image_settings(self) -> ImageSuiteSettings:
        """The image suite's settings that make the same digits file."""
        return ImageSuiteSettings(datasets=["digits"], data_seed=self.data_seed,
                                  digits_size=self.digits_size, digits_copies=self.digits_copies)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "training": self.training.to_dict()}


def digit_peer_rows(d: int) -> list[Row]:
    """The peers suite's rows with ``M = S^d``."""
    s = f"S{d}"
    return (gaussian_rows(s) + sphere_peer_rows(s, suffix=f", {s}")
            + er_rows(s, prefix=f"ER {s}", plain=True, normal=True))


def reproduce_digit_peers(settings: DigitPeersSettings, out: Path, *, force: bool = False,
                          progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the digits peers table; writes ``out/results.json``, ``results.md`` and
    ``iwae.png``."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = image_dataset("digits", settings.image_settings(), out, log)
    shape = data["image_shape"].tolist()
    sphere = f"S{settings.sphere_dim}"
    emb_dir = out / "embeddings" / sphere
    template = settings.training.replace(image_shape=shape)
    jobs, runs = [], {}
    for row in digit_peer_rows(settings.sphere_dim):
        for seed in range(settings.seeds):
            run_dir = out / "runs" / f"{row.key}-seed{seed}"
            runs.setdefault(row.key, []).append(run_dir)
            jobs.append(Job(f"digits {row.name} seed {seed}",
                            row.config(template, seed, embedding_dir=emb_dir), run_dir,
                            data["split_path"]))
    run_jobs(jobs, settings.workers, out, force=force, progress=progress, log=log,
             embeddings=[(suite_embed_config(sphere, settings.embed_steps), emb_dir)])
    rows = []
    for row in digit_peer_rows(settings.sphere_dim):
        rs = [load_finished(d, with_model=False) for d in runs[row.key]]
        rows.append({**row.to_dict(), **seed_statistics(rs),
                     "final_train_kl_mean": float(np.mean([r["metrics"]["final_train_kl"] for r in rs]))})
    results = {"suite": "peers-digits", "settings": settings.to_dict(), "rows": rows,
               "n_train": int((~data["test"]).sum()), "n_test": int(data["test"].sum()),
               "image_shape": shape}
    plot_grouped_bars(["digits"], [r["name"] for r in rows], [[r["test_iwae_mean"]] for r in rows],
                      [[r["test_iwae_std"]] for r in rows], out / "iwae.png",
                      ylabel="test IWAE (nats per image)")
    return write_results(out, results, results_markdown, t_start, log, "iwae.png")


def results_markdown(res: dict) -> str:
    s = res["settings"]
    t, m = s["training"], s["training"]["model"]
    valid = [r for r in res["rows"] if r["valid_bound"]]
    best = max(valid, key=lambda r: r["test_iwae_mean"])
    lines = [f"# Peers on rotated digits: M = S{s['sphere_dim']}", "",
             f"{res['n_train']} train / {res['n_test']} test images "
             f"({'×'.join(map(str, res['image_shape']))}, split by source digit). Every row: conv "
             f"encoder (channels {m['conv_channels']}, then {m['hidden']}) and the plain conv "
             f"decoder, Bernoulli likelihood with dynamic binarization, {t['steps']} steps, batch "
             f"{t['batch_size']}, Adam {t['lr']} one-cycle, KL warm-up over the first "
             f"{t['kl_warmup']:.0%}; {s['seeds']} seed(s). Test IWAE with K={t['iwae_k']} in nats per "
             f"image (mean ± std over seeds) on a test set binarized once; no true likelihood "
             f"exists for images. ‡: not a likelihood bound (learned f with a group action).", "",
             "| model | test ELBO | test IWAE | final train KL | train s | s/step |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        mark = (" **(best)**" if r is best else "") + ("" if r["valid_bound"] else " ‡")
        lines.append(f"| {r['name']}{mark} | {r['test_elbo_mean']:.2f} ± {r['test_elbo_std']:.2f} | "
                     f"{r['test_iwae_mean']:.2f} ± {r['test_iwae_std']:.2f} | "
                     f"{r['final_train_kl_mean']:.2f} | {r['train_seconds_mean']:.0f} | "
                     f"{r['seconds_per_step_mean'] * 1e3:.1f} ms |")
    return "\n".join(lines) + "\n"
