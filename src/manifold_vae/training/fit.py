"""``fit``: one training run from data to ``metrics.json`` (what the CLI's ``fit`` calls).

Everything is checked before anything is written: the config (when it was made), the data
against the likelihood and the model (columns, value ranges, image shape), the model itself (built
once as a skeleton), and the run directory (another run there is refused). Then the run writes
``config.json``, trains (the restart phase first, when asked for), evaluates the test rows and
writes ``metrics.json`` (see :class:`~.rundir.RunDirectory`).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data import ManifoldBenchmark, train_test_split
from ..data.io import as_matrix
from ..embeddings import (EmbedConfig, LearnedEmbedding, embedding_quality, fit_learned_embedding,
                          load_embedding)
from ..embeddings.learned import save_embedding
from ..embeddings.periodic import learn_map, periodic_candidates
from ..embeddings.quality import saved_report_problems
from ..errors import CheckpointError, DataError, ManifoldVAEError, RunComplete, UsageError
from ..evaluation import evaluate, true_log_likelihood
from ..likelihoods import LIKELIHOODS
from ..models import VAE, build_model
from .config import FitConfig
from .convergence import still_improving
from .defaults import choose_defaults, unimodal_start, with_chosen
from .distributed import DistInfo, setup_distributed, teardown
from .hooks import tensorboard_writer, validation_score
from .rundir import RunDirectory, model_from_checkpoint
from .trainer import Interrupted, resolve_device, stream_seed, train


@dataclass
class FitResult:
    """What :func:`run_fit` returns: the trained model (eval mode, on the CPU), the final metrics
    (what ``metrics.json`` holds), the logged rows (``metrics.jsonl``), the per-example test ELBO
    and IWAE (float64), and the run directory (``None`` without one)."""

    model: VAE
    metrics: dict
    history: list[dict] = field(default_factory=list)
    per_example_elbo: torch.Tensor | None = None
    per_example_iwae: torch.Tensor | None = None
    run_dir: Path | None = None


DEFAULT_THREADS = torch.get_num_threads()   # torch's own choice, before anything changed it
MLP_THREADS_MAX_PARAMS = 2_000_000


def ceiling_metrics(sidecar: dict | None, x: torch.Tensor, per_example_iwae: torch.Tensor) -> dict:
    """True log-likelihood of rows ``x`` and the paired IWAE gap, when the data came from a known
    benchmark (its ``.json`` sidecar); ``{}`` otherwise."""
    if not sidecar or "generator" not in sidecar:
        return {}
    try:
        bench = ManifoldBenchmark(**sidecar["generator"])
    except (TypeError, ValueError):
        return {}
    m = bench.manifold
    if bench.noise <= 0 or bench.dim != x.shape[1] or not (m.has_quadrature or m.has_chart):
        return {}
    ll, err = true_log_likelihood(bench, x)
    gap = ll - per_example_iwae
    n = np.sqrt(len(ll))
    return {"true_log_likelihood": float(ll.mean()),
            "true_log_likelihood_stderr": float(ll.std() / n),
            "true_log_likelihood_numerical_error": err,
            "gap_iwae": float(gap.mean()), "gap_iwae_stderr": float(gap.std() / n)}


def check_run_dir(run: RunDirectory, config: FitConfig, *, force: bool) -> None:
    """Refuse a directory that holds another run (unless ``force``); nothing is removed here."""
    if not run.path.exists():
        return
    if not run.path.is_dir():
        raise UsageError(f"output path exists and is not a directory: {run.path}")
    if run.holds_run() and not force:
        saved = run.saved_config()
        what = "a different run" if saved != config else "a run"
        raise UsageError(f"output directory {run.path} already holds {what}; use --resume "
                         f"{run.path} to continue it, --force to overwrite it, or another --out")


def check_trusted(problems: list[str], name: str) -> None:
    """Refuse a learned map whose quality report found ``problems``, naming what was measured."""
    if problems:
        raise DataError(f"the learned embedding of {name} is not good enough to be trusted: "
                        + "; ".join(problems) + ". Train it longer (embed_steps), or "
                        "check the samples (uniform, of the declared dimension)")


def _embed_config(config: FitConfig) -> EmbedConfig:
    return EmbedConfig(latent=config.latent.manifold, hidden=list(config.model.embed_hidden),
                       steps=config.model.embed_steps, seed=config.seed,
                       periodic=list(config.model.embed_periodic),
                       disk=list(config.model.embed_disk))


def choose_periodic(config: FitConfig, *, log=print) -> tuple[FitConfig, tuple | None, list[str]]:
    """A learned map whose periodic (or disk) hidden coordinates the config leaves open
    (``embed_periodic`` and ``embed_disk`` not given, automatic defaults on): train it with flat
    coordinates, and when its quality report does not trust it, the other choices
    (:func:`~manifold_vae.embeddings.periodic.learn_map`), keeping the best trusted one —
    the Klein bottle's map with a cut box sends 11.4 % of the box off M (refused), with both
    coordinates periodic 2.6 %; the projective plane's 19.7 %, with a disk 3.3 %. Returns
    ``(config with the choice, (embedding, report, embed config) trained here or None, reasons)``."""
    spec = config.latent
    if (spec.embedding != "learned" or not config.auto_defaults
            or {"embed_periodic", "embed_disk"} & set(config.given)
            or len(periodic_candidates(spec.manifold_obj)) < 2):
        return config, None, []
    ecfg = _embed_config(config)
    log(f"training a learned embedding for {spec.manifold} (WAE-MMD, {ecfg.steps} steps)")
    (emb, _, report), (best, _, best_report), tried = learn_map(ecfg, log=log)
    flat = (emb, report, ecfg)
    if tried is None:
        return config, flat, []
    if best_report["problems"]:
        log("no choice of periodic or disk hidden coordinates gave a trusted map")
        return config, flat, []
    periodic, disk = list(best.periodic), list(best.disk)
    row = next(t for t in tried if t["periodic"] == periodic and t["disk"] == disk)
    return (with_chosen(config, {"embed_periodic": periodic, "embed_disk": disk}),
            (best, best_report, dataclasses.replace(ecfg, periodic=periodic, disk=disk)),
            [f"embed_periodic {periodic}" + (f", embed_disk {disk}" if disk else "") +
             " (the learned map with flat hidden "
             f"coordinates was not trusted; of {len(tried)} choices this one sends the least of "
             f"the box off M: {100 * (row['off_fraction'] or 0):.1f} %)"])


def prepare_embedding(config: FitConfig, run: RunDirectory | None, *, log=print, trained=None):
    """The embedding a config asks for: ``None`` (exact), a freshly trained or a loaded one;
    ``trained``: ``(embedding, report, embed config)`` already trained for this config."""
    spec = config.latent
    if spec.embedding == "exact":
        return None
    if spec.embedding == "learned":
        if trained is not None:
            emb, report, ecfg = trained
        else:
            ecfg = _embed_config(config)
            log(f"training a learned embedding for {spec.manifold} (WAE-MMD, {ecfg.steps} steps)")
            emb, _ = fit_learned_embedding(ecfg)
            report = embedding_quality(emb, emb.manifold)
        if run is not None:
            save_embedding(emb, run.embedding_dir, report=report, config=ecfg)
        for warning in report.get("sample_checks", {}).get("warnings", []):
            log(f"warning: {spec.manifold}: {warning}")
        try:
            check_trusted(report["problems"], spec.manifold)
        except DataError as err:
            if run is None:
                raise
            # keep the map for inspection, but nothing that makes the corrected command (more
            # embed_steps, the same --out) meet "already holds a different run"
            run.forget_config()
            raise DataError(f"{err} (the map and its report are kept in {run.embedding_dir} for "
                            "inspection; the run itself was not started)") from None
        return emb
    return load_embedding(spec.embedding, expect=spec.manifold_obj)


def load_given_embedding(spec, *, check: bool = True):
    """The saved embedding ``spec.embedding`` names, refused (unless not ``check``) if the
    quality report it was saved with does not trust it, judged by today's thresholds."""
    emb = load_embedding(spec.embedding, expect=spec.manifold_obj)
    if check:
        check_trusted(saved_report_problems(emb.report), f"{spec.manifold} in {spec.embedding}")
    return emb


def _check_data(config: FitConfig, model: nn.Module | None, x, x_test):
    """Data the likelihood and model can take (refused with a named DataError otherwise); returns
    the likelihood that will score them."""
    if x_test is not None and x_test.shape[1] != x.shape[1]:
        raise DataError(f"test data have {x_test.shape[1]} columns but training data have "
                        f"{x.shape[1]}")
    if model is not None:
        if getattr(model, "data_dim", x.shape[1]) != x.shape[1]:
            raise DataError(f"the model takes {model.data_dim} columns but the data have "
                            f"{x.shape[1]}")
        likelihood = model.likelihood
    else:
        likelihood = LIKELIHOODS[config.model.likelihood](x.shape[1])
    for name, arr in (("training data", x), ("test data", x_test)):
        if arr is not None:
            likelihood.check_data(arr, name)
    return likelihood


def run_fit(config: FitConfig, x: torch.Tensor, out: str | Path | None, *,
            x_test: torch.Tensor | None = None, sidecar: dict | None = None,
            resume: bool = False, force: bool = False, log: Callable[[str], None] = print,
            progress_factory: Callable | None = None, data_info: dict | None = None,
            model: nn.Module | None = None, accept_untrusted_embedding: bool = False
            ) -> FitResult | None:
    """Train and evaluate one model; returns a :class:`FitResult` (its metrics are written to
    ``out/metrics.json``; ``None`` on the non-main processes of a multi-process run).

    ``x``: all data (a tensor of any float dtype, a numpy array), split by
    ``config.test_fraction`` unless ``x_test`` is given. ``out``: the run directory (a path or
    ``None`` for none).
    ``resume``: continue the run in ``out`` from its checkpoint (its saved config wins).
    ``model``: a model built in Python (``VAE(encoder, latent, decoder, likelihood)``) to train
    instead of the one ``config.model`` describes.
    ``accept_untrusted_embedding``: train on a saved learned embedding even if its quality report
    does not trust it (the suites do, and mark the row); refused by default.
    """
    if not isinstance(config, FitConfig):
        raise UsageError(f"config must be a FitConfig, got {type(config).__name__}")
    x = as_matrix(x, name="training data", min_rows=2)
    if x_test is not None:
        x_test = as_matrix(x_test, name="test data", min_rows=1)
    if model is not None:
        if not isinstance(model, VAE):
            raise UsageError(f"model must be a manifold_vae.VAE (encoder, latent, decoder, "
                             f"likelihood), got {type(model).__name__}")
        # the saved config names the model's own latent and likelihood
        config = config.replace(latent=model.latent.spec, likelihood=model.likelihood.name)
    likelihood = _check_data(config, model, x, x_test)
    skeleton = model
    if model is None:
        # a skeleton, so that a model the config cannot build is refused before anything is written
        with torch.random.fork_rng():
            skeleton = build_model(config.model, x.shape[1],
                                   embedding=_skeleton(config, check=not accept_untrusted_embedding))
    rows = x.shape[0] if x_test is not None else round(x.shape[0] * (1 - config.test_fraction))
    config, chosen = choose_defaults(config, rows, skeleton)
    run = RunDirectory(out) if out is not None else None
    ckpt, in_restarts, trained = None, False, None
    if not resume and model is None:
        if run is not None:
            check_run_dir(run, config, force=force)     # before minutes of embedding training
        config, trained, reasons = choose_periodic(config, log=log)
        chosen = [*chosen, *reasons]
        if reasons:
            with torch.random.fork_rng():
                skeleton = build_model(config.model, x.shape[1], embedding=trained[0])
            # the chosen map's circles have wrapped posteriors: they start unimodal too
            start, why = unimodal_start(config, skeleton)
            config, chosen = with_chosen(config, start), [*chosen, *why]
    if resume:
        if run is None:
            raise UsageError("--resume needs the run directory")
        if run.in_restart_phase:
            in_restarts = True          # interrupted in the restart phase: it picks up there
            saved = FitConfig.from_dict(run.resumable_config())
        else:
            ckpt = run.load_checkpoint()
            saved = FitConfig.from_dict(ckpt["config"])
        if (config.latent.embedding == "learned"
                and not {"embed_periodic", "embed_disk"} & set(config.given)):
            # the periodic / disk coordinates the run chose when it started (choose_periodic),
            # and the start of their wrapped posteriors chosen with them (unimodal_start)
            carried = {"embed_periodic": saved.model.embed_periodic,
                       "embed_disk": saved.model.embed_disk}
            if "init_concentration" not in config.given:
                carried["init_concentration"] = saved.latent.init_concentration
            config = with_chosen(config, carried)
        diff = _differences(saved.to_dict(), config.to_dict())
        if set(diff) == {"steps"}:
            config = extended_config(saved, config.steps, where=run.path)
        elif diff:
            raise CheckpointError(f"{run.path}: checkpoint config does not match the requested "
                                  "model: " + ", ".join(f"{k}: saved {a!r} vs requested {b!r}"
                                                        for k, (a, b) in diff.items()))
        elif run.is_finished:
            raise RunComplete(f"{run.path} is complete ({saved.steps} steps; metrics.json written); "
                              f"nothing to resume. To train it longer: fit --resume {run.path} "
                              f"--steps N (a run with schedule=constant), or a new run with --steps N")
        chosen = []                     # recorded when the run started
    if chosen:
        log(f"defaults for {config.latent.name}"
            f"{' + group action' if config.latent.group_action else ''}: " + "; ".join(chosen)
            + " (set these keys to choose otherwise)")
    threads, why = (config.threads, "set") if config.threads else choose_threads(skeleton)
    # said when training starts, after every check has passed
    log = _prefixed(log, None if config.threads else
                    f"threads: {threads} ({why}; set threads=N to choose)")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit_on_device(config, x, run, x_test, sidecar, ckpt, force, log, progress_factory,
                              data_info, in_restarts, model, likelihood, chosen, trained)
    finally:
        torch.set_num_threads(before)


def _prefixed(log: Callable[[str], None], first: str | None) -> Callable[[str | None], None]:
    """``log`` that says ``first`` (if any) before its first message, or when called with
    ``None``, which says nothing else."""
    pending = [first] if first is not None else []

    def say(message: str | None) -> None:
        while pending:
            log(pending.pop())
        if message is not None:
            log(message)
    return say


def choose_threads(model: nn.Module) -> tuple[int, str]:
    """Threads for training ``model`` on the CPU: one for an MLP-sized model (small matrix
    products gain nothing from a second thread and lose much when other work shares the cores;
    measured by ``benchmarks/threads.py``), torch's default for convolutional or large ones."""
    convs = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    n = sum(p.numel() for p in model.parameters())
    if not convs and n <= MLP_THREADS_MAX_PARAMS:
        return 1, f"an MLP model of {n / 1e6:.2f}M parameters"
    return DEFAULT_THREADS, (f"a {'convolutional' if convs else 'large'} model of "
                             f"{n / 1e6:.2f}M parameters: torch's default")


def _fit_on_device(config, x, run, x_test, sidecar, ckpt, force, log, progress_factory,
                   data_info, in_restarts, model, likelihood, chosen, trained=None):
    device = resolve_device(config.device)
    dist_info = setup_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    try:
        result = _run(config, x, run, x_test, sidecar, ckpt, force, log, progress_factory,
                      data_info, device, dist_info, in_restarts, model, likelihood, chosen, trained)
    except Interrupted:          # every rank stopped at the same step
        teardown(dist_info, ok=True)
        raise
    except BaseException:
        teardown(dist_info, ok=False)
        raise
    teardown(dist_info, ok=True)
    return result


def extended_config(saved: FitConfig, steps: int, *, where) -> FitConfig:
    """The config of ``saved`` trained on to ``steps``: allowed where the schedule permits (a
    constant learning rate; the KL warm-up keeps its number of steps), refused with the way to
    get there otherwise."""
    if steps <= saved.steps:
        raise UsageError(f"{where} was trained for {saved.steps} steps; --steps {steps} would not "
                         "extend it (resume it without --steps, or start a new run)")
    if saved.schedule != "constant":
        raise UsageError(f"{where} was trained with the {saved.schedule} schedule, which anneals "
                         f"the learning rate to its last step ({saved.steps}): it cannot be "
                         f"extended. Start a new run with --steps {steps}, or train with "
                         f"--set schedule=constant, which --resume {where} --steps N can extend")
    return saved.replace(steps=steps, kl_warmup=saved.kl_warmup * saved.steps / steps)


def _differences(old: dict, new: dict, prefix: str = "") -> dict:
    out = {}
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_differences(a, b, f"{prefix}{k}."))
        elif a != b:
            out[f"{prefix}{k}"] = (a, b)
    return out


def _skeleton(config: FitConfig, *, check: bool = True):
    """The embedding the config asks for, for a dry build of the model: none (exact), an untrained
    one ("learned"), or the saved one, loaded (so that a wrong path or one made for another
    manifold is refused before anything is written)."""
    spec = config.latent
    if spec.embedding == "exact":
        return None
    if spec.embedding == "learned":
        return LearnedEmbedding(spec.manifold_obj, config.model.embed_hidden,
                                periodic=config.model.embed_periodic,
                                disk=config.model.embed_disk)
    return load_given_embedding(spec, check=check)


def _run(config, x, run, x_test, sidecar, ckpt, force, log, progress_factory, data_info,
         device, dist_info: DistInfo, in_restarts: bool, user_model, likelihood, chosen=(),
         trained=None):
    main = dist_info.is_main
    if config.tensorboard and main:
        tensorboard_writer(None)  # fail before anything is written if the package is missing
    if x_test is None:
        x_train, x_test, _, test_idx = train_test_split(x, config.test_fraction, config.split_seed)
    else:
        x_train, test_idx = x, None
    x_val = None
    if config.validation_fraction > 0:
        try:
            x_train, x_val, _, _ = train_test_split(x_train, config.validation_fraction,
                                                    config.split_seed + 1)
        except DataError:
            raise DataError(f"data: {x_train.shape[0]} training rows are too few to hold out a "
                            f"validation fraction of {config.validation_fraction}") from None
    # one fixed draw of the held-out rows (e.g. a Bernoulli binarization), the same for every model
    x_test = likelihood.fix_observations(x_test, seed=config.split_seed)
    if x_val is not None:
        x_val = likelihood.fix_observations(x_val, seed=config.split_seed + 1)
    if run is not None and main:
        if ckpt is None and not in_restarts:
            check_run_dir(run, config, force=force)
            run.clear()
        run.create()
        extra = {**_model_source(user_model), **({"defaults": list(chosen)} if chosen else {})}
        run.write_config(config, data_info, **extra)
    if ckpt is not None:
        if int(ckpt["data_dim"]) != x.shape[1]:
            raise CheckpointError(f"{run.path}: checkpoint was trained on {ckpt['data_dim']}-"
                                  f"dimensional data, these data have {x.shape[1]} columns")
        model, _ = model_from_checkpoint(ckpt, where=str(run.path), model=user_model)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            embedding = (None if user_model is not None else
                         prepare_embedding(config, run if main else None,
                                           log=log if main else _mute, trained=trained))
            model = (user_model if user_model is not None
                     else build_model(config.model, x.shape[1], embedding=embedding))
        if config.standardize:
            model.likelihood.fit_transform(x_train)
        fresh = copy.deepcopy(model) if user_model is not None else None

        def build(r):
            """Restart ``r``'s fresh model (restart 0: the one above)."""
            if r == 0:
                return model
            with torch.random.fork_rng():
                torch.manual_seed(stream_seed(config, r))
                if fresh is not None:      # a user's model: its initial state, re-initialized
                    m = copy.deepcopy(fresh)
                    for module in m.modules():
                        if hasattr(module, "reset_parameters"):
                            module.reset_parameters()
                else:
                    m = build_model(config.model, x.shape[1], embedding=copy.deepcopy(embedding))
            if config.standardize:
                m.likelihood.fit_transform(x_train)
            return m

        if config.restarts > 1:
            model, ckpt = _restart_phase(config, build, x_train, x_val, run, device, dist_info,
                                         log if main else _mute,
                                         progress_factory if main else None, user_model)
    restart_info = ckpt.get("restarts") if ckpt is not None else None
    if main:
        log(None)          # anything still to be said before training starts
    model.to(device)
    bar = progress_factory(config.steps, ckpt["step"] if ckpt else 0) if (progress_factory and main) else None
    extra = {"restarts": restart_info} if restart_info else {}
    extra.update(_model_source(user_model))
    result = train(model, x_train, config, run, device=device, dist_info=dist_info, resume=ckpt,
                   progress=bar, x_val=x_val, extra=extra)
    if bar is not None:
        bar(None, None)
    if not main:
        return None
    model.eval()
    model.cpu()
    t = time.perf_counter()
    ev = evaluate(model, x_test, k=config.iwae_k)
    eval_seconds = time.perf_counter() - t
    train_seconds, steps_run = result["train_seconds"], config.steps
    if restart_info:     # the restarts not kept cost time too
        others = [r for r in restart_info if r["restart"] != ckpt["restart"]]
        train_seconds += sum(r["seconds"] for r in others)
        steps_run += len(others) * config.restart_steps()
    spec = model.latent.spec
    metrics = {"latent": spec.name, "embedding": spec.embedding,
               "group_action": spec.group_action, "iwae_is_bound": spec.is_bound,
               "test_elbo": ev["elbo"], "test_elbo_stderr": ev["elbo_stderr"],
               "test_iwae": ev["iwae"], "test_iwae_stderr": ev["iwae_stderr"], "iwae_k": ev["k"],
               "n_train": int(x_train.shape[0]), "n_test": int(x_test.shape[0]),
               "train_seconds": train_seconds,
               "seconds_per_step": train_seconds / steps_run,
               "eval_seconds": eval_seconds, "steps": config.steps,
               "world_size": dist_info.world_size, "device": str(device)}
    if result.get("selected"):
        metrics.update({"n_validation": int(x_val.shape[0]),
                        "selected_step": result["selected"]["step"],
                        "validation_iwae": result["selected"]["validation_iwae"]})
    if restart_info:
        metrics.update({"restarts": restart_info, "selected_restart": int(ckpt["restart"])})
        if run is not None:        # the choice is made: the restarts' checkpoints are spent
            for r in restart_info:
                (run.restart(r["restart"]) / RunDirectory.CHECKPOINT).unlink(missing_ok=True)
    if result["history"]:
        last = result["history"][-1]
        metrics.update({"final_train_elbo": last["elbo"], "final_train_kl": last["kl"],
                        "skipped_steps": last.get("skipped_steps", 0)})
        metrics.update(still_improving(result["history"], config.steps, schedule=config.schedule))
    if getattr(model, "hypotheses", 1) > 1:     # which posterior hypotheses the test rows take
        metrics["hypothesis_shares"] = model.hypothesis_shares(x_test)
    metrics.update(ceiling_metrics(sidecar, x_test, ev["per_example_iwae"]))
    if run is not None:
        run.write_metrics(metrics)
        run.write_per_example(ev["per_example_elbo"], ev["per_example_iwae"])
        if test_idx is not None:
            run.write_test_index(test_idx)
    return FitResult(model, metrics, result["history"], ev["per_example_elbo"],
                     ev["per_example_iwae"], run.path if run is not None else None)


def _model_source(user_model) -> dict:
    """What built the model: the config (``{}``) or the user (the class names, for messages)."""
    if user_model is None:
        return {}
    names = [type(user_model).__name__] + [type(getattr(user_model, n, None)).__name__
                                           for n in ("encoder", "decoder")
                                           if hasattr(user_model, n)]
    return {"model_source": "user", "model_class": " / ".join(names)}


def _averaged(model: torch.nn.Module, ckpt: dict) -> torch.nn.Module:
    """``model`` with the checkpoint's weight average when it holds one (what the trainer scores)."""
    average = ckpt.get("weight_average")
    if not average:
        return model
    scored = copy.deepcopy(model)
    scored.load_state_dict(average["model"])
    return scored


def _restart_phase(config: FitConfig, build: Callable[[int], torch.nn.Module], x_train, x_val,
                   run: RunDirectory | None, device, dist_info: DistInfo, log,
                   progress_factory: Callable | None = None, user_model=None) -> tuple:
    """Train ``config.restarts`` initializations for ``config.restart_steps()`` steps each (into
    ``run/restarts/restart<r>``; finished ones are reused, an interrupted one resumed), score each
    on the validation rows and return ``(model, checkpoint)`` of the best, to be continued.

    Choosing among restarts early by held-out likelihood is the cheap form of running whole
    restarts and keeping the best: a run that will end in a poor basin (a folded encoder map,
    a collapsed coordinate) is usually behind by then."""
    k_steps = config.restart_steps()
    chosen, infos = None, []
    for r in range(config.restarts):
        rdir = run.restart(r) if run is not None else None
        saved = None
        if rdir is not None and rdir.has_checkpoint:
            saved = rdir.load_checkpoint()
            if saved.get("config") != config.to_dict() or int(saved.get("restart", -1)) != r:
                raise CheckpointError(f"{rdir.path}: holds a restart of another run; use --force "
                                      f"to start over")
        if saved is not None:
            model, _ = model_from_checkpoint(saved, where=str(rdir.path),
                                             model=build(r) if user_model is not None else None)
        else:
            model = build(r)
        model.to(device)
        if saved is not None and int(saved["step"]) >= k_steps:
            ckpt, seconds = saved, float(saved["elapsed"])
            history = rdir.history(upto=k_steps)
        else:
            if rdir is not None and dist_info.is_main:
                rdir.create()
            bar = (progress_factory(k_steps, int(saved["step"]) if saved is not None else 0)
                   if progress_factory is not None else None)
            try:
                res = train(model, x_train, config, rdir, device=device, dist_info=dist_info,
                            resume=saved, x_val=x_val, restart=r, stop_at=k_steps,
                            progress=bar, extra=_model_source(user_model))
            except Interrupted:
                raise Interrupted(f"interrupted in restart {r + 1}/{config.restarts}; continue "
                                  f"with: manifold-vae fit --resume {run.path if run else None}"
                                  ) from None
            finally:
                if bar is not None:
                    bar(None, None)
            ckpt, history, seconds = res["checkpoint"], res["history"], res["train_seconds"]
        # the trainer scored the restart at its last step; score again only if that row is lost
        last = history[-1] if history else {}
        score = (last.get("validation_iwae") if last.get("step") == k_steps
                 else validation_score(_averaged(model, ckpt), x_val.to(device),
                                       config.validation_k, config.seed))
        infos.append({"restart": r, "validation_iwae": score, "seconds": seconds})
        log(f"restart {r + 1}/{config.restarts}: validation IWAE "
            f"{'non-finite' if score is None else f'{score:.3f}'} after {k_steps} steps")
        if score is not None and (chosen is None or score > chosen[0]):
            chosen = (score, model, ckpt, history)
    if chosen is None:
        raise ManifoldVAEError(f"all {config.restarts} restarts ended with a non-finite "
                               "validation score")
    _, model, ckpt, history = chosen
    ckpt = dict(ckpt, restarts=infos)
    if run is not None and dist_info.is_main:   # the run's log starts with the chosen restart's
        run.rewrite_history(history)
    log(f"continuing restart {int(ckpt['restart']) + 1} (best validation IWAE)")
    return model, ckpt


def _mute(*a, **k):
    pass
