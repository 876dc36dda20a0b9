"""How many threads should a training step use? One against all cores, for an MLP model and a
convolutional one, on a quiet machine and with one other busy process (as when other work runs).

    python benchmarks/threads.py [--rounds 5] [--steps 30]

What ``fit`` does by default (``threads = 0``) follows from this: one thread for MLP-sized models,
torch's default for convolutional ones (``training.fit.choose_threads``). Times are medians of
interleaved rounds; the ratios (many threads / one thread) are taken within this run.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import torch

from timing import make_step, model_of   # benchmarks/timing.py


def busy(stop):
    """A CPU-bound loop in another process until ``stop`` is set: other work on the machine."""
    x = 0.0
    while not stop.is_set():
        for i in range(100000):
            x += i * 0.5


def time_steps(step, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    many = os.cpu_count() or 1
    torch.manual_seed(0)
    models = {
        "MLP 256-256, S1 + GA, D=100, batch 512": (model_of(100, latent="S1", group_action=True),
                                                  torch.randn(512, 100)),
        "conv, digits S1xR4 + GA, 16x16, batch 128": (
            model_of(256, latent="S1xR4", group_action=True, network="conv-rotate",
                     likelihood="bernoulli", image_shape=[1, 16, 16], hidden=[256],
                     encoder_symmetry=4), torch.rand(128, 256)),
    }
    print(f"{many} cores; ms per training step, median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'model':44s} {'load':>6s} {'1 thread':>9s} {f'{many} threads':>10s} {'ratio':>6s}")
    ctx = multiprocessing.get_context("spawn")
    for load in ("quiet", "busy"):
        stop = ctx.Event()
        worker = ctx.Process(target=busy, args=(stop,)) if load == "busy" else None
        if worker:
            worker.start()
        try:
            for name, (model, x) in models.items():
                step = make_step(model, x)
                one, all_ = [], []
                for _ in range(args.rounds):
                    one.append(time_steps(step, 1, args.steps))
                    all_.append(time_steps(step, many, args.steps))
                a, b = statistics.median(one), statistics.median(all_)
                print(f"{name:44s} {load:>6s} {a * 1e3:9.2f} {b * 1e3:10.2f} {b / a:6.2f}")
        finally:
            if worker:
                stop.set()
                worker.join()


if __name__ == "__main__":
    main()
