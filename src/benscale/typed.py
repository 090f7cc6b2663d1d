"""Frozen dataclasses from validated mappings, and back.

Configuration enters benscale as YAML or JSON, is checked once against its JSON schema, and
from then on travels as frozen dataclasses. :func:`from_mapping` builds them (nested
dataclasses, tuples for lists); :func:`to_mapping` gives the JSON-ready dict back, with the
keys in field order, for run.json, study.json and config files.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from benscale.errors import ConfigError

T = TypeVar("T")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``hint`` asks for (dataclass, tuple, Optional of those)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """An instance of the dataclass ``cls`` from ``data`` (already schema-validated).

    Raises:
        ConfigError: a field is missing or ``data`` has keys ``cls`` does not know, naming
            the key (``where.key``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    hints = _hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING):
                raise ConfigError(f"{where}.{field.name}: missing")
            continue
        values[field.name] = _convert(hints[field.name], data[field.name],
                                      f"{where}.{field.name}")
    return cls(**values)


def to_mapping(obj: Any) -> Any:
    """A JSON-ready copy of ``obj``: dataclasses as dicts in field order, tuples as lists.

    A dataclass whose ``OMIT_UNSET`` class attribute is true leaves out fields that are
    None or empty: optional entries of a schema that allows no null (a variant's engine,
    an axis of a grid) then round-trip through their JSON form.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        omit = getattr(obj, "OMIT_UNSET", False)
        values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return {name: to_mapping(value) for name, value in values.items()
                if not (omit and (value is None or value in ((), {})))}
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_mapping(v) for v in obj]
    return obj
