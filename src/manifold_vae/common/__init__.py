"""The ground floor that every other room stands on: file I/O (atomic checkpoint and JSON writes,
safe loading) and the plain MLP. Nothing here imports from the rest of the package."""
from .files import atomic_torch_save, read_json, safe_torch_load, write_json
from .mlp import ACTIVATIONS, MLP, activation_class

__all__ = ["ACTIVATIONS", "MLP", "activation_class", "atomic_torch_save", "read_json",
           "safe_torch_load", "write_json"]
