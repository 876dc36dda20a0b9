"""Test ELBO and the IWAE bound, per example, from one batch of K importance samples.

For ``log w_k = log p(x|m_k) + log p(z_k) - log q(z_k|x)``, ``z_k ~ q(z|x)``:

* ELBO estimate: ``(1/K) Σ_k log w_k`` (unbiased for the ELBO);
* IWAE bound: ``log (1/K) Σ_k w_k`` (Burda et al. 2016, arXiv:1509.00519), which tightens
  towards ``log p(x)`` as K grows.

Evaluation is vectorized over K and a chunk of examples sized to bound memory.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def per_example_bounds(model, x: Tensor, *, k: int = 1000, max_rows: int | None = None,
                       generator_seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """``(elbo, iwae)`` per example (float64 tensors of length ``len(x)``); at most ``max_rows``
    (K × examples) decoder rows at once (default: the model's ``max_eval_rows``)."""
    if max_rows is None:
        max_rows = getattr(model, "max_eval_rows", 131072)
    if k < 1:
        raise ValueError(f"the number of importance samples must be >= 1, got {k}")
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
