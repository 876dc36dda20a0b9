"""Benchmark generators, and loading/validation of user data files."""
from .io import load_array, load_matrix, read_sidecar, sidecar_path, train_test_split, validate_matrix
from .synthetic import ManifoldBenchmark

__all__ = ["ManifoldBenchmark", "load_array", "load_matrix", "read_sidecar", "sidecar_path",
           "train_test_split", "validate_matrix"]
