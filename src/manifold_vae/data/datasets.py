"""The data of a ``fit`` or ``evaluate``: a matrix file (with an optional separate test file and
a benchmark's ``.json`` sidecar) or an image dataset (its own test split, and the model defaults
that suit images)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .images import is_image_dataset, load_image_dataset
from .io import load_matrix, read_sidecar

#: what ``fit`` uses for image datasets unless told otherwise
IMAGE_DEFAULTS = {"network": "conv", "likelihood": "bernoulli", "hidden": [256], "batch_size": 128}


@dataclass
class FitData:
    """Rows to train on (``x``), separate test rows (``x_test``, or ``None``: split ``x``), config
    defaults the data call for, the benchmark sidecar, and what to record about the files."""

    x: torch.Tensor
    x_test: torch.Tensor | None
    defaults: dict = field(default_factory=dict)
    sidecar: dict | None = None
    info: dict = field(default_factory=dict)
    images: bool = False


def load_fit_data(path: str | os.PathLike, test_path: str | os.PathLike | None = None) -> FitData:
    """The data of ``fit --data PATH [--test-data TEST]``; named DataErrors for bad files."""
    from ..errors import UsageError

    info = {"data": str(path), "test_data": None if test_path is None else str(test_path)}
    if is_image_dataset(path):
        if test_path is not None:
            raise UsageError("an image dataset carries its own test split; drop --test-data")
        x_train, x_test, defaults = image_fit_data(path)
        return FitData(x_train, x_test, defaults, None, info, images=True)
    x = load_matrix(path)
    x_test = load_matrix(test_path, what="test data") if test_path is not None else None
    return FitData(x, x_test, {}, read_sidecar(path), info)


def image_fit_data(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(x_train, x_test, defaults)`` of an image dataset file: its own split, conv networks,
    Bernoulli likelihood, its image shape."""
    data = load_image_dataset(path)
    x = torch.from_numpy(data["x"].astype("float32"))
    test = torch.from_numpy(data["test"])
    return x[~test], x[test], {**IMAGE_DEFAULTS, "image_shape": data["image_shape"].tolist()}
