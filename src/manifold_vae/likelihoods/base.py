"""The likelihood ``p_θ(x | m)``: what the decoder's outputs mean, as a module.

A likelihood owns everything about the observations: the deterministic transform the encoder
sees and the likelihood scores (``transform``; Gaussian: standardization), what a training step
sees (``observe``; Bernoulli: a fresh binarization), the log-density per example in the data's
own units (``log_prob``, the transform's log-Jacobian included), the mean (``mean``), and which
data it accepts (``check_data``). A new likelihood: one module in this folder and one line in
``likelihoods/__init__.py``.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from torch import Tensor, nn


class Likelihood(nn.Module):
    """Base of the likelihoods; ``data_dim`` is the number of coordinates of an observation."""

    #: the name configs and the command line use
    name: ClassVar[str] = ""

    def __init__(self, data_dim: int):
        super().__init__()
        if int(data_dim) < 1:
            raise ValueError(f"data_dim must be a positive integer, got {data_dim}")
        self.data_dim = int(data_dim)

    @property
    def param_dim(self) -> int:
        """Numbers the decoder emits per example."""
        return self.data_dim

    def transform(self, x: Tensor) -> Tensor:
        """The data as the encoder sees them and the likelihood scores them (deterministic)."""
        return x

    def observe(self, x: Tensor) -> Tensor:
        """What a step sees of a batch: :meth:`transform`, plus any training-time resampling."""
        return self.transform(x)

    @abstractmethod
    def log_prob(self, x_obs: Tensor, params: Tensor) -> Tensor:
        """``log p_θ(x | m)`` per example, in the data's own units, for transformed ``x_obs``
        and decoder outputs ``params`` (which may carry leading sample dims)."""

    @abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """The mean of ``p_θ(x | m)`` in the data's own units."""

    def check_data(self, x: Tensor, name: str = "data") -> None:
        """Raise :class:`~manifold_vae.errors.DataError` if this likelihood cannot score ``x``."""

    def fix_observations(self, x: Tensor, seed: int) -> Tensor:
        """Held-out data as every model scores them (Bernoulli: binarized once, seeded)."""
        return x

    def fit_transform(self, x_train: Tensor) -> None:
        """Set the data transform from the training rows (nothing to set by default)."""
