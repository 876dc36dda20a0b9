"""Hidden-space and spherical distributions (``torch.distributions`` subclasses) and their KLs."""
from .box import BoxBeta, beta_from_mean_concentration, beta_kl_to_uniform, squeeze_into_box
from .concat import ConcatIndependent
from .hidden import HiddenSpace
from .sphere_uniform import HypersphericalUniform, log_sphere_volume
from .spherical import SPHERE_FAMILIES, PowerSpherical, sphere_posterior
from .vmf import VonMisesFisher

__all__ = ["BoxBeta", "ConcatIndependent", "HiddenSpace", "HypersphericalUniform", "PowerSpherical",
           "SPHERE_FAMILIES", "VonMisesFisher", "beta_from_mean_concentration",
           "beta_kl_to_uniform", "log_sphere_volume", "sphere_posterior", "squeeze_into_box"]
