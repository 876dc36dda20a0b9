"""The model: :class:`VAE` (any encoder, a latent layer, any decoder, a likelihood), ready-made
encoder/decoder pairs (:data:`NETWORKS`), and what builds a model from a config."""
from .config import ModelConfig, build_model
from .networks import NETWORKS
from .vae import VAE

__all__ = ["ModelConfig", "NETWORKS", "VAE", "build_model"]
