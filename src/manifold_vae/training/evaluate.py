"""``evaluate``: score a saved run again, on its own test rows unless told otherwise.

The run records its data files and a SHA-256 of their rows (``config.json``, key ``data``), so
``evaluate DIR`` finds them again; a file given with ``--data`` is checked to hold the same rows
before the run's stored test indices are applied to it (``--split test``); ``--split all``
scores every row of whatever file is given. The result names what was scored.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..data import load_fit_data, read_sidecar, recorded_fit_data, rows_sha256
from ..errors import DataError, UsageError
from ..evaluation import evaluate
from .fit import ceiling_metrics
from .rundir import RunDirectory

SPLITS = ("test", "all")


def evaluate_run(run_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
                 split: str = "test", k: int = 1000, write: bool = True) -> dict:
    """ELBO and IWAE (K = ``k``) of a saved run on ``split`` of ``data`` (default: the run's own
    data file), with the true log-likelihood when the data carry a benchmark sidecar; written to
    ``DIR/evaluation.json`` when ``write``."""
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"--k must be a positive integer, got {k}")
    run = RunDirectory(run_dir)
    model, config, _ = run.load()
    recorded = run.saved_data_key() or {}
    if data is None:
        fit_data = recorded_fit_data(recorded, what=str(run.path))
    else:
        fit_data = load_fit_data(data)
    path = fit_data.info["data"]
    if fit_data.x.shape[1] != model.data_dim:
        raise DataError(f"{path}: data have {fit_data.x.shape[1]} columns but the model in "
                        f"{run.path} was trained on {model.data_dim}")
    same = recorded.get("data_sha256") == rows_sha256(fit_data.x)
    if split == "all":
        x = fit_data.x if fit_data.x_test is None else torch.cat([fit_data.x, fit_data.x_test])
        scored = f"all {len(x)} rows of {path}"
    elif fit_data.images:                       # an image dataset's own split
        x, scored = fit_data.x_test, f"the {len(fit_data.x_test)} test images of {path}"
    elif fit_data.x_test is not None:           # the run's own --test-data file, as recorded
        x = fit_data.x_test
        scored = f"the run's test file {fit_data.info['test_data']} ({len(x)} rows)"
    else:
        idx = run.test_index()
        if idx is None:
            tested_on = (f"--test-data {recorded['test_data']}" if recorded.get("test_data")
                         else f"the test split of {recorded.get('data', 'its data file')}")
            raise DataError(f"{run.path} has no test_index.npy (it was trained with {tested_on}); "
                            f"to score {path}, use --split all")
        if recorded.get("data_sha256") and not same:
            raise DataError(f"{path} holds other rows than the data {run.path} was trained on "
                            f"({recorded.get('data')}): its test rows are not in it. Use --split "
                            f"all to score every row of {path}")
        if int(idx.max()) >= fit_data.x.shape[0]:
            raise DataError(f"{path} has {fit_data.x.shape[0]} rows; the run's test split needs "
                            f"more — is this the file the run was trained on?")
        x, scored = fit_data.x[idx], f"the run's {len(idx)} test rows of {path}"
    model.likelihood.check_data(x, f"{path}: data")
    x = model.likelihood.fix_observations(x, seed=config.split_seed)   # as at training time
    ev = evaluate(model, x, k=k)
    result = {"run": str(run.path), "data": str(path), "split": split, "scored": scored,
              "n": ev["n"], "elbo": ev["elbo"], "elbo_stderr": ev["elbo_stderr"],
              "iwae": ev["iwae"], "iwae_stderr": ev["iwae_stderr"], "iwae_k": k,
              "iwae_is_bound": model.latent.spec.is_bound}
    result.update(ceiling_metrics(read_sidecar(path) if Path(path).suffix != ".npz" else None,
                                  x, ev["per_example_iwae"]))
    if write:
        run.write_evaluation(result)
    return result
