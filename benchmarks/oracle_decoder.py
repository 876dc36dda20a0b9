"""How close to the true log-likelihood can a decoder get from n rows, even told the latent points?

    python benchmarks/oracle_decoder.py --latent S2 [--n 20000 40000] [--arch default generator]

An oracle for ``fit``'s gap on the suites' benchmark data (``manifold-vae data M --dim 100
--noise 0.05 --seed 11`` by default, ``--dim``, ``--noise``, ``--seed`` otherwise; the first n rows
train, the next 2,000 are the test rows). The decoder is
fitted by maximum likelihood with every training row's *true* manifold point given — no encoder,
no posterior, no KL: a regression of x on m with a learned scale per coordinate, trained as ``fit``
trains its decoder (Adam, one-cycle schedule, batches of 512, the data standardized). What it
loses on the test rows, against the generator's own density of x given m,

    gap = mean over test rows of [log N(x; μ(m), σ²I) − log N(x; μ̂(m), diag σ̂²)]   (nats),

is the estimation error of the decoder alone, which a VAE — finding the points as well — has
too (a VAE may still land a little above its oracle: it trains with restarts, the oracle does not). For a regular model of p effective parameters fitted by maximum
likelihood the expected test loss is p/(2n) nats above the truth and the training loss p/(2n)
below (Akaike 1974), so the gap falls as 1/n.

Architectures: ``default`` is fit's decoder (MLP of the point, hidden widths 256-256, biases);
``mlp:W1,W2,...`` the same with other widths; ``generator`` is the generator's own (one hidden
layer of 100 ReLU units, no biases), which contains the truth. Prints one line per (architecture,
n) with the test gap ± its standard error (over test rows), the same gap on the first 2,000 training rows, and the time; ``--mixture N``
also fits N seeds and scores the equal mixture of their densities (a model of N decoders);
``--json FILE`` writes the lines.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn
from torch.distributions import Normal

from manifold_vae.common.mlp import MLP
from manifold_vae.data.synthetic import ManifoldBenchmark
from manifold_vae.likelihoods.gaussian import standardization
from manifold_vae.training import FitConfig
from manifold_vae.training.trainer import make_optimizer

TEST_ROWS = 2000


def decoder(arch: str, in_dim: int, out_dim: int) -> nn.Module:
    if arch == "default":
        return MLP(in_dim, [256, 256], out_dim)
    if arch.startswith("mlp:"):                  # other widths, e.g. mlp:128,128
        widths = arch[4:].split(",")
        if all(w.isdigit() and int(w) > 0 for w in widths):
            return MLP(in_dim, [int(w) for w in widths], out_dim)
    if arch == "generator":
        return nn.Sequential(nn.Linear(in_dim, 100, bias=False), nn.ReLU(),
                             nn.Linear(100, out_dim, bias=False))
    raise ValueError(f"unknown architecture {arch!r} (default, generator, mlp:W,W,...)")


def gaussian_log_prob(x, mean, log_scale):
    """Row sums of log N(x; mean, diag exp(2 log_scale))."""
    return Normal(mean, log_scale.exp()).log_prob(x).sum(-1)


def fit_oracle(arch, m_train, x_train, *, steps, lr, batch_size, seed, weight_decay=0.0):
    """``(net, log_scale, shift, scale)``: the decoder fitted on standardized x given m."""
    torch.manual_seed(seed)
    shift, scale = standardization(x_train)          # fit's: per-coordinate shift, one scale
    xs, ms = ((x_train - shift) / scale).float(), m_train.float()
    net = decoder(arch, ms.shape[1], xs.shape[1])
    log_scale = nn.Parameter(torch.zeros(xs.shape[1]))
    holder = nn.Module()                              # fit's optimizer and schedule over both
    holder.net, holder.log_scale = net, log_scale
    opt, sched = make_optimizer(holder, FitConfig(steps=steps, lr=lr, weight_decay=weight_decay))
    gen = torch.Generator().manual_seed(seed)
    order, at = torch.randperm(len(xs), generator=gen), 0
    for _ in range(steps):
        if at + batch_size > len(xs):
            order, at = torch.randperm(len(xs), generator=gen), 0
        idx = order[at:at + batch_size]
        at += batch_size
        loss = -gaussian_log_prob(xs[idx], net(ms[idx]), log_scale).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net, log_scale.detach(), shift, scale


@torch.no_grad()
def per_row_gap(bench, fitted, m, x):
    """True minus fitted log density of x given m, per row, in the data's units (float64)."""
    net, log_scale, shift, scale = fitted
    xd = x.double()
    true = gaussian_log_prob(xd, bench.mean(m), torch.full((x.shape[1],), math.log(bench.noise),
                                                           dtype=torch.float64))
    mean = net(m.float()).double() * scale + shift
    fitted_lp = gaussian_log_prob(xd, mean, log_scale.double() + scale.log())
    return true - fitted_lp


def report(args, n, arch, train_seed, test, train, t0) -> dict:
    row = dict(latent=args.latent, dim=args.dim, noise=args.noise, seed=args.seed, n=n, arch=arch,
               steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, train_seed=train_seed,
               test_gap=float(test.mean()), test_gap_se=float(test.std() / len(test) ** 0.5),
               train_gap=float(train.mean()), train_gap_se=float(train.std() / len(train) ** 0.5),
               seconds=round(time.perf_counter() - t0, 1))
    print(f"{args.latent} n={n:6d} {arch:9s}  test gap {row['test_gap']:+.3f} ± "
          f"{row['test_gap_se']:.3f}   training rows {row['train_gap']:+.3f} ± "
          f"{row['train_gap_se']:.3f}   ({row['seconds']:.0f} s)", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", default="S2")
    ap.add_argument("--n", type=int, nargs="+", default=[20000])
    ap.add_argument("--arch", nargs="+", default=["default", "generator"])
    ap.add_argument("--steps", type=int, default=12000, help="fit's default for S2, T2, SO3")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's (fit's key)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=11, help="the generator's seed")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--mixture", type=int, default=1,
                    help="also score the equal mixture of this many fits (seeds train-seed, +1, ...)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    for arch in args.arch:               # refused before anything trains
        try:
            decoder(arch, 1, 1)
        except ValueError as err:
            ap.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = ManifoldBenchmark(args.latent, dim=args.dim, noise=args.noise, seed=args.seed)
    rows = []
    for n in args.n:
        # `manifold-vae data M --n n+2000 --dim D --noise σ --seed S`: its first n rows train
        x, m = bench.sample(n + TEST_ROWS)
        for arch in args.arch:
            tests, trains, t_all = [], [], time.perf_counter()
            for i in range(args.mixture):
                t0 = time.perf_counter()
                fitted = fit_oracle(arch, m[:n], x[:n].double(), steps=args.steps, lr=args.lr,
                                    batch_size=args.batch_size, seed=args.train_seed + i,
                                    weight_decay=args.weight_decay)
                tests.append(per_row_gap(bench, fitted, m[n:], x[n:]))
                trains.append(per_row_gap(bench, fitted, m[:min(n, TEST_ROWS)], x[:min(n, TEST_ROWS)]))
                rows.append(report(args, n, arch, args.train_seed + i, tests[-1], trains[-1], t0))
            if args.mixture > 1:
                # the equal mixture of the fits' densities of x given m: gap −log mean exp(−gap_i)
                mix = [-(torch.logsumexp(-torch.stack(g), 0) - math.log(len(g)))
                       for g in (tests, trains)]
                rows.append(report(args, n, f"{arch} mixture of {args.mixture}", None, *mix, t_all))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
