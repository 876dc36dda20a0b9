"""The latent layer that drops into any model (:class:`ManifoldLatent`), its plain-data spec
(:class:`LatentSpec`), and the posterior families: ER (:mod:`.er`) and the spheres' own
(:mod:`.spherical`). A new family: one module here, imported below."""
from .base import LatentOutput, ManifoldLatent
from .er import ERLatent
from .spec import FAMILIES, LatentSpec, register_family
from .spherical import SphericalLatent

__all__ = ["ERLatent", "FAMILIES", "LatentOutput", "LatentSpec", "ManifoldLatent",
           "SphericalLatent", "register_family"]
