"""manifold-vae: variational auto-encoders with manifold-valued latent variables.

Implements the embedding-reparameterization (ER) procedure of E. Golikov and M. Kretov,
"Embedding-reparameterization procedure for manifold-valued latent variables in generative
models", arXiv:1812.02769: a hidden latent ``z`` (Beta posterior on ``[0,1]^d`` or Gaussian on
``R^d``) is mapped onto the manifold by an embedding ``f`` that pushes the hidden prior to the
uniform distribution on ``M``, optionally moved by a group-action encoder, then decoded; the KL
term is computed in hidden space.

Example::

    >>> import torch, manifold_vae as mv
    >>> bench = mv.ManifoldBenchmark("S1", dim=100, noise=0.05)
    >>> x, _ = bench.sample(512)
    >>> model = mv.VAE(100, "S1", group_action=True)
    >>> model.loss(x)["loss"].shape
    torch.Size([])
"""
from .data import ManifoldBenchmark, load_matrix
from .distributions import BoxBeta, HiddenSpace, HypersphericalUniform, VonMisesFisher
from .embeddings import (EmbedConfig, ExactEmbedding, LearnedEmbedding, embedding_quality,
                         fit_learned_embedding, load_embedding, save_embedding)
from .errors import ManifoldVAEError
from .evaluation import evaluate, true_log_likelihood
from .manifolds import Manifold, parse_latent
from .models import VAE
from .training.config import FitConfig
from .training.fit import run_fit
from .training.runs import load_run

__version__ = "0.1.0"

__all__ = ["BoxBeta", "EmbedConfig", "ExactEmbedding", "FitConfig", "HiddenSpace",
           "HypersphericalUniform", "LearnedEmbedding", "Manifold", "ManifoldBenchmark",
           "ManifoldVAEError", "VAE", "VonMisesFisher", "discover", "embedding_quality",
           "evaluate", "fit_learned_embedding", "load_embedding", "load_matrix", "load_run",
           "parse_latent", "run_fit", "save_embedding", "true_log_likelihood"]


def __getattr__(name: str):
    if name == "discover":   # lazily: it pulls in the experiment code and matplotlib
        from .experiments.discover import discover
        return discover
    raise AttributeError(f"module 'manifold_vae' has no attribute {name!r}")
