"""The job engine every suite and ``discover`` run on: training many models, reusing finished
ones, and the statistics over seeds that every table reports.

A :class:`Job` is one model to train into its run directory on some data (a benchmark's generator
and sizes, or an ``.npz`` file with ``x_train`` and ``x_test``). :func:`run_jobs` trains the jobs
in worker processes after the learned embeddings they need; a run directory that holds a finished
run of the same config on the same data (:func:`data_key`) is reused, a run of it that was cut
short is resumed, anything else is trained afresh (and the reason logged).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..common.files import read_json, write_json
from ..data import ManifoldBenchmark
from ..embeddings import EmbedConfig, save_embedding
from ..embeddings.periodic import learn_map
from ..errors import CheckpointError, ManifoldVAEError
from ..training import FitConfig, RunDirectory, run_fit


@dataclass
class Job:
    """One model to train: a label for the log, its config, its run directory and its data
    (``(benchmark dict, n_train, n_test)`` or the path of an ``.npz`` with ``x_train``/``x_test``)."""

    label: str
    config: FitConfig
    run_dir: Path
    data: tuple | str


def suite_embed_config(latent: str, steps: int | None) -> EmbedConfig:
    """A suite's learned embedding of ``latent``: seed 0, ``steps`` (``None``: the default)."""
    cfg = EmbedConfig(latent=latent, seed=0)
    if steps is not None:
        cfg.steps = steps
    return cfg


def embedding_needed(cfg: EmbedConfig, path: Path, force: bool) -> bool:
    """Whether the embedding at ``path`` must be (re)trained: missing, forced, or another config."""
    if force or not ((path / "embedding.pt").is_file() and (path / "report.json").is_file()):
        return True
    saved = (read_json(path / "report.json") or {}).get("config")
    return saved is not None and saved != json.loads(json.dumps(dataclasses.asdict(cfg)))


def _embed_job(job):
    """Train one learned embedding into ``path`` (report.json: quality report, history, the
    requested config); runs in a worker process. As ``fit`` does, a map with flat hidden
    coordinates that its quality report does not trust is followed by the other choices of
    periodic or disk coordinates, the best kept (``periodic_search`` in report.json)."""
    cfg, path = job
    torch.set_num_threads(1)
    t = time.perf_counter()
    _, (emb, history, report), tried = learn_map(cfg)
    chosen = dataclasses.replace(cfg, periodic=list(emb.periodic), disk=list(emb.disk))
    saved = {"periodic_search": tried} if tried is not None else {}
    report["train_seconds"] = time.perf_counter() - t
    save_embedding(emb, Path(path), report=report, config=chosen)
    write_json(Path(path) / "report.json", {"report": report, "history": history,
                                            "config": dataclasses.asdict(cfg), **saved})
    return path


def data_key(data) -> dict:
    """What identifies a job's rows, saved with the run (``config.json``, key ``data``) so that a
    finished run is reused only for the same data: a benchmark's generator and sizes (the rows are
    regenerated from them deterministically), or the SHA-256 of an ``.npz`` file's ``x_train``
    and ``x_test`` arrays (dtype, shape and bytes; not of the file, whose zip headers carry a time
    stamp)."""
    if isinstance(data, str):
        digest = hashlib.sha256()
        with np.load(data) as arrays:
            for name in ("x_train", "x_test"):
                a = np.ascontiguousarray(arrays[name])
                digest.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
                digest.update(a.tobytes())
        return {"rows_sha256": digest.hexdigest()}
    bench, n_train, n_test = data
    # through JSON, as it is saved: tuples become lists (numpy scalars as Python numbers)
    return json.loads(json.dumps({"benchmark": bench, "n_train": int(n_train), "n_test": int(n_test)},
                                 default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def same_run(saved: FitConfig | None, config: FitConfig) -> bool:
    """Whether a saved run's config is ``config`` up to the threads it ran on (the number of
    worker processes sets those; a suite run again with other ``workers`` reuses its runs)."""
    return saved is not None and saved.replace(threads=config.threads) == config


def run_jobs(jobs: Sequence[Job], workers: int, out: Path, *, force: bool, progress: bool,
             log: Callable[[str], None], embeddings=()) -> None:
    """Train ``jobs`` after the learned ``embeddings`` = ``[(EmbedConfig, path)]`` their configs
    name (``embedding=path``).

    A run directory holding finished metrics of the same config trained on the same data is
    reused, and so is a trained embedding of the same config (unless ``force``). Everything runs
    in ``workers`` spawned processes (0: one per core, at most 4) of one thread each — small MLPs
    use cores better as independent processes than as threads; embeddings start first, runs that
    need one are queued when it is done, the others fill the remaining workers meanwhile.
    """
    workers = workers if workers > 0 else max(1, min(4, os.cpu_count() or 1))
    emb_todo = [(cfg, str(path)) for cfg, path in embeddings if embedding_needed(cfg, Path(path), force)]
    pending = {path for _, path in emb_todo}
    todo, keys = [], {}
    for job in jobs:
        cfg = job.config.replace(threads=max(1, (os.cpu_count() or 1) // workers))
        data = job.data
        if not isinstance(data, str):
            key = data_key(data)
        else:                               # hashing a file's rows: once per file
            key = keys[data] = keys.get(data) or data_key(data)
        run = RunDirectory(job.run_dir)
        if not force and (run.is_finished or run.is_started) and same_run(run.saved_config(), cfg):
            saved = run.saved_data_key()
            why = "other data" if saved else "data it did not record (an older version)"
            if not run.is_finished:         # cut short: train_job resumes it if the data match
                if saved != key:
                    log(f"{job.label}: the cut-short run in {run.path} was made on {why}; "
                        f"training it afresh")
            elif cfg.latent.embedding not in pending:
                if saved == key:
                    log(f"{job.label}: reusing finished run in {run.path}")
                    continue
                log(f"{job.label}: retraining the run in {run.path}: it was trained on {why}")
        elif not force and run.is_finished:
            log(f"{job.label}: retraining the run in {run.path}: its config differs")
        todo.append((cfg.to_dict(), str(run.path), data, key))
    if not todo and not emb_todo:
        return
    for cfg, path in emb_todo:
        log(f"training the learned embedding of {cfg.latent} (WAE-MMD, {cfg.steps} steps) in {path}")
    log(f"training {len(todo)} models in {workers} process(es)")
    bar = _job_bar(len(todo) + len(emb_todo), progress)
    def embedding_of(job):
        return job[0]["model"]["latent"]["embedding"]
    waiting = {path: [j for j in todo if embedding_of(j) == path] for path in pending}
    ready = [j for j in todo if embedding_of(j) not in pending]
    if workers == 1:
        for job in emb_todo:
            _embed_job(job)
            bar()
        for job in todo:
            train_job(job)
            bar()
        bar(close=True)
        return
    # a pool that raises when a worker dies (multiprocessing.Pool would wait forever)
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_remember_parent,
                               initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_embed_job, j): j[1] for j in emb_todo}
        futures.update({pool.submit(train_job, j): None for j in ready})
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                path = futures.pop(fut)
                fut.result()
                bar()
                for j in waiting.pop(path, []) if path is not None else []:
                    futures[pool.submit(train_job, j)] = None
    except BrokenProcessPool:
        _stop(pool)
        raise ManifoldVAEError(
            f"a training worker process died; finished runs are kept under {out} "
            f"and are reused when the same command is run again") from None
    except BaseException:       # Ctrl-C, a failed job: queued jobs must not start
        _stop(pool)
        raise
    pool.shutdown()
    bar(close=True)


_PARENT_PID: int | None = None


def _remember_parent(pid: int) -> None:
    global _PARENT_PID
    _PARENT_PID = pid


def _orphaned() -> bool:
    """True in a worker whose suite process is gone (killed): it must not start queued jobs."""
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued jobs and end the workers: SIGTERM (a running job checkpoints and stops at
    its next step), then SIGKILL for any worker still alive after 10 s."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()            # the trainer checkpoints on SIGTERM and stops at its next step
    deadline = time.monotonic() + 10
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():         # still going (e.g. it had already taken a queued job)
            proc.kill()


def train_job(job):
    """Train one model into its run directory; runs in a worker process.

    ``job = (config dict, run dir, data[, data key])``. The data: ``(benchmark dict, n_train,
    n_test)`` (regenerated here, deterministically), or the path of an ``.npz`` file holding
    ``x_train`` and ``x_test``; the key (:func:`data_key`) is saved with the run. A run of the
    same config and data that was cut short (its checkpoint written, no ``metrics.json``) is
    resumed, not restarted."""
    cfg_dict, run_dir, data, *given = job
    key = given[0] if given else data_key(data)
    if _orphaned():
        os._exit(1)
    if isinstance(data, str):
        with np.load(data) as arrays:
            x_train = torch.from_numpy(arrays["x_train"])
            x_test = torch.from_numpy(arrays["x_test"])
    else:
        bench_dict, n_train, n_test = data
        x, _ = ManifoldBenchmark(**bench_dict).sample(n_train + n_test)
        x_train, x_test = x[:n_train], x[n_train:]
    config, run = FitConfig.from_dict(cfg_dict), RunDirectory(run_dir)
    quiet = lambda m: None
    if (run.is_started and not run.is_finished and same_run(run.saved_config(), config)
            and run.saved_data_key() == key):
        # a run of this config cut short (a killed suite): continue it from its checkpoint
        try:
            run_fit(config, x_train, run.path, x_test=x_test, resume=True, log=quiet, data_info=key,
                    accept_untrusted_embedding=True)
            return str(run.path)
        except CheckpointError:
            pass              # unreadable or mismatched checkpoint: train afresh below
    run_fit(config, x_train, run.path, x_test=x_test, force=True, log=quiet, data_info=key,
            accept_untrusted_embedding=True)
    return str(run.path)


def _job_bar(total: int, enabled: bool):
    """``update()`` after each finished model; ``update(close=True)`` at the end."""
    if not enabled:
        return lambda close=False: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="models trained", dynamic_ncols=True)

    def update(close=False):
        bar.close() if close else bar.update(1)
    return update


# ---------------------------------------------------------------------- reading results
def load_finished(run_dir: str | Path, with_model: bool = True) -> dict:
    """A finished run's ``metrics``, per-example test ``iwae``, ``history`` and (optionally) its
    ``model``."""
    run = RunDirectory(run_dir)
    return {"metrics": run.read_metrics(), "iwae": run.per_example()[1],
            "history": run.history(), "model": run.load()[0] if with_model else None}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def seed_statistics(runs: list[dict]) -> dict:
    """What every suite table reports of one row's finished runs (one per seed): test ELBO and
    IWAE mean and std over seeds, the IWAE's standard error over test examples (mean over seeds),
    training seconds and seconds per step (means)."""
    def mean(key):
        return float(np.mean([r["metrics"][key] for r in runs]))
    elbo_m, elbo_s = mean_std([r["metrics"]["test_elbo"] for r in runs])
    iwae_m, iwae_s = mean_std([r["metrics"]["test_iwae"] for r in runs])
    return {"seeds": len(runs), "test_elbo_mean": elbo_m, "test_elbo_std": elbo_s,
            "test_iwae_mean": iwae_m, "test_iwae_std": iwae_s,
            "test_iwae_stderr": mean("test_iwae_stderr"),
            "train_seconds_mean": mean("train_seconds"),
            "seconds_per_step_mean": mean("seconds_per_step")}


def gap_statistics(ll: torch.Tensor, runs: list[dict]) -> dict:
    """A row's gap to the true log-likelihood ``ll`` (per test example): mean and std over seeds,
    and the standard error over test examples (averaged over seeds)."""
    gaps = [float((ll - r["iwae"]).mean()) for r in runs]
    se = float(math.sqrt(sum(float((ll - r["iwae"]).var() / len(ll)) for r in runs)) / len(runs))
    return {"gap_to_true_ll_mean": float(np.mean(gaps)), "gap_to_true_ll_std": mean_std(gaps)[1],
            "gap_to_true_ll_stderr": se}


def write_results(out: Path, results: dict, markdown: Callable[[dict], str], t_start: float,
                  log: Callable[[str], None], figures: str) -> dict:
    """A suite's ending: the total time into ``results``, ``results.json`` and ``results.md``
    (``markdown(results)``) written, one log line naming them; returns ``results``."""
    results["total_seconds"] = time.perf_counter() - t_start
    write_json(out / "results.json", results)
    (out / "results.md").write_text(markdown(results))
    log(f"wrote {out}/results.json, results.md and {figures} in {results['total_seconds']:.0f} s")
    return results
