"""The data of a ``fit`` or ``evaluate``: a matrix file (with an optional separate test file and
a benchmark's ``.json`` sidecar) or an image dataset (its own test split, and the model defaults
that suit images)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..errors import DataError, UsageError
from .images import is_image_dataset, load_image_dataset
from .io import load_matrix, read_sidecar, rows_sha256

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

    def key(self) -> dict:
        """What a run records about its data: the files and a SHA-256 of their rows, so that a
        resume or an evaluation can find them again and refuse other rows."""
        key = {"data": self.info.get("data"), "data_sha256": rows_sha256(self.x)}
        if self.info.get("test_data") is not None or self.images:
            key.update(test_data=self.info.get("test_data"), test_data_sha256=rows_sha256(self.x_test))
        return key


def check_same_rows(recorded: dict, data: FitData, what: str) -> None:
    """Refuse ``data`` when ``recorded`` (a run's data key) names other rows."""
    key = data.key()
    for name in ("data_sha256", "test_data_sha256"):
        if recorded.get(name) and key.get(name) and recorded[name] != key[name]:
            which = "test data" if name.startswith("test") else "data"
            raise DataError(f"{data.info.get('test_data' if name.startswith('test') else 'data')} "
                            f"holds other rows than the {which} {what} was trained on "
                            f"({recorded.get('test_data' if name.startswith('test') else 'data')}); "
                            f"use that file, or start a new run")


def recorded_fit_data(recorded: dict, data_path=None, test_path=None, *, what: str) -> FitData:
    """The data a run recorded (or ``data_path``/``test_path`` given again), checked to hold the
    same rows: what ``fit --resume`` and ``evaluate`` read."""
    data_path = data_path if data_path is not None else recorded.get("data")
    if data_path is None:
        raise UsageError(f"{what} does not record its data file (made by an older version); "
                         "pass --data FILE")
    if test_path is None and recorded.get("test_data") and not is_image_dataset(data_path):
        test_path = recorded["test_data"]
    data = load_fit_data(data_path, test_path)
    check_same_rows(recorded, data, what)
    return data


def load_fit_data(path: str | os.PathLike, test_path: str | os.PathLike | None = None) -> FitData:
    """The data of ``fit --data PATH [--test-data TEST]``; named DataErrors for bad files."""
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
