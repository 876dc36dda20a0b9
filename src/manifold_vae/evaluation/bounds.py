"""Test ELBO and the IWAE bound, per example, from one batch of K importance samples.

For ``log w_k = log p(x|m_k) + log p(z_k) - log q(z_k|x)``, ``z_k ~ q(z|x)``:

* ELBO estimate: ``(1/K) Σ_k log w_k`` (unbiased for the ELBO);
* IWAE bound: ``log (1/K) Σ_k w_k`` (Burda et al. 2016, arXiv:1509.00519), which tightens
  towards ``log p(x)`` as K grows.

Evaluation is vectorized over K and a chunk of examples sized to bound memory (the model's
``max_eval_rows`` decoder rows at once). Each chunk allocates and frees tensors of many
megabytes; glibc hands such blocks back to the system at every free and takes them again at the
next allocation, and the page faults cost as much time as the arithmetic (measured: 64 s wall,
53 s of it system time, for K = 1000 on 10,000 circle rows; 35 s and 0.7 s once freed memory is
kept). :func:`keep_freed_memory` asks glibc to keep it; the memory stays bounded by the largest
chunk.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import sys

import torch
from torch import Tensor

from ..models.vae import DEFAULT_EVAL_ROWS

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3       # glibc's mallopt parameters


@functools.lru_cache(maxsize=None)
def keep_freed_memory(mmap_threshold: int = 256 << 20) -> bool:
    """Ask glibc (once per process) to serve blocks below ``mmap_threshold`` bytes from its heap
    and keep up to twice that freed, instead of returning large blocks to the system at every
    free. Returns whether it could (glibc on Linux); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
                    and libc.mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold))
    except (OSError, AttributeError):
        return False


@torch.no_grad()
def per_example_bounds(model, x: Tensor, *, k: int = 1000, max_rows: int | None = None,
                       generator_seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """``(elbo, iwae)`` per example (float64 tensors of length ``len(x)``); at most ``max_rows``
    (K × examples) decoder rows at once (default: the model's ``max_eval_rows``)."""
    if max_rows is None:
        max_rows = getattr(model, "max_eval_rows", DEFAULT_EVAL_ROWS)
    if k < 1:
        raise ValueError(f"the number of importance samples must be >= 1, got {k}")
    keep_freed_memory()
    was_training = model.training
    model.eval()
    chunk = max(1, max_rows // k)
    elbos, iwaes = [], []
    ctx = torch.random.fork_rng() if generator_seed is not None else _null()
    with ctx:
        if generator_seed is not None:
            torch.manual_seed(generator_seed)
        for xs in torch.split(x, chunk):
            lw = model.log_weights(xs, k).double()
            elbos.append(lw.mean(0))
            iwaes.append(torch.logsumexp(lw, 0) - math.log(k))
    model.train(was_training)
    return torch.cat(elbos), torch.cat(iwaes)


def summarize(values: Tensor) -> tuple[float, float]:
    """``(mean, standard error of the mean)`` over examples."""
    n = values.numel()
    mean = float(values.mean())
    se = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return mean, se


def evaluate(model, x: Tensor, *, k: int = 1000, generator_seed: int | None = 0) -> dict:
    """Test ELBO and IWAE (nats per example) with their standard errors, and per-example values."""
    elbo, iwae = per_example_bounds(model, x, k=k, generator_seed=generator_seed)
    e, e_se = summarize(elbo)
    i, i_se = summarize(iwae)
    return {"elbo": e, "elbo_stderr": e_se, "iwae": i, "iwae_stderr": i_se, "k": k,
            "n": int(x.shape[0]), "per_example_elbo": elbo, "per_example_iwae": iwae}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
