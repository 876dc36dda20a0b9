"""The run config, the training loop and its hooks, run directories, multi-process training."""
from .config import FitConfig, config_from
from .fit import run_fit
from .rundir import RunDirectory, load_run

__all__ = ["FitConfig", "RunDirectory", "config_from", "load_run", "run_fit"]
