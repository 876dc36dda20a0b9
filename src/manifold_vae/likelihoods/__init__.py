"""Likelihoods ``p_θ(x | m)`` as modules: Gaussian (learned per-coordinate scale, data transform
included) and Bernoulli (dynamic binarization). ``LIKELIHOODS`` maps config names to classes."""
from .base import Likelihood
from .bernoulli import BernoulliLikelihood, fixed_binarization
from .gaussian import GaussianLikelihood, standardization

LIKELIHOODS: dict[str, type[Likelihood]] = {cls.name: cls for cls in (GaussianLikelihood,
                                                                      BernoulliLikelihood)}

__all__ = ["BernoulliLikelihood", "GaussianLikelihood", "LIKELIHOODS", "Likelihood",
           "fixed_binarization", "standardization"]
