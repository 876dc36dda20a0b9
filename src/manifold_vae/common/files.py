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
from typing import Any, Callable

import torch

from ..errors import CheckpointError


def _write_atomically(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a temporary file in ``path``'s folder, fsync, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` written whole or not at all (temporary file, fsync, rename)."""
    _write_atomically(path, lambda fh: torch.save(obj, fh))


def save_arrays(path: str | os.PathLike, array=None, *, compressed: bool = False,
                **arrays) -> None:
    """``np.save(path, array)`` (or ``np.savez(path, **arrays)``, ``np.savez_compressed`` with
    ``compressed``), no pickles, written whole or not at all: a reader, or a run resumed after a
    crash, never sees half an array."""
    import numpy as np

    savez = np.savez_compressed if compressed else np.savez
    _write_atomically(path, (lambda fh: savez(fh, **arrays)) if arrays else
                      (lambda fh: np.save(fh, array, allow_pickle=False)))


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
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    _write_atomically(path, lambda fh: fh.write(text.encode()))


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
