"""This checkout's speed against another commit's, in one process, interleaved.

    python benchmarks/compare_commits.py --base REV [--rounds 15] [--steps 20] [--threads 1]

Exports ``REV``'s package into a temporary folder under another name (``manifold_vae_base``; the
package uses only relative imports), imports both versions side by side, builds the same models
from each (the models of ``step_time.py`` and the whole steps of ``latent_layer.py``: the same
256-256 MLPs, D=100, batch 512) and times their Adam training steps in one interleaved loop, so
that drifts of the machine hit both alike. Prints, per model, the ms/step of each version
and this one's time over the base's (the fastest round of each, since noise on a
shared machine only ever adds time); then each version's ratio to its Gaussian VAE of the same
dimension, the figure the scripts report. A version-1 model (one ``VAE(D, latent, ...)``
class) and a version-2 one (``build_model(ModelConfig(...), D)``) are both understood.
"""
from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from timing import make_step   # benchmarks/timing.py

ROOT = Path(__file__).resolve().parent.parent
MODELS = {   # name: (keys, the Gaussian VAE it is compared with)
    "gaussian d=1 (R1)": ({"latent": "R1"}, "gaussian d=1 (R1)"),
    "ER exact S1": ({"latent": "S1"}, "gaussian d=1 (R1)"),
    "ER exact S1 + group action": ({"latent": "S1", "group_action": True}, "gaussian d=1 (R1)"),
    "gaussian d=3 (R3)": ({"latent": "R3"}, "gaussian d=3 (R3)"),
    "ER exact SO3 + group action": ({"latent": "SO3", "group_action": True}, "gaussian d=3 (R3)"),
    "gaussian d=10 (R10)": ({"latent": "R10"}, "gaussian d=10 (R10)"),
    "ER-box S10": ({"latent": "S10"}, "gaussian d=10 (R10)"),
    "ER-normal S10": ({"latent": "S10", "compact_hidden": "normal"}, "gaussian d=10 (R10)"),
    "vMF S10": ({"latent": "vmf:S10"}, "gaussian d=10 (R10)"),
    "PS S10": ({"latent": "powerspherical:S10"}, "gaussian d=10 (R10)"),
}


def export(rev: str, where: Path) -> str:
    """``rev``'s ``src/manifold_vae`` as the package ``manifold_vae_base`` in ``where``."""
    tar = subprocess.run(["git", "archive", rev, "src/manifold_vae"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(where, filter="data")
    (where / "src" / "manifold_vae").rename(where / "manifold_vae_base")
    return "manifold_vae_base"


def build(pkg, keys: dict, dim: int):
    if hasattr(pkg, "build_model"):
        return pkg.build_model(pkg.ModelConfig(**keys), dim)
    keys = dict(keys)
    return pkg.VAE(dim, keys.pop("latent"), **keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20, help="steps per model per round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        name = export(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        base = importlib.import_module(name)
        sys.path.insert(0, str(ROOT / "src"))
        this = importlib.import_module("manifold_vae")
        torch.manual_seed(0)
        x = torch.randn(512, 100)
        steps = {}
        for model, (keys, _) in MODELS.items():
            for who, pkg in (("base", base), ("this", this)):
                torch.manual_seed(0)
                steps[(model, who)] = make_step(build(pkg, keys, 100), x)
        for fn in steps.values():           # warm-up
            for _ in range(3):
                fn()
        times = {k: [] for k in steps}
        for _ in range(args.rounds):
            for k, fn in steps.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times[k].append((time.perf_counter() - t) / args.steps)
    # the fastest round: timing noise on a shared machine only ever adds time
    med = {k: min(v) for k, v in times.items()}
    print(f"training step, batch 512, D=100, 256-256 MLPs, {args.threads} thread(s); fastest of "
          f"{args.rounds} interleaved rounds x {args.steps} steps; base = {args.base}")
    print(f"{'model':30s} {'base ms':>8s} {'this ms':>8s} {'this/base':>9s}   "
          f"{'ratio to Gaussian: base':>24s} {'this':>6s}")
    for model, (_, gauss) in MODELS.items():
        b, t = med[(model, "base")], med[(model, "this")]
        rb, rt = b / med[(gauss, "base")], t / med[(gauss, "this")]
        print(f"{model:30s} {b * 1e3:8.2f} {t * 1e3:8.2f} {t / b:9.3f}   {rb:24.3f} {rt:6.3f}")


if __name__ == "__main__":
    main()
