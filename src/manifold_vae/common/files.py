"""Files written atomically and read safely.

Checkpoints hold tensors and plain Python data (dicts, lists, str, int, float, bool, None) and are
read only through ``torch.load(weights_only=True)``: nothing that needs unpickling of arbitrary
classes, so a file from a stranger cannot run code. JSON files are written to a temporary name and
renamed into place, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_arrays(path: str | os.PathLike, array=None, **arrays) -> None:
    """``np.save(path, array)`` (or ``np.savez(path, **arrays)``) to a temporary file in the same
    folder, then rename over ``path``: a reader, or a run resumed after a crash, never sees half
    an array."""
    import numpy as np

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if arrays:
                np.savez(fh, **arrays)
            else:
                np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def safe_torch_load(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """Load ``path`` with ``weights_only=True``; every failure becomes a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused to load {what}: it holds objects other than "
                              f"tensors and plain data ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({first[:160]})") from None


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file + rename); tensors and numpy
    scalars become lists and numbers."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON value in ``path``, or ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return default


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
