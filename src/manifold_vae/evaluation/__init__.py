"""Test ELBO, the IWAE bound, and the true-likelihood ceiling of benchmark data."""
from .bounds import evaluate, per_example_bounds, summarize
from .ceiling import true_log_likelihood

__all__ = ["evaluate", "per_example_bounds", "summarize", "true_log_likelihood"]
