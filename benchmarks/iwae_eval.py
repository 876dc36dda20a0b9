"""Time of the batched IWAE evaluation against what its decoder passes alone take.

    python benchmarks/iwae_eval.py [--n 10000] [--k 1000] [--threads 2]

An ER S1 + group action model (256-256 MLPs, D=100, as ``fit`` builds it) scores ``n`` rows with
``k`` importance samples, in a fresh process each way: as the library runs it (freed memory
kept, ``evaluation.bounds.keep_freed_memory``) and with glibc's default of returning large freed
blocks to the system. Beside them, the decoder alone on the same ``n × k`` rows in the same
passes (``models.vae.CPU_DECODER_PASS_ROWS`` rows each): the floor set by its matrix products.
Wall, user and system seconds of each.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from manifold_vae.evaluation import bounds
from manifold_vae.models.vae import CPU_DECODER_PASS_ROWS
from timing import model_of
n, k, threads, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
torch.manual_seed(0)
model = model_of(100, latent="S1", group_action=True).eval()
x = torch.randn(n, 100)
if mode == "default":
    bounds.keep_freed_memory = lambda *a, **kw: False
elif mode == "decoder":
    bounds.keep_freed_memory()
r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if mode == "decoder":
    rows = CPU_DECODER_PASS_ROWS
    m = torch.nn.functional.normalize(torch.randn(rows, 2), dim=-1)
    with torch.no_grad():
        for _ in range(n * k // rows):
            model.decoder(m)
else:
    bounds.per_example_bounds(model, x, k=k)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"IWAE evaluation, K={args.k}, {args.n} rows, D=100, {args.threads} threads")
    for mode, what in (("library", "per_example_bounds (freed memory kept)"),
                       ("default", "per_example_bounds (glibc's default)"),
                       ("decoder", "decoder passes alone")):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.n), str(args.k),
                              str(args.threads), mode], capture_output=True, text=True, check=True,
                             cwd=__file__.rsplit("/", 1)[0] or ".")
        r = json.loads(out.stdout)
        print(f"{what:40s} wall {r['wall']:6.1f} s  user {r['user']:6.1f} s  sys {r['sys']:5.1f} s")


if __name__ == "__main__":
    main()
