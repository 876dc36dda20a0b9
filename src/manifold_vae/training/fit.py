"""``fit``: one training run from data to ``metrics.json`` (what the CLI's ``fit`` calls)."""
from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import ManifoldBenchmark, train_test_split
from ..errors import CheckpointError, DataError, ManifoldVAEError, UsageError
from ..evaluation import evaluate, true_log_likelihood
from .config import FitConfig, config_from
from .distributed import DistInfo, setup_distributed, teardown
from .runs import (CHECKPOINT, CONFIG, METRICS, METRICS_LOG, RESTARTS, build_model,
                   load_checkpoint, model_from_checkpoint, prepare_embedding, resumable_config,
                   write_json)
from .trainer import (Interrupted, _read_history, _rewrite_history, _tensorboard, resolve_device,
                      stream_seed, train, validation_score)


def data_transform(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate shift and one global scale (keeps the noise isotropic; log-Jacobian -D log s)."""
    shift = x.mean(0)
    scale = (x - shift).pow(2).mean().sqrt().clamp_min(1e-12)
    return shift, scale


def fixed_binarization(x: torch.Tensor, seed: int) -> torch.Tensor:
    """``x ~ Bernoulli(x)`` drawn once from ``seed`` (binary input is returned unchanged)."""
    if bool(((x == 0) | (x == 1)).all()):
        return x
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def check_run_dir(out: Path, config: FitConfig, *, force: bool) -> None:
    """Refuse to overwrite a directory that holds another run, unless ``force``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"output path exists and is not a directory: {out}")
    markers = [out / n for n in (CONFIG, CHECKPOINT, METRICS_LOG, METRICS)]
    if any(m.exists() for m in markers) or (out / RESTARTS).exists():
        if not force:
            try:
                old = json.loads((out / CONFIG).read_text()).get("config", {})
            except (OSError, json.JSONDecodeError):
                old = {}
            what = "a different run" if old != config.to_dict() else "a run"
            raise UsageError(f"output directory {out} already holds {what}; use --resume {out} to "
                             f"continue it, --force to overwrite it, or another --out")
        # the run's own files and its test split, so that a stale test_index.npy cannot make
        # `evaluate --split test` pick the old run's rows
        for m in markers + [out / n for n in ("test_per_example.npy", "test_index.npy")]:
            if m.exists():
                m.unlink()
        for sub in ("embedding", RESTARTS):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)


def ceiling_metrics(sidecar: dict | None, x: torch.Tensor, per_example_iwae: torch.Tensor) -> dict:
    """True log-likelihood of rows ``x`` and the paired IWAE gap, when the data came from a known
    benchmark (its ``.json`` sidecar); ``{}`` otherwise."""
    if not sidecar or "generator" not in sidecar:
        return {}
    try:
        bench = ManifoldBenchmark(**sidecar["generator"])
    except (TypeError, ValueError):
        return {}
    if bench.noise <= 0 or bench.dim != x.shape[1]:
        return {}
    ll, err = true_log_likelihood(bench, x)
    gap = ll - per_example_iwae
    n = np.sqrt(len(ll))
    return {"true_log_likelihood": float(ll.mean()),
            "true_log_likelihood_stderr": float(ll.std() / n),
            "true_log_likelihood_numerical_error": err,
            "gap_iwae": float(gap.mean()), "gap_iwae_stderr": float(gap.std() / n)}


def run_fit(config: FitConfig, x: torch.Tensor, out: Path | None, *,
            x_test: torch.Tensor | None = None, sidecar: dict | None = None,
            resume: bool = False, force: bool = False, log: Callable[[str], None] = print,
            progress_factory: Callable | None = None, data_info: dict | None = None) -> dict:
    """Train and evaluate one model; returns the final metrics (written to ``out/metrics.json``).

    ``x``: all data, split by ``config.test_fraction`` unless ``x_test`` is given.
    ``resume``: continue the run in ``out`` from its checkpoint (its saved config wins).
    """
    ckpt, in_restarts = None, False
    if resume:
        if out is None:
            raise UsageError("--resume needs the run directory")
        if not (out / CHECKPOINT).is_file() and (out / RESTARTS).is_dir():
            in_restarts = True          # interrupted in the restart phase: it picks up there
            saved = config_from(FitConfig, base=resumable_config(out))
        else:
            ckpt = load_checkpoint(out)
            saved = config_from(FitConfig, base=ckpt["config"])
        if saved.to_dict() != config.to_dict():
            diff = {k: (v, config.to_dict()[k]) for k, v in saved.to_dict().items()
                    if config.to_dict()[k] != v}
            raise CheckpointError(f"{out}: checkpoint config does not match the requested model: "
                                  + ", ".join(f"{k}: saved {a!r} vs requested {b!r}"
                                              for k, (a, b) in diff.items()))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dist_info = setup_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    try:
        return _run(config, x, out, x_test, sidecar, ckpt, force, log, progress_factory,
                    data_info, device, dist_info, in_restarts)
    finally:
        teardown(dist_info)


def _run(config, x, out, x_test, sidecar, ckpt, force, log, progress_factory, data_info,
         device, dist_info: DistInfo, in_restarts: bool = False):
    main = dist_info.is_main
    if config.tensorboard and main:
        _tensorboard(None)  # fail before anything is written if the package is missing
    if x_test is None:
        x_train, x_test, _, test_idx = train_test_split(x, config.test_fraction, config.split_seed)
    else:
        if x_test.shape[1] != x.shape[1]:
            raise DataError(f"test data have {x_test.shape[1]} columns but training data have "
                            f"{x.shape[1]}")
        x_train, test_idx = x, None
    x_val = None
    if config.validation_fraction > 0:
        try:
            x_train, x_val, _, _ = train_test_split(x_train, config.validation_fraction,
                                                    config.split_seed + 1)
        except DataError:
            raise DataError(f"data: {x_train.shape[0]} training rows are too few to hold out a "
                            f"validation fraction of {config.validation_fraction}") from None
    if config.likelihood == "bernoulli":
        for name, arr in (("training", x_train), ("test", x_test), ("validation", x_val)):
            if arr is None:
                continue
            if bool((arr < 0).any() or (arr > 1).any()):
                raise DataError(f"a Bernoulli likelihood needs {name} data in [0, 1]; values range "
                                f"over [{float(arr.min()):.3g}, {float(arr.max()):.3g}]")
        # one fixed binarization of the test set (seeded), so every model sees the same test data
        x_test = fixed_binarization(x_test, seed=config.split_seed)
        if x_val is not None:
            x_val = fixed_binarization(x_val, seed=config.split_seed + 1)
    if out is not None and main:
        if ckpt is None and not in_restarts:
            check_run_dir(out, config, force=force)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, {"config": config.to_dict(), "data": data_info or {}})
    if ckpt is not None:
        if int(ckpt["data_dim"]) != x.shape[1]:
            raise CheckpointError(f"{out}: checkpoint was trained on {ckpt['data_dim']}-dimensional "
                                  f"data, these data have {x.shape[1]} columns")
        model, _ = model_from_checkpoint(ckpt, where=str(out))
    else:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            embedding = prepare_embedding(config, out if main else None, log=log if main else _mute)
            model = build_model(config, x.shape[1], embedding=embedding)
        transform = data_transform(x_train) if (config.standardize and
                                                config.likelihood == "gaussian") else None
        if transform is not None:
            model.set_data_transform(*transform)

        def build(r):
            """Restart ``r``'s fresh model (restart 0: the one above)."""
            if r == 0:
                return model
            with torch.random.fork_rng():
                torch.manual_seed(stream_seed(config, r))
                m = build_model(config, x.shape[1], embedding=copy.deepcopy(embedding))
            if transform is not None:
                m.set_data_transform(*transform)
            return m

        if config.restarts > 1:
            model, ckpt = _restart_phase(config, build, x_train, x_val, out, device, dist_info,
                                         log if main else _mute,
                                         progress_factory if main else None)
    restart_info = ckpt.get("restarts") if ckpt is not None else None
    model.to(device)
    bar = progress_factory(config.steps, ckpt["step"] if ckpt else 0) if (progress_factory and main) else None

    def on_log(step, row):
        if bar is not None:
            bar(step, row)

    result = train(model, x_train, config, out, device=device, dist_info=dist_info, resume=ckpt,
                   progress=on_log, x_val=x_val,
                   extra={"restarts": restart_info} if restart_info else None)
    if bar is not None:
        bar(None, None)
    if not main:
        return {}
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
    metrics = {"latent": model.spec, "embedding": config.embedding,
               "group_action": config.group_action,
               # see experiments/reproduce.py: a group action on a learned f voids the bound
               "iwae_is_bound": not (config.group_action and config.embedding != "exact"),
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
        if out is not None:        # the choice is made: the restarts' checkpoints are spent
            for r in restart_info:
                (out / RESTARTS / f"restart{r['restart']}" / CHECKPOINT).unlink(missing_ok=True)
    if result["history"]:
        last = result["history"][-1]
        metrics.update({"final_train_elbo": last["elbo"], "final_train_kl": last["kl"],
                        "skipped_steps": last.get("skipped_steps", 0)})
    metrics.update(ceiling_metrics(sidecar, x_test, ev["per_example_iwae"]))
    metrics["_per_example_iwae"] = ev["per_example_iwae"]
    metrics["_per_example_elbo"] = ev["per_example_elbo"]
    metrics["_model"] = model
    metrics["_history"] = result["history"]
    if out is not None:
        write_json(out / METRICS, {k: v for k, v in metrics.items() if not k.startswith("_")})
        np.save(out / "test_per_example.npy",
                np.stack([ev["per_example_elbo"].numpy(), ev["per_example_iwae"].numpy()]))
        if test_idx is not None:
            np.save(out / "test_index.npy", test_idx.numpy())
    return metrics


def _restart_phase(config: FitConfig, build: Callable[[int], torch.nn.Module], x_train, x_val,
                   out: Path | None, device, dist_info: DistInfo, log,
                   progress_factory: Callable | None = None) -> tuple:
    """Train ``config.restarts`` initializations for ``config.restart_steps()`` steps each (into
    ``out/restarts/restart<r>``; finished ones are reused, an interrupted one resumed), score each
    on the validation rows and return ``(model, checkpoint)`` of the best, to be continued.

    Choosing among restarts early by held-out likelihood is the cheap form of running whole
    restarts and keeping the best: a run that will end in a poor basin (a folded encoder map,
    a collapsed coordinate) is usually behind by then."""
    k_steps = config.restart_steps()
    chosen, infos = None, []
    for r in range(config.restarts):
        rdir = out / RESTARTS / f"restart{r}" if out is not None else None
        saved = None
        if rdir is not None and (rdir / CHECKPOINT).is_file():
            saved = load_checkpoint(rdir)
            if saved.get("config") != config.to_dict() or int(saved.get("restart", -1)) != r:
                raise CheckpointError(f"{rdir}: holds a restart of another run; use --force "
                                      f"to start over")
        if saved is not None:
            model, _ = model_from_checkpoint(saved, where=str(rdir))
        else:
            model = build(r)
        model.to(device)
        if saved is not None and int(saved["step"]) >= k_steps:
            ckpt, seconds = saved, float(saved["elapsed"])
            history = _read_history(rdir / METRICS_LOG, upto=k_steps)
        else:
            if rdir is not None and dist_info.is_main:
                rdir.mkdir(parents=True, exist_ok=True)
            bar = (progress_factory(k_steps, int(saved["step"]) if saved is not None else 0)
                   if progress_factory is not None else None)
            try:
                res = train(model, x_train, config, rdir, device=device, dist_info=dist_info,
                            resume=saved, x_val=x_val, restart=r, stop_at=k_steps,
                            progress=bar)
            except Interrupted:
                raise Interrupted(f"interrupted in restart {r + 1}/{config.restarts}; continue "
                                  f"with: manifold-vae fit --resume {out}") from None
            finally:
                if bar is not None:
                    bar(None, None)
            ckpt, history, seconds = res["checkpoint"], res["history"], res["train_seconds"]
        # the trainer scored the restart at its last step; score again only if that row is lost
        last = history[-1] if history else {}
        score = (last.get("validation_iwae") if last.get("step") == k_steps
                 else validation_score(model, x_val.to(device), config))
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
    if out is not None and dist_info.is_main:   # the run's log starts with the chosen restart's
        _rewrite_history(out / METRICS_LOG, history)
    log(f"continuing restart {int(ckpt['restart']) + 1} (best validation IWAE)")
    return model, ckpt


def _mute(*a, **k):
    pass
