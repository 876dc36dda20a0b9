"""Networks and the VAE (Gaussian VAE for ``R<d>`` latents, ER VAE for manifolds)."""
from .networks import MLP
from .vae import VAE

__all__ = ["MLP", "VAE"]
