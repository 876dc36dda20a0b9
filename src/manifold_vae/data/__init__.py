"""Benchmark generators, image datasets, and loading/validation of user data files."""
from .datasets import (FitData, check_same_rows, image_fit_data, load_fit_data,
                       recorded_fit_data)
from .io import (as_matrix, load_array, load_matrix, read_sidecar, rows_sha256, sidecar_path,
                 train_test_split, validate_matrix)
from .synthetic import ManifoldBenchmark

__all__ = ["FitData", "ManifoldBenchmark", "as_matrix", "check_same_rows", "image_fit_data",
           "load_array", "load_fit_data", "load_matrix", "read_sidecar", "recorded_fit_data",
           "rows_sha256", "sidecar_path", "train_test_split", "validate_matrix"]
