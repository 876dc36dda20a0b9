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

from ..embeddings.learned import EmbedConfig
from ..training.config import FitConfig
from ..training.runs import write_json
from .figures import plot_grouped_bars
from .image_suite import ImageSuiteSettings, _dataset
from .reproduce import _load_finished, run_jobs, seed_statistics, suite_embed_config


@dataclass
class DigitPeersSettings:
    """Sizes of the digits peers table (defaults: the full table; ``quick()``: a smoke test)."""

    sphere_dim: int = 5              # M = S^d (d = 5: the image suite's S1xR4 has 5 dimensions)
    digits_size: int = 16
    digits_copies: int = 8
    data_seed: int = 0
    steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    kl_warmup: float = 0.2
    hidden: list[int] = field(default_factory=lambda: [256])
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    seeds: int = 2
    iwae_k: int = 50
    embed_steps: int | None = None   # learned f of S^d: EmbedConfig's default
    workers: int = 0

    @classmethod
    def quick(cls) -> "DigitPeersSettings":
        return cls(sphere_dim=2, digits_copies=1, steps=60, seeds=1, iwae_k=5,
                   conv_channels=[8, 16], hidden=[32], embed_steps=200)

    def image_settings(self) -> ImageSuiteSettings:
        """The image suite's settings that make the same digits file."""
        return ImageSuiteSettings(datasets=["digits"], data_seed=self.data_seed,
                                  digits_size=self.digits_size, digits_copies=self.digits_copies)

    def fit_config(self, latent: str, embedding: str, group_action: bool, hidden_space: str,
                   seed: int, image_shape) -> FitConfig:
        return FitConfig(latent=latent, embedding=embedding, group_action=group_action,
                         compact_hidden=hidden_space, hidden=list(self.hidden), network="conv",
                         likelihood="bernoulli", image_shape=list(image_shape),
                         conv_channels=list(self.conv_channels), steps=self.steps,
                         batch_size=self.batch_size, lr=self.lr, kl_warmup=self.kl_warmup,
                         seed=seed, iwae_k=self.iwae_k, checkpoint_every=max(1, self.steps // 4))

    def embed_config(self, latent: str) -> EmbedConfig:
        return suite_embed_config(latent, self.embed_steps)


def digit_peer_rows(d: int) -> list[tuple[str, str, str, str, bool, str]]:
    """``(key, name, latent, embedding, group action, compact_hidden)`` for ``M = S^d``."""
    s = f"S{d}"
    return [("gauss-dim", f"Gaussian VAE, R{d} = dim(M)", f"R{d}", "exact", False, "box"),
            ("gauss-ambient", f"Gaussian VAE, R{d + 1} = ambient(M)", f"R{d + 1}", "exact", False, "box"),
            ("vmf", f"von Mises–Fisher (S-VAE), {s}", f"vmf:{s}", "exact", False, "box"),
            ("powerspherical", f"Power Spherical, {s}", f"powerspherical:{s}", "exact", False, "box"),
            ("er-exact", f"ER {s}, exact f", s, "exact", False, "box"),
            ("er-exact-ga", f"ER {s}, exact f + group action", s, "exact", True, "box"),
            ("er-learned-ga", f"ER {s}, learned f + group action ‡", s, "learned", True, "box"),
            ("er-normal-ga", f"ER {s}, exact f + group action, normal hidden", s, "exact", True,
             "normal")]


def reproduce_digit_peers(settings: DigitPeersSettings, out: Path, *, force: bool = False,
                          progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the digits peers table; writes ``out/results.json``, ``results.md`` and
    ``iwae.png``."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = _dataset("digits", settings.image_settings(), out, log)
    shape = data["image_shape"].tolist()
    sphere = f"S{settings.sphere_dim}"
    emb_dir = out / "embeddings" / sphere
    jobs, runs = [], {}
    for key, name, latent, embedding, ga, hidden in digit_peer_rows(settings.sphere_dim):
        for seed in range(settings.seeds):
            run_dir = out / "runs" / f"{key}-seed{seed}"
            cfg = settings.fit_config(latent, str(emb_dir) if embedding == "learned" else "exact",
                                      ga, hidden, seed, shape)
            runs.setdefault(key, []).append(run_dir)
            jobs.append((f"digits {name} seed {seed}", cfg, run_dir, data["split_path"]))
    run_jobs(jobs, settings.workers, out, force=force, progress=progress, log=log,
             embeddings=[(settings.embed_config(sphere), emb_dir)])
    rows = []
    for key, name, latent, embedding, ga, hidden in digit_peer_rows(settings.sphere_dim):
        rs = [_load_finished(d, with_model=False) for d in runs[key]]
        rows.append({"key": key, "name": name, "latent": latent, "embedding": embedding,
                     "group_action": ga, "compact_hidden": hidden,
                     "valid_bound": not (embedding == "learned" and ga), **seed_statistics(rs),
                     "final_train_kl_mean": float(np.mean([r["metrics"]["final_train_kl"] for r in rs]))})
    results = {"suite": "peers-digits", "settings": dataclasses.asdict(settings), "rows": rows,
               "n_train": int((~data["test"]).sum()), "n_test": int(data["test"].sum()),
               "image_shape": shape, "total_seconds": time.perf_counter() - t_start}
    write_json(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(results))
    plot_grouped_bars(["digits"], [r["name"] for r in rows], [[r["test_iwae_mean"]] for r in rows],
                      [[r["test_iwae_std"]] for r in rows], out / "iwae.png",
                      ylabel="test IWAE (nats per image)")
    log(f"wrote {out}/results.json, results.md and iwae.png in {results['total_seconds']:.0f} s")
    return results


def results_markdown(res: dict) -> str:
    s = res["settings"]
    valid = [r for r in res["rows"] if r["valid_bound"]]
    best = max(valid, key=lambda r: r["test_iwae_mean"])
    lines = [f"# Peers on rotated digits: M = S{s['sphere_dim']}", "",
             f"{res['n_train']} train / {res['n_test']} test images "
             f"({'×'.join(map(str, res['image_shape']))}, split by source digit). Every row: conv "
             f"encoder (channels {s['conv_channels']}, then {s['hidden']}) and the plain conv "
             f"decoder, Bernoulli likelihood with dynamic binarization, {s['steps']} steps, batch "
             f"{s['batch_size']}, Adam {s['lr']} one-cycle, KL warm-up over the first "
             f"{s['kl_warmup']:.0%}; {s['seeds']} seed(s). Test IWAE with K={s['iwae_k']} in nats per "
             f"image (mean ± std over seeds) on a test set binarized once; no true likelihood "
             f"exists for images. ‡: not a likelihood bound (learned f with a group action).", "",
             "| model | test ELBO | test IWAE | final train KL | train s | s/step |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        mark = " **(best)**" if r is best else ""
        lines.append(f"| {r['name']}{mark} | {r['test_elbo_mean']:.2f} ± {r['test_elbo_std']:.2f} | "
                     f"{r['test_iwae_mean']:.2f} ± {r['test_iwae_std']:.2f} | "
                     f"{r['final_train_kl_mean']:.2f} | {r['train_seconds_mean']:.0f} | "
                     f"{r['seconds_per_step_mean'] * 1e3:.1f} ms |")
    return "\n".join(lines) + "\n"
