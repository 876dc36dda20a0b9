"""Typed configuration dataclasses that nest, built from flat or nested keys.

A config is a dataclass whose fields are plain values or other config dataclasses (a run config
holds a model config, which holds a latent spec). Every leaf has a name that is unique across
the whole tree, so a user may set it by its short name (``steps``, ``hidden``, ``group_action``),
by its dotted path (``model.latent.group_action``), or through a nested dict (a saved
``config.json``); a flat dict from an older version of the file reads the same way. Values are
converted to the field's type (``"3"`` -> 3 for an int, ``"true"`` for a bool, ``"64,64"`` for a
list), unknown keys and values of the wrong type are refused with a :class:`UsageError` that
names them, and the built config is validated (``validate()``) before anyone uses it.

A nested config may be given as text: a dataclass that defines ``_from_text(text) -> dict`` takes
a string for the whole of it (``latent = "vmf:S2"`` sets the latent spec's manifold and family).
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import UsageError


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def leaf_paths(cls: type) -> dict[str, tuple[str, ...]]:
    """Every field of ``cls`` and of its nested configs, by short name: ``{name: path}``."""
    out: dict[str, tuple[str, ...]] = {}

    def walk(tp: type, prefix: tuple[str, ...]) -> None:
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            path = prefix + (f.name,)
            if f.name in out:
                raise TypeError(f"config field name {f.name!r} is not unique in {cls.__name__}")
            out[f.name] = path
            hint = _hints(tp)[f.name]
            if _is_config(hint):
                walk(hint, path)
    walk(cls, ())
    return out


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """``value`` (from TOML, JSON or a ``--set`` string) converted to the field's type."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config: {name} must be a list, got {value!r}")
        return [_coerce(name, inner, v) for v in value]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UsageError(f"config: {name} must be of type {getattr(tp, '__name__', tp)}, got {value!r}")


class _Collector:
    """Values for a config tree, gathered key by key, then built bottom-up."""

    def __init__(self, cls: type):
        self.cls = cls
        self.paths = leaf_paths(cls)
        self.tree: dict[str, Any] = {}
        self.given: set[str] = set()       # the leaves a value was given for (short names)

    def _node(self, path: tuple[str, ...]) -> dict:
        node = self.tree
        for part in path:
            node = node.setdefault(part, {})
        return node

    def _type_at(self, path: tuple[str, ...]) -> Any:
        tp: Any = self.cls
        for part in path:
            tp = _hints(tp)[part]
        return tp

    def put(self, key: str, value: Any, where: str) -> None:
        if "." in key:
            path = tuple(key.split("."))
            try:
                self._type_at(path)
            except (KeyError, TypeError):
                path = None
        else:
            path = self.paths.get(key)
        if path is None:
            raise UsageError(f"unknown config key {key!r} ({where}); valid keys: "
                             f"{', '.join(sorted(self.paths))}")
        self.put_path(path, value, where)

    def put_path(self, path: tuple[str, ...], value: Any, where: str) -> None:
        tp = self._type_at(path)
        if _is_config(tp):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            if isinstance(value, str) and hasattr(tp, "_from_text"):
                try:
                    parts = tp._from_text(value)
                except ValueError as err:
                    raise UsageError(str(err)) from None
                node = self._node(path)
                for k in getattr(tp, "_text_fields", ()):
                    node.pop(k, None)
                node.update(parts)
                self.given.update(parts)
                return
            if not isinstance(value, dict):
                raise UsageError(f"config: {'.'.join(path)} must be a table of keys, got {value!r}")
            for k, v in value.items():
                sub = path + (k,)
                try:
                    self._type_at(sub)
                except (KeyError, TypeError):
                    # a flat dict of an older config file: its keys are short names
                    self.put(k, v, where)
                    continue
                self.put_path(sub, v, where)
            return
        self._node(path[:-1])[path[-1]] = _coerce(path[-1], tp, value)
        self.given.add(path[-1])

    def build(self, tp: type | None = None, node: dict | None = None):
        tp = self.cls if tp is None else tp
        node = self.tree if node is None else node
        kwargs = {}
        hints = _hints(tp)
        for f in dataclasses.fields(tp):
            if not f.init or f.name not in node:
                continue
            value = node[f.name]
            if _is_config(hints[f.name]):
                value = self.build(hints[f.name], value)
            kwargs[f.name] = value
        try:
            obj = _construct(tp, kwargs)
        except ValueError as err:
            raise UsageError(str(err)) from None
        validate = getattr(obj, "validate", None)
        return validate() if validate is not None else obj


def _construct(tp: type, kwargs: dict):
    if issubclass(tp, Config):
        obj = object.__new__(tp)
        obj._assign(kwargs)
        return obj
    return tp(**kwargs)


def config_from(cls, *, base: dict | None = None, file: str | Path | None = None,
                overrides: Iterable[str] = (), **explicit):
    """Build ``cls`` from defaults <- ``base`` <- TOML ``file`` <- ``overrides`` <- ``explicit``.

    ``base``: a dict, nested or flat (a saved config); ``overrides``: ``"key=value"`` strings;
    ``explicit`` values that are ``None`` are ignored. Keys are short names or dotted paths.
    """
    col = _Collector(cls)
    for k, v in (base or {}).items():
        col.put(k, v, "saved config")
    if file is not None:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UsageError(f"config file {path} is not valid TOML: {err}") from None
        for k, v in data.items():
            col.put(k, v, str(path))
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        col.put(k.strip(), v.strip(), "--set")
    for k, v in explicit.items():
        if v is not None:
            col.put(k, v, "command line")
    built = col.build()
    if isinstance(built, Config):
        object.__setattr__(built, "_given", frozenset(col.given))
    return built


class Config:
    """Base of the nested config dataclasses (declare them ``@dataclass(init=False)``).

    ``Config(**keys)`` accepts short names, dotted paths and nested configs or dicts, converts
    and validates them (:func:`config_from`); ``replace(**keys)`` returns a changed copy;
    ``to_dict()`` is the nested plain-data form that is saved with every run.
    """

    def __init__(self, **values):
        built = config_from(type(self), **values)
        self._assign({f.name: getattr(built, f.name) for f in dataclasses.fields(self)})
        object.__setattr__(self, "_given", built.given)

    def _assign(self, kwargs: dict) -> None:
        for f in dataclasses.fields(self):
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_dict(cls, data: dict):
        """The config saved as ``data`` (nested, or flat as older versions wrote it)."""
        return config_from(cls, base=data)

    def replace(self, **values):
        """A copy with ``values`` changed (short names or dotted paths), validated; the keys
        given are this config's and ``values``'."""
        new = config_from(type(self), base=self.to_dict(), **values)
        col = _Collector(type(self))
        for k, v in values.items():
            if v is not None:
                col.put(k, v, "replace")
        object.__setattr__(new, "_given", self.given | col.given)
        return new

    @property
    def given(self) -> frozenset:
        """The keys (short names) a value was given for when the config was made; the rest are
        defaults, which a run may choose for the data it sees (``fit``'s automatic defaults)."""
        return getattr(self, "_given", frozenset())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        """Every key a user can set, by short name."""
        return sorted(leaf_paths(cls))
