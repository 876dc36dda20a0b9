"""Cost of the latent layer alone — sampling plus KL, forward and backward — for the ER posterior
and its spherical peers (von Mises–Fisher, Power Spherical) on S^n, and of whole training steps.

    python benchmarks/latent_layer.py [--batch 256] [--rounds 7] [--threads 1]

Latent layer: from encoder outputs (a leaf tensor, batch 256) to a point on S^n and the KL to the
uniform prior, then ``backward`` of ``sum(point · w) + sum(KL)``. ER in both hidden spaces: the
fused Beta sample + KL in the box, or a Gaussian sample + KL in R^n mapped through the normal CDF
Φ; then the exact embedding f (Archimedes' map on S^2, the stick-breaking map on
S^n for n >= 4). Whole steps: the same 256-256 MLP encoder/decoder, D=100, Adam, batch 512.
Every timing is the median over rounds of an interleaved loop; ratios are taken within this run.
"""
from __future__ import annotations

import argparse

import torch

from manifold_vae.distributions import log_sphere_volume, sphere_posterior
from manifold_vae.distributions.box import beta_rsample_and_kl, probit_to_box
from manifold_vae.distributions.hidden import normal_rsample_and_kl
from manifold_vae.distributions.spherical import concentration_from_raw
from manifold_vae.embeddings import ExactEmbedding
from manifold_vae.manifolds import parse_latent
from manifold_vae.manifolds.base import safe_normalize

from timing import interleaved_medians, make_step, model_of   # benchmarks/timing.py


def er_layer(n: int, batch: int, hidden: str = "box"):
    m = parse_latent(f"S{n}")
    f = ExactEmbedding(m)
    raw = torch.randn(batch, 2 * n, requires_grad=True)
    w = torch.randn(batch, n + 1)

    def run():
        if hidden == "box":          # Beta posterior on [0,1]^n, uniform prior
            z, kl = beta_rsample_and_kl(raw[:, :n], raw[:, n:])
        else:                        # Gaussian posterior on R^n, N(0, I) prior, f ∘ Φ
            zn, kl = normal_rsample_and_kl(raw[:, :n], raw[:, n:])
            z = probit_to_box(zn)
        (f(z) * w).sum().add(kl.sum()).backward()
    return run


def sphere_layer(family: str, n: int, batch: int):
    p = n + 1
    raw = torch.randn(batch, p + 1, requires_grad=True)
    w = torch.randn(batch, p)

    def run():
        q = sphere_posterior(family, safe_normalize(raw[:, :p]), concentration_from_raw(raw[:, p] + 3))
        x = q.rsample()
        kl = -q.entropy() + log_sphere_volume(p)
        (x * w).sum().add(kl.sum()).backward()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--step-reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 10])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"latent layer (sample + KL, forward + backward), batch {args.batch}, "
          f"{args.threads} thread(s), median of {args.rounds} rounds x {args.reps}")
    print("ER-box: Beta posterior on [0,1]^n (compact_hidden='box'); ER-normal: Gaussian posterior "
          "on R^n, f ∘ Φ (compact_hidden='normal', the default on S^n, n >= 2)")
    print(f"{'n':>3s} {'ER-box µs':>10s} {'ER-normal µs':>13s} {'vMF µs':>9s} {'PS µs':>9s}   "
          f"{'vMF/ER-box':>10s} {'PS/ER-box':>9s} {'vMF/ER-normal':>13s} {'PS/ER-normal':>12s}")
    for n in args.dims:
        t = interleaved_medians({"box": er_layer(n, args.batch), "normal": er_layer(n, args.batch, "normal"),
                                 "vmf": sphere_layer("vmf", n, args.batch),
                                 "ps": sphere_layer("powerspherical", n, args.batch)},
                                args.rounds, args.reps, warmup=5)
        print(f"{n:3d} {t['box'] * 1e6:10.0f} {t['normal'] * 1e6:13.0f} {t['vmf'] * 1e6:9.0f} "
              f"{t['ps'] * 1e6:9.0f}   {t['vmf'] / t['box']:10.2f} {t['ps'] / t['box']:9.2f} "
              f"{t['vmf'] / t['normal']:13.2f} {t['ps'] / t['normal']:12.2f}")

    print("\nwhole training step, batch 512, D=100, 256-256 MLPs (ratios to the Gaussian VAE d=n)")
    x = torch.randn(512, 100)
    for n in args.dims:
        models = {"gaussian": model_of(100, latent=f"R{n}"), "ER-box": model_of(100, latent=f"S{n}"),
                  "ER-normal": model_of(100, latent=f"S{n}", compact_hidden="normal"),
                  "vMF": model_of(100, latent=f"vmf:S{n}"),
                  "PS": model_of(100, latent=f"powerspherical:S{n}")}
        t = interleaved_medians({k: make_step(v, x) for k, v in models.items()}, args.rounds,
                                args.step_reps, warmup=5)
        cells = "  ".join(f"{k} {t[k] * 1e3:.2f} ms ({t[k] / t['gaussian']:.2f})" for k in models)
        print(f"S{n}: {cells}")


if __name__ == "__main__":
    main()
