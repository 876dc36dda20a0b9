"""Hidden-space distributions (``torch.distributions`` subclasses) and their KL divergences."""
from .box import BoxBeta, beta_from_mean_concentration, beta_kl_to_uniform, squeeze_into_box
from .concat import ConcatIndependent
from .hidden import HiddenSpace

__all__ = ["BoxBeta", "ConcatIndependent", "HiddenSpace", "beta_from_mean_concentration",
           "beta_kl_to_uniform", "squeeze_into_box"]
