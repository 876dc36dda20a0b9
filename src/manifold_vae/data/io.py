"""Loading and validating user data files (``.npy``, ``.npz``, ``.csv``/``.txt``).

Every problem becomes a one-line :class:`~manifold_vae.errors.DataError` that names it: a
missing or unreadable file, a pickled ``.npy`` (refused, never unpickled), non-numeric text,
the wrong rank, too few rows, NaN/inf (naming the first bad row).
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

MIN_ROWS = 10


def load_array(path: str | os.PathLike, *, what: str = "data") -> np.ndarray:
    """Read a numeric array from ``.npy``, ``.npz`` (key ``x`` or a single array) or text."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{what} path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} file is empty: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DataError(f"{path}: .npz holds {keys}; name the data array 'x'")
                arr = z[key]
        elif suffix in (".csv", ".txt", ".tsv"):
            arr = _load_text(path, "," if suffix == ".csv" else None)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r} (use .npy, .npz or .csv)")
    except DataError:
        raise
    except ValueError as err:
        msg = str(err)
        if "allow_pickle" in msg or "pickle" in msg.lower():
            raise DataError(f"{path}: refused: the file holds pickled Python objects, "
                            f"not a numeric array") from None
        raise DataError(f"{path}: not a numeric {what} file ({msg.splitlines()[0][:160]})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: unreadable {what} file ({str(err).splitlines()[0][:160]})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{path}: {what} must be numeric, got dtype {arr.dtype}")
    return arr


def _load_text(path: Path, delimiter: str | None) -> np.ndarray:
    """A numeric text table; a first line that is not numeric (a header row of column names) is
    skipped. Anything else that is not a number is refused by name (rows counted from 1)."""
    try:
        return np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError:
        with open(path, errors="replace") as fh:
            first = fh.readline()
        fields = [f.strip() for f in (first.split(delimiter) if delimiter else first.split())]
        if fields and not any(_is_number(f) for f in fields):       # a header row
            return np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2, skiprows=1)
        raise


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def as_matrix(x, *, name: str = "data", min_rows: int = MIN_ROWS) -> torch.Tensor:
    """Rows given in Python — a torch tensor of any float dtype (on any device), a numpy array,
    nested lists — as the float32 CPU matrix the library trains on, checked like a data file."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise DataError(f"{name}: not a numeric array ({err})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{name}: must be numeric, got dtype {arr.dtype}")
    return validate_matrix(arr, name=name, min_rows=min_rows)


def rows_sha256(*arrays) -> str:
    """SHA-256 of the rows of ``arrays`` (dtype, shape and bytes of each, as float32): what
    identifies the data a run was trained on, whatever file or container held them."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float32)
        digest.update(f"{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def validate_matrix(arr: np.ndarray, *, name: str, min_rows: int = MIN_ROWS) -> torch.Tensor:
    """Check ``arr`` is an N×D finite matrix with at least ``min_rows`` rows; float32 tensor.
    Rows and columns in messages count from 1."""
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (examples × features), got shape "
                        f"{tuple(arr.shape)}")
    n, d = arr.shape
    if d < 1:
        raise DataError(f"{name}: has no feature columns")
    if n < min_rows:
        raise DataError(f"{name}: needs at least {min_rows} rows, got {n}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{name}: non-finite value {arr[row, col]} in row {row + 1}, column "
                        f"{col + 1} (counting from 1); {int(bad.any(1).sum())} rows affected")
    return torch.from_numpy(arr.astype(np.float32))


def load_matrix(path: str | os.PathLike, *, what: str = "data", min_rows: int = MIN_ROWS
                ) -> torch.Tensor:
    """:func:`load_array` then :func:`validate_matrix`."""
    return validate_matrix(load_array(path, what=what), name=str(path), min_rows=min_rows)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``data.npy`` -> ``data.json``: the generator's description written beside benchmark data."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The benchmark description beside a data file, or None if there is none or it is unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def train_test_split(x: torch.Tensor, test_fraction: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic split: ``(train, test, train_index, test_index)``."""
    n = x.shape[0]
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 2:
        raise DataError(f"data: {n} rows leave too few for training after a test split of {n_test}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    return x[train_idx], x[test_idx], train_idx, test_idx
