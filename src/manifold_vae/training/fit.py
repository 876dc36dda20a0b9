"""``fit``: one training run from data to ``metrics.json`` (what the CLI's ``fit`` calls)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import ManifoldBenchmark, train_test_split
from ..errors import CheckpointError, DataError, UsageError
from ..evaluation import evaluate, true_log_likelihood
from .config import FitConfig, config_from
from .distributed import DistInfo, setup_distributed, teardown
from .runs import (CHECKPOINT, CONFIG, METRICS, METRICS_LOG, build_model, load_checkpoint,
                   model_from_checkpoint, prepare_embedding, write_json)
from .trainer import _tensorboard, resolve_device, train


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
    if any(m.exists() for m in markers):
        if not force:
            try:
                old = json.loads((out / CONFIG).read_text()).get("config", {})
            except (OSError, json.JSONDecodeError):
                old = {}
            what = "a different run" if old != config.to_dict() else "a run"
            raise UsageError(f"output directory {out} already holds {what}; use --resume {out} to "
                             f"continue it, --force to overwrite it, or another --out")
        for m in markers:
            if m.exists():
                m.unlink()
        if (out / "embedding").is_dir():
            shutil.rmtree(out / "embedding")


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
    ckpt = None
    if resume:
        if out is None:
            raise UsageError("--resume needs the run directory")
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
                    data_info, device, dist_info)
    finally:
        teardown(dist_info)


def _run(config, x, out, x_test, sidecar, ckpt, force, log, progress_factory, data_info,
         device, dist_info: DistInfo):
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
        if ckpt is None:
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
        if config.standardize and config.likelihood == "gaussian":
            model.set_data_transform(*data_transform(x_train))
    model.to(device)
    bar = progress_factory(config.steps, ckpt["step"] if ckpt else 0) if (progress_factory and main) else None

    def on_log(step, row):
        if bar is not None:
            bar(step, row)

    result = train(model, x_train, config, out, device=device, dist_info=dist_info, resume=ckpt,
                   progress=on_log, x_val=x_val)
    if bar is not None:
        bar(None, None)
    if not main:
        return {}
    model.eval()
    model.cpu()
    t = time.perf_counter()
    ev = evaluate(model, x_test, k=config.iwae_k)
    eval_seconds = time.perf_counter() - t
    metrics = {"latent": model.spec, "embedding": config.embedding,
               "group_action": config.group_action,
               # see experiments/reproduce.py: a group action on a learned f voids the bound
               "iwae_is_bound": not (config.group_action and config.embedding != "exact"),
               "test_elbo": ev["elbo"], "test_elbo_stderr": ev["elbo_stderr"],
               "test_iwae": ev["iwae"], "test_iwae_stderr": ev["iwae_stderr"], "iwae_k": ev["k"],
               "n_train": int(x_train.shape[0]), "n_test": int(x_test.shape[0]),
               "train_seconds": result["train_seconds"],
               "seconds_per_step": result["train_seconds"] / config.steps,
               "eval_seconds": eval_seconds, "steps": config.steps,
               "world_size": dist_info.world_size, "device": str(device)}
    if result.get("selected"):
        metrics.update({"n_validation": int(x_val.shape[0]),
                        "selected_step": result["selected"]["step"],
                        "validation_iwae": result["selected"]["validation_iwae"]})
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


def _mute(*a, **k):
    pass
