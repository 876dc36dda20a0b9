"""Likelihoods ``p_θ(x | m)`` as modules: Gaussian (learned per-coordinate scale, data transform
included), Bernoulli (dynamic binarization) and continuous Bernoulli (grey levels in [0, 1]). ``LIKELIHOODS`` maps config names to classes."""
from .base import Likelihood
from .bernoulli import BernoulliLikelihood, fixed_binarization
from .continuous_bernoulli import ContinuousBernoulliLikelihood
from .gaussian import GaussianLikelihood, standardization

LIKELIHOODS: dict[str, type[Likelihood]] = {
    cls.name: cls for cls in (GaussianLikelihood, BernoulliLikelihood, ContinuousBernoulliLikelihood)}

__all__ = ["BernoulliLikelihood", "ContinuousBernoulliLikelihood", "GaussianLikelihood", "LIKELIHOODS", "Likelihood",
           "fixed_binarization", "standardization"]
