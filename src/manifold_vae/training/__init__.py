"""Configuration, the training loop, checkpoints, run directories, multi-process training."""
from .config import FitConfig, config_from
from .fit import run_fit
from .runs import load_run

__all__ = ["FitConfig", "config_from", "run_fit", "load_run"]
