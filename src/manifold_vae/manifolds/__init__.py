"""Latent manifolds (one file per family) and the latent-spec grammar (:mod:`.spec`)."""
from .base import Chart, ExactMap, GroupAction, Manifold, Quadrature, safe_normalize
from .circle import Circle, circle_angle, rotation_2d
from .euclidean import Euclidean
from .product import Product
from .so3 import SO3
from .spec import example_specs, parse_latent, register_spec, valid_spec_forms
from .sphere import Sphere, sphere_volume
from .torus import Torus
from .projective import ProjectivePlane
from .sampled import SampledManifold, check_samples, register_sampler
from .twisted import KleinBottle, MobiusBand

__all__ = ["Chart", "Circle", "Euclidean", "ExactMap", "GroupAction", "KleinBottle", "Manifold",
           "MobiusBand", "ProjectivePlane", "Product", "SampledManifold", "check_samples",
           "register_sampler",
           "Quadrature", "SO3", "Sphere", "Torus", "circle_angle", "example_specs",
           "parse_latent", "register_spec", "rotation_2d", "safe_normalize", "sphere_volume",
           "valid_spec_forms"]
