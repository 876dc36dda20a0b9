"""This checkout's speed against another commit's, measured in one run.

    python benchmarks/compare_commits.py --base REV [--rounds 3] [--threads 1]

Checks out ``REV`` into a temporary git worktree, then runs each commit's own
``benchmarks/step_time.py`` and ``benchmarks/latent_layer.py`` (each against its own ``src``),
alternating between the two commits for ``--rounds`` rounds so that drifts of the machine hit both
alike. Prints, for every ratio the scripts report (a model's step time over its Gaussian VAE's,
another posterior's latent-layer time over ER's), the median over rounds for both commits and the
relative change. The ratios are what the scripts promise; absolute times vary between runs.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(r"^(?P<name>\S.*?)\s+(?P<ms>\d+\.\d+)\s+(?P<ratio>\d+\.\d+)\s{2}(?P<base>\S.*)$")
LAYER = re.compile(r"^\s*(?P<n>\d+)\s+(?P<box>\d+)\s+(?P<normal>\d+)\s+(?P<vmf>\d+)\s+(?P<ps>\d+)\s")
WHOLE = re.compile(r"(?P<name>[\w-]+) (?P<ms>\d+\.\d+) ms \((?P<ratio>\d+\.\d+)\)")


def ratios(output: str) -> dict[str, float]:
    """Every ratio in the output of step_time.py or latent_layer.py, by a readable key."""
    out: dict[str, float] = {}
    sphere = None
    for line in output.splitlines():
        m = STEP.match(line)
        if m and "x K" not in line:
            out[f"step {m['name'].strip()} / {m['base'].strip()}"] = float(m["ratio"])
            continue
        m = LAYER.match(line)
        if m:
            t = {k: float(m[k]) for k in ("box", "normal", "vmf", "ps")}
            for k in ("normal", "vmf", "ps"):
                out[f"layer S{m['n']} {k} / ER-box"] = t[k] / t["box"]
            continue
        if line.startswith("S") and ":" in line:
            sphere = line.split(":")[0]
            for w in WHOLE.finditer(line):
                if w["name"] != "gaussian":
                    out[f"whole step {sphere} {w['name']} / gaussian"] = float(w["ratio"])
    return out


def run(checkout: Path, script: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
    res = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=checkout, env=env,
                         capture_output=True, text=True, check=True)
    return res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    scripts = {
        "step_time.py": ["--threads", str(args.threads), "--rounds", "3", "--steps", "40",
                         "--iwae-n", "100", "--iwae-k", "100"],
        "latent_layer.py": ["--threads", str(args.threads), "--rounds", "3", "--reps", "30",
                            "--step-reps", "10"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT,
                       check=True)
        try:
            seen: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
            for r in range(args.rounds):
                for who, checkout in (("base", base), ("this", ROOT)):
                    for script, extra in scripts.items():
                        for key, value in ratios(run(checkout, script, extra)).items():
                            seen[who].setdefault(key, []).append(value)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False)
    print(f"median over {args.rounds} rounds; base = {args.base}, this = the working tree")
    print(f"{'ratio':58s} {'base':>7s} {'this':>7s} {'change':>8s}")
    for key in seen["this"]:
        if key not in seen["base"]:
            continue
        b, t = statistics.median(seen["base"][key]), statistics.median(seen["this"][key])
        print(f"{key:58s} {b:7.3f} {t:7.3f} {100 * (t / b - 1):+7.1f}%")


if __name__ == "__main__":
    main()
