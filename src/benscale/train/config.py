"""The training configuration: packaged defaults + a YAML file + ``--set`` overrides.

Everything is checked before any process group or model exists, so a typo or an
impossible batch split costs a second, not a queue wait: unknown keys and wrong types by
the JSON schema (``data/train.schema.json``, ``additionalProperties: false``), then the
cross-key rules of :func:`check_semantics` and, once the world size is known,
:func:`resolve_batches`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from benscale.errors import ConfigError

DEFAULTS_NAME = "train-defaults.yaml"
SCHEMA_NAME = "train.schema.json"


@cache
def _packaged(name: str) -> str:
    return resources.files("benscale.data").joinpath(name).read_text()


def defaults() -> dict[str, Any]:
    """A fresh copy of the packaged defaults."""
    return yaml.safe_load(_packaged(DEFAULTS_NAME))


def schema() -> dict[str, Any]:
    """The JSON schema of a resolved configuration."""
    return json.loads(_packaged(SCHEMA_NAME))


def merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; unknown keys are kept for the schema.

    ``tags`` is replaced as a whole-free dict merge (it has no fixed keys).
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "tags":
            out[key] = merge(out[key], value, f"{where}.{key}")
        elif key == "tags" and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def parse_set(item: str) -> dict[str, Any]:
    """``a.b=value`` -> ``{"a": {"b": value}}``, the value parsed as YAML (``1e-3``, ``null``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a training config must be a mapping of keys to values")
    return raw


def _fix_floats(config: dict[str, Any]) -> None:
    """Numbers written like ``1e-4`` load as strings in YAML 1.1; read them as floats."""
    for key, value in config.items():
        if isinstance(value, dict) and key != "tags":
            _fix_floats(value)
        elif isinstance(value, str) and _looks_like_float(value):
            config[key] = float(value)


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- ``path`` <- ``--set`` items, validated; raises ConfigError naming the key.

    Args:
        path: a YAML config file, or None for the packaged defaults only.
        overrides: ``KEY=VALUE`` strings, applied in order.
    """
    where = str(path) if path else "defaults"
    config = defaults()
    if path is not None:
        config = merge(config, _read_file(Path(path)), where)
    for item in overrides or []:
        config = merge(config, parse_set(item), "--set")
    _fix_floats(config)
    validate(config, where)
    return config


def validate(config: dict[str, Any], where: str) -> None:
    """Schema check, then the cross-key rules; the message names the key and the fix."""
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(config),
                    key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:5]:
            key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  {key}: {err.message}")
        raise ConfigError(f"{where}: invalid training config:\n" + "\n".join(lines) +
                          "\n  (see src/benscale/data/train-defaults.yaml for every key)")
    check_semantics(config, where)


def check_semantics(config: dict[str, Any], where: str) -> None:
    """Rules a schema cannot say simply."""
    if (config["global_batch"] is None) == (config["batch_per_gpu"] is None):
        raise ConfigError(f"{where}: set exactly one of global_batch (strong scaling) and "
                          f"batch_per_gpu (weak scaling); got global_batch="
                          f"{config['global_batch']}, batch_per_gpu={config['batch_per_gpu']}")
    if config["precision"] == "bf16-deepspeed" and config["channels_last"]:
        raise ConfigError(f"{where}: channels_last with precision bf16-deepspeed fails inside "
                          "DeepSpeed (it views bf16 weights as bytes); set channels_last: "
                          "false, or use precision bf16 (autocast)")


@dataclass(frozen=True)
class Batches:
    """How the global batch splits over ranks and micro-steps."""

    global_batch: int
    per_rank: int
    grad_accumulation: int


def resolve_batches(config: dict[str, Any], world_size: int) -> Batches:
    """Global batch = per-rank micro-batch x world size x gradient accumulation.

    Raises:
        ConfigError: when the world size (times accumulation) does not divide global_batch.
    """
    acc = config["grad_accumulation"]
    if config["batch_per_gpu"] is not None:
        per_rank = config["batch_per_gpu"]
        return Batches(per_rank * world_size * acc, per_rank, acc)
    total = config["global_batch"]
    if total % (world_size * acc):
        raise ConfigError(f"global_batch={total} cannot be split over world size {world_size} "
                          f"x grad_accumulation {acc}; choose a global batch divisible by "
                          f"{world_size * acc}, or set batch_per_gpu (weak scaling)")
    return Batches(total, total // (world_size * acc), acc)
