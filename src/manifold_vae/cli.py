"""Command-line interface: argument parsing only; every command calls the library.

    manifold-vae data circle --n 20000 --dim 100 --noise 0.05 --out data.npy
    manifold-vae fit --data data.npy --latent S1 --group-action --out runs/s1
    manifold-vae fit --resume runs/s1
    manifold-vae evaluate runs/s1
    manifold-vae embed --latent S1 --out emb/s1
    manifold-vae discover --data data.npy --out results/discover
    manifold-vae reproduce --quick --out results/quick

Each command ends with a short summary on stdout (``--json``: one line of JSON instead). Errors:
usage errors exit 2, runtime errors exit 1, each with a one-line message on stderr (``--debug``
shows the traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .errors import ManifoldVAEError, RunComplete, UsageError

PROG = "manifold-vae"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit code 2."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(p: argparse.ArgumentParser, *, json_output: bool = False) -> None:
    if json_output:
        p.add_argument("--json", action="store_true",
                       help="end with one line of JSON (every number) instead of the summary")
    p.add_argument("--quiet", action="store_true", help="no progress bars, log lines or chatter")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    from .experiments.discover import BUDGETS, DEFAULT_CANDIDATES
    from .experiments.suites import SUITES
    from .manifolds import valid_spec_forms
    from .training import FitConfig

    defaults = FitConfig()
    parser = _Parser(prog=PROG, description="VAEs with manifold-valued latent variables "
                     "(embedding-reparameterization, Golikov & Kretov 2018).")
    parser.add_argument("--version", action="version", version=f"{PROG} 0.1.0")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("data", help="generate benchmark data with its true log-likelihood")
    p.add_argument("kind", help="'circle' (= S1), a latent spec of a compact manifold (uniform "
                                "latents), R<k> (standard normal latents), or an image dataset: "
                                "'digits' (rotated handwritten digits) or 'renders' (a 3D object "
                                "at random rotations)")
    p.add_argument("--n", type=int, default=None,
                   help="number of examples (default 20000; renders: 10000)")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels (digits: 16, renders: 32)")
    p.add_argument("--copies", type=int, default=8,
                   help="digits: rotated copies of each of the 1797 digits")
    p.add_argument("--dim", type=int, default=100, help="observation dimension D (default 100)")
    p.add_argument("--noise", type=float, default=0.05,
                   help="observation noise σ (default 0.05; 0: none, and no true likelihood)")
    p.add_argument("--hidden", type=int, default=100,
                   help="hidden units of the random MLP (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator's weights and samples")
    p.add_argument("--ceiling-rows", type=int, default=2000,
                   help="rows whose true log-likelihood is computed for the sidecar (the first "
                        "ones; default 2000; 0: none). fit computes the ceiling of its own test rows")
    p.add_argument("--out", required=True, help="output .npy file (a .json sidecar is written "
                                                "beside it); .npz for digits and renders")
    _common(p, json_output=True)

    p = sub.add_parser("fit", help="train one model and evaluate it")
    p.add_argument("--data", help=".npy/.npz/.csv data (rows × columns; a CSV may start with a "
                                  "header row), or an image dataset from `data digits|renders` "
                                  "(its own test split, conv networks and Bernoulli likelihood by "
                                  "default). With --resume: the run's own file by default")
    p.add_argument("--test-data", help="separate test data (else a split of --data)")
    p.add_argument("--latent", help=f"latent spec: {valid_spec_forms()}; or vmf:S<n> / "
                                    f"powerspherical:S<n> (the spherical peers) "
                                    f"(default {defaults.latent.name})")
    p.add_argument("--embedding", help="exact (default) | learned (a WAE-MMD map trained first) "
                                       "| DIR of a saved learned embedding (`embed --out DIR`)")
    p.add_argument("--group-action", action="store_true", default=None,
                   help="add the group-action encoder: m = g(x) · f(z)")
    p.add_argument("--steps", type=int, help=f"training steps (default {defaults.steps}); with "
                                             "--resume DIR: extend a run to this many steps")
    p.add_argument("--seed", type=int, help=f"training seed (default {defaults.seed})")
    p.add_argument("--device", help="auto (default: cuda if available) | cpu | cuda")
    p.add_argument("--config", help="TOML file with config keys (see --set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key (repeatable); the keys are listed in the README "
                        "('Configuration') and FitConfig/ModelConfig/LatentSpec, e.g. "
                        "--set hidden=128,128 --set threads=1")
    p.add_argument("--out", help="run directory (default runs/<latent>, runs/<latent>-ga with a "
                                 "group action)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR on the data it "
                                                   "recorded; with --steps N extend it")
    p.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    _common(p, json_output=True)

    p = sub.add_parser("evaluate", help="score a saved run again (default: its own test rows)")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="data file (default: the file the run recorded); with "
                                  "--split test it must hold the run's rows")
    p.add_argument("--split", choices=["test", "all"], default="test",
                   help="test (default): the rows the run held out for testing; all: every row "
                        "of the data file")
    p.add_argument("--k", type=int, default=1000,
                   help="importance samples of the IWAE bound (default 1000)")
    _common(p, json_output=True)

    p = sub.add_parser("embed", help="train a learned (WAE-MMD) embedding and report its quality")
    p.add_argument("--latent", required=True, help="the manifold, a latent spec with a compact "
                                                   "factor (S1, S2, T2, SO3, K2, S1xR2, ..., or "
                                                   "samples:PATH:d for a file of uniform samples)")
    p.add_argument("--steps", type=int, help="WAE training steps (default 2000)")
    p.add_argument("--periodic", default="", help="hidden coordinates the map treats as circles, "
                                                  "comma-separated (e.g. 0 for the Klein bottle, "
                                                  "0,1 for a torus; default none), or 'auto': "
                                                  "train one map per choice, keep the best by "
                                                  "its quality report (circles and a disk)")
    p.add_argument("--disk", default="", help="two hidden coordinates R,A the map reads as a "
                                              "disk, radius and angle (e.g. 0,1 for the "
                                              "projective plane: a disk whose boundary is "
                                              "glued antipodally; default none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the WAE (default 0)")
    p.add_argument("--out", required=True, help="directory for embedding.pt, report.json and "
                                                "embedding.png; use it with fit --embedding DIR")
    _common(p, json_output=True)

    levels = "; ".join(f"{name}: {b.steps} steps (up to {b.max_steps} for the leaders while "
                       f"they still improve), {b.seeds} seed(s), {b.restarts} initialization(s) for "
                       f"compact candidates of 2+ dimensions, "
                       f"K={b.iwae_k}" for name, b in BUDGETS.items())
    p = sub.add_parser("discover", help="rank candidate latent manifolds by test IWAE "
                                        "(which symmetry does the data have?)")
    p.add_argument("--data", required=True, help="data file (.npy/.npz/.csv), rows × columns")
    p.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                   help=f"comma-separated latent specs (default {','.join(DEFAULT_CANDIDATES)})")
    p.add_argument("--seeds", type=int, help="training seeds per candidate (default: the budget's)")
    p.add_argument("--budget", default="default", choices=list(BUDGETS),
                   help=f"training effort per candidate ({levels}); default: default")
    p.add_argument("--labels", help="optional .npy with one label per data row, to colour the "
                                    "best model's latent space")
    p.add_argument("--margin", type=float, default=0.05,
                   help="smallest IWAE lead (nats/example) that can decide between candidates")
    p.add_argument("--out", default="results/discover", help="output directory")
    p.add_argument("--force", action="store_true",
                   help="replace a discovery made on other data in --out")
    _common(p)

    p = sub.add_parser("reproduce", help="run a reproduction suite: "
                                         + ", ".join(SUITES) + " (default circle)")
    p.add_argument("--suite", default="circle", choices=list(SUITES),
                   help="; ".join(f"{s.name}: {s.description}" for s in SUITES.values()))
    p.add_argument("--quick", action="store_true", help="small, fast settings (smoke test)")
    p.add_argument("--seeds", type=int, help="training seeds per row (default: circle 3, "
                                             "manifolds and peers 2; quick: 1)")
    p.add_argument("--steps", type=int, help="training steps per model")
    p.add_argument("--latents", help="manifolds and peers suites: the manifolds to run, "
                                     "comma-separated (default: all of the suite's)")
    p.add_argument("--binarized", action="store_true",
                   help="images suite: the hard variant (Bernoulli likelihood with dynamic "
                        "binarization, one posterior hypothesis, no turn term)")
    p.add_argument("--out", default=None,
                   help="output directory (default results/<suite>[-binarized][-quick])")
    p.add_argument("--force", action="store_true", help="retrain rows already finished in --out")
    _common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        handler = {"data": cmd_data, "fit": cmd_fit, "evaluate": cmd_evaluate,
                   "embed": cmd_embed, "discover": cmd_discover,
                   "reproduce": cmd_reproduce}[args.command]
        return handler(args) or 0
    except RunComplete as done:
        print(f"{PROG}: {done}", file=sys.stderr)
        return 0
    except ManifoldVAEError as err:
        if debug:
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: keep it to one line unless --debug
        if debug:
            raise
        print(f"{PROG}: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
              f" (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _say(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr)


def _finish(args, summary: str, numbers: dict) -> None:
    """The command's last words: the summary, or with ``--json`` one line of JSON."""
    print(json.dumps(numbers) if getattr(args, "json", False) else summary)


# ---------------------------------------------------------------------- data
def cmd_data(args) -> int:
    import numpy as np

    from .common.files import save_arrays
    from .data import ManifoldBenchmark, sidecar_path
    from .evaluation import true_log_likelihood
    from .reporting import data_summary

    if args.kind in ("digits", "renders"):
        return _image_data(args)
    if args.size is not None:
        raise UsageError("--size applies to the image datasets (digits, renders) only")
    args.n = 20000 if args.n is None else args.n
    spec = "S1" if args.kind == "circle" else args.kind
    if args.n < 1 or args.dim < 1 or args.hidden < 1:
        raise UsageError("--n, --dim and --hidden must be positive")
    if not args.noise >= 0:
        raise UsageError(f"--noise must be >= 0, got {args.noise}")
    if args.ceiling_rows < 0:
        raise UsageError("--ceiling-rows must be >= 0")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise UsageError(f"--out must end in .npy, got {out}")
    try:
        bench = ManifoldBenchmark(spec, dim=args.dim, noise=args.noise, hidden=args.hidden,
                                  seed=args.seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    x, _ = bench.sample(args.n)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"generator": bench.to_dict(), "n": args.n,
            "signal_to_noise": bench.signal_to_noise(), "true_log_likelihood": None}
    save_arrays(out, x.numpy())                  # the data first: the ceiling can take minutes
    sidecar_path(out).write_text(json.dumps(info, indent=2) + "\n")
    rows = min(args.n, args.ceiling_rows)
    m = bench.manifold
    if bench.noise > 0 and rows > 0 and not (m.has_quadrature or m.has_chart):
        _say(args, f"no true log-likelihood for {m.spec}: it has no quadrature rule and no chart")
        rows = 0
    if bench.noise > 0 and rows > 0:
        ll, err, how = true_log_likelihood(bench, x[:rows], return_info=True,
                                           log=None if args.quiet else lambda s: _say(args, s))
        info.update({"true_log_likelihood": float(ll.mean()),
                     "true_log_likelihood_stderr": float(ll.std() / np.sqrt(len(ll))),
                     "true_log_likelihood_numerical_error": err,
                     "true_log_likelihood_method": how["method"],
                     "true_log_likelihood_rows": rows})
        sidecar_path(out).write_text(json.dumps(info, indent=2) + "\n")
    _finish(args, data_summary(info, out, sidecar_path(out)),
            {k: v for k, v in info.items() if k != "generator"})
    return 0


def _image_data(args) -> int:
    from .data.images import rendered_rotations, rotated_digits, save_image_dataset
    from .reporting import data_summary

    out = Path(args.out)
    if out.suffix != ".npz":
        raise UsageError(f"--out must end in .npz for the {args.kind} dataset, got {out}")
    size = args.size if args.size is not None else (16 if args.kind == "digits" else 32)
    try:
        if args.kind == "digits":
            if args.n is not None:
                raise UsageError("digits: the number of images is 1797 × --copies; --n does not apply")
            data = rotated_digits(size=size, copies=args.copies, seed=args.seed)
        else:
            data = rendered_rotations(10000 if args.n is None else args.n, size=size, seed=args.seed)
    except ValueError as err:
        raise UsageError(f"{args.kind}: {err}") from None
    save_image_dataset(out, data)
    info = {"kind": args.kind, "n": int(len(data["x"])), "n_test": int(data["test"].sum()),
            "image_shape": data["image_shape"].tolist(), "seed": args.seed,
            "labels": [k for k in data if k not in ("x", "image_shape", "test")]}
    _finish(args, data_summary(info, out, None), info)
    return 0


# ---------------------------------------------------------------------- fit
def cmd_fit(args) -> int:
    from .data import load_fit_data, recorded_fit_data
    from .progress import training_bar
    from .reporting import fit_summary
    from .training import FitConfig, RunDirectory, config_from, run_fit

    base = None
    if args.resume:
        run = RunDirectory(args.resume)
        base = run.resumable_config()
        data = recorded_fit_data(run.saved_data_key() or {}, args.data, args.test_data,
                                 what=str(run.path))
    elif args.data is None:
        raise UsageError("fit needs --data FILE (or --resume DIR to continue a run)")
    else:
        data = load_fit_data(args.data, args.test_data)
        base = data.defaults or None
    # the config is parsed and checked here, before anything is written
    config = config_from(FitConfig, base=base, file=args.config, overrides=args.set,
                         latent=args.latent, embedding=args.embedding,
                         group_action=args.group_action, steps=args.steps, seed=args.seed,
                         device=args.device)
    out = Path(args.resume or args.out or
               Path("runs") / (config.latent.name.replace(":", "-")
                               + ("-ga" if config.latent.group_action else "")))
    bar = training_bar(f"fit {config.latent.name}", quiet=args.quiet)
    result = run_fit(config, data.x, out, x_test=data.x_test, sidecar=data.sidecar,
                     resume=bool(args.resume), force=args.force,
                     log=lambda m: _say(args, m), progress_factory=bar, data_info=data.key())
    if result is not None:
        _finish(args, fit_summary(result.metrics, out), result.metrics)
    return 0


# ---------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from .reporting import evaluation_summary
    from .training.evaluate import evaluate_run

    result = evaluate_run(args.run, data=args.data, split=args.split, k=args.k)
    _finish(args, evaluation_summary(result), result)
    return 0


# ---------------------------------------------------------------------- discover
def cmd_discover(args) -> int:
    import numpy as np

    from .data import load_array, load_matrix
    from .errors import DataError
    from .experiments.discover import discover, parse_candidates
    from .progress import want_progress

    candidates = parse_candidates(args.candidates)      # bad lists fail before any loading
    x = load_matrix(args.data)
    labels = None
    if args.labels:
        labels = load_array(args.labels, what="labels").reshape(-1)
        if not np.isfinite(labels.astype(np.float64)).all():
            raise DataError(f"labels {args.labels}: contains NaN or inf")
    result = discover(x, Path(args.out), candidates=candidates, budget=args.budget,
                      seeds=args.seeds, labels=labels, margin=args.margin,
                      progress=want_progress(args.quiet), data_path=str(args.data),
                      force=args.force, log=lambda m: _say(args, m))
    print((Path(args.out) / "report.md").read_text())
    return 0 if result else 1


# ---------------------------------------------------------------------- embed
def cmd_embed(args) -> int:
    from .common.files import write_json
    from .embeddings import EmbedConfig, embedding_quality, fit_learned_embedding, save_embedding
    from .embeddings.learned import disk_coordinates, periodic_coordinates
    from .embeddings.periodic import describe, search_periodic
    from .experiments.figures import plot_embedding
    from .manifolds import parse_latent
    from .reporting import embedding_summary
    from .training.fit import check_trusted

    try:
        manifold = parse_latent(args.latent)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not any(f.compact for f in manifold.factors()):
        raise UsageError(f"a learned embedding needs a compact factor (S<n>, T<k>, SO3, K2, …), "
                         f"got {manifold.spec}")
    search = args.periodic.strip() == "auto"
    try:
        periodic = [] if search else [int(j) for j in args.periodic.split(",") if j.strip()]
    except ValueError:
        raise UsageError(f"--periodic must be 'auto' or comma-separated integers, got "
                         f"{args.periodic!r}") from None
    try:
        periodic_coordinates(manifold, periodic)
    except ValueError as err:
        raise UsageError(f"--periodic {err}") from None
    try:
        disk = [int(j) for j in args.disk.split(",") if j.strip()]
    except ValueError:
        raise UsageError(f"--disk must be two comma-separated integers, got {args.disk!r}") from None
    if search and disk:
        raise UsageError("--periodic auto tries the disk itself; leave --disk out")
    try:
        disk_coordinates(manifold, disk, periodic)
    except ValueError as err:
        raise UsageError(f"--disk {err}") from None
    cfg = EmbedConfig(latent=manifold.spec, seed=args.seed, periodic=periodic, disk=disk)
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError("--steps must be positive")
        cfg.steps = args.steps
    out = Path(args.out)
    saved = {}
    if search:
        emb, history, report, tried = search_periodic(cfg, manifold, log=lambda m: _say(args, m))
        cfg = dataclasses.replace(cfg, periodic=list(emb.periodic), disk=list(emb.disk))
        _say(args, f"kept {describe((emb.periodic, emb.disk))}")
        saved = {"periodic_search": tried}
    else:
        _say(args, f"training a WAE-MMD embedding for {manifold.spec} ({cfg.steps} steps)")
        emb, history = fit_learned_embedding(cfg)
        report = embedding_quality(emb, manifold)
    save_embedding(emb, out, report=report, config=cfg)
    write_json(out / "report.json", {"report": report, "history": history, **saved})
    plot_embedding(emb.compact, emb.learned_manifold, out / "embedding.png")
    _finish(args, embedding_summary(report, out), report)
    check_trusted(report["problems"], manifold.spec)   # after the files, so they can be inspected
    return 0


# ---------------------------------------------------------------------- reproduce
def cmd_reproduce(args) -> int:
    from .experiments.suites import SUITES
    from .progress import want_progress

    for name in ("seeds", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be positive")
    suite = SUITES[args.suite]
    latents = None
    if args.latents is not None:
        from .manifolds import parse_latent
        try:
            latents = [parse_latent(s.strip()).spec for s in args.latents.split(",") if s.strip()]
        except ValueError as err:
            raise UsageError(str(err)) from None
    settings = suite.settings(args.quick, seeds=args.seeds, steps=args.steps, latents=latents,
                              binarized=args.binarized)
    out = Path(args.out or f"results/{args.suite}{'-binarized' if args.binarized else ''}"
                           f"{'-quick' if args.quick else ''}")
    print(suite.run(settings, out, force=args.force, progress=want_progress(args.quiet),
                    log=lambda m: _say(args, m)))
    return 0
