"""manifold-vae: variational auto-encoders with manifold-valued latent variables.

Implements the embedding-reparameterization (ER) procedure of E. Golikov and M. Kretov,
"Embedding-reparameterization procedure for manifold-valued latent variables in generative
models", arXiv:1812.02769: a hidden latent ``z`` (Beta posterior on ``[0,1]^d`` or Gaussian on
``R^d``) is mapped onto the manifold by an embedding ``f`` that pushes the hidden prior to the
uniform distribution on ``M``, optionally moved by a group-action encoder, then decoded; the KL
term is computed in hidden space.

Example (any encoder and decoder; the latent layer and the likelihood from here)::

    >>> import torch, manifold_vae as mv
    >>> latent = mv.ManifoldLatent("S1", group_action=True)
    >>> encoder = torch.nn.Linear(100, latent.param_dim)
    >>> decoder = torch.nn.Linear(latent.point_dim, 100)
    >>> model = mv.VAE(encoder, latent, decoder, mv.GaussianLikelihood(100))
    >>> model.loss(torch.randn(8, 100))["loss"].shape
    torch.Size([])
"""
from .data import ManifoldBenchmark, load_matrix
from .distributions import BoxBeta, HiddenSpace, HypersphericalUniform, VonMisesFisher
from .embeddings import (EmbedConfig, ExactEmbedding, LearnedEmbedding, embedding_quality,
                         fit_learned_embedding, load_embedding, save_embedding)
from .errors import ManifoldVAEError
from .evaluation import evaluate, true_log_likelihood
from .latents import LatentOutput, LatentSpec, ManifoldLatent
from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from .manifolds import Manifold, check_samples, parse_latent, register_sampler
from .models import ModelConfig, VAE, build_model
from .training import FitConfig, RunDirectory, load_run, run_fit

__version__ = "0.1.0"

__all__ = ["BernoulliLikelihood", "BoxBeta", "EmbedConfig", "ExactEmbedding", "FitConfig",
           "GaussianLikelihood", "HiddenSpace", "HypersphericalUniform", "LatentOutput",
           "LatentSpec", "LearnedEmbedding", "Likelihood", "Manifold", "ManifoldBenchmark",
           "ManifoldLatent", "ManifoldVAEError", "ModelConfig", "RunDirectory", "VAE",
           "VonMisesFisher", "build_model", "check_samples", "discover", "embedding_quality", "evaluate",
           "fit_learned_embedding", "load_embedding", "load_matrix", "load_run", "parse_latent",
           "register_sampler", "run_fit", "save_embedding", "true_log_likelihood"]


def __getattr__(name: str):
    if name == "discover":   # lazily: it pulls in the experiment code and matplotlib
        from .experiments.discover import discover
        return discover
    raise AttributeError(f"module 'manifold_vae' has no attribute {name!r}")
