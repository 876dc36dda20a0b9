"""Benchmark generators, image datasets, and loading/validation of user data files."""
from .datasets import FitData, image_fit_data, load_fit_data
from .io import load_array, load_matrix, read_sidecar, sidecar_path, train_test_split, validate_matrix
from .synthetic import ManifoldBenchmark

__all__ = ["FitData", "ManifoldBenchmark", "image_fit_data", "load_array", "load_fit_data",
           "load_matrix", "read_sidecar", "sidecar_path", "train_test_split", "validate_matrix"]
