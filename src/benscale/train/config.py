"""The training configuration: packaged defaults + a YAML file + ``--set`` overrides.

Everything is checked before any process group or model exists, so a typo or an
impossible batch split costs a second, not a queue wait: unknown keys and wrong types by
the JSON schema (``data/train.schema.json``, ``additionalProperties: false``), then the
cross-key rules of :func:`check_semantics` and, once the world size is known,
:meth:`TrainConfig.batches`. What :func:`load` returns is a frozen :class:`TrainConfig`;
no function below the entry point sees the raw dict.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from benscale.errors import ConfigError
from benscale.files.batches import BatchSplit
from benscale.typed import from_mapping, to_mapping

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


@dataclass(frozen=True)
class OptimizerConfig:
    """``optimizer``: SGD (momentum), AdamW or LAMB and their coefficients."""

    name: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    betas: tuple[float, float]
    eps: float


@dataclass(frozen=True)
class LrScaling:
    """``lr_scaling``: the peak learning rate against the global batch."""

    rule: str
    reference_batch: int


@dataclass(frozen=True)
class StepDecay:
    """``step_decay``: epochs at which the learning rate is multiplied by ``gamma``."""

    milestones: tuple[int, ...]
    gamma: float


@dataclass(frozen=True)
class CheckpointConfig:
    """``checkpoint``: epoch-end checkpoints and how many are kept."""

    enabled: bool
    keep_last: int


@dataclass(frozen=True)
class TrainConfig:
    """A resolved, validated training configuration (every key of train-defaults.yaml,
    where each is documented)."""

    epochs: int
    global_batch: int | None
    batch_per_gpu: int | None
    grad_accumulation: int
    precision: str
    engine: str
    zero_stage: int
    deepspeed: dict[str, object]
    ddp: dict[str, object]
    comm_timing: bool
    seed: int
    bands: str
    num_classes: int
    optimizer: OptimizerConfig
    lr_scaling: LrScaling
    warmup_epochs: float
    schedule: str
    step_decay: StepDecay
    augment: bool
    workers: int
    channels_last: bool
    threads: int | None
    interop_threads: int
    deterministic: bool
    matmul_precision: str
    cudnn_benchmark: bool
    limit_batches: int | None
    limit_eval_batches: int | None
    eval_batch_per_gpu: int | None
    test_on: str
    checkpoint: CheckpointConfig
    timeout_s: float
    progress: bool
    tags: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The configuration as JSON-ready dict (run.json ``config``; ``--config`` reads
        it back)."""
        return to_mapping(self)

    def batches(self, world_size: int) -> BatchSplit:
        """The global batch split over ``world_size`` ranks (the rule of
        :mod:`benscale.files.batches`).

        Raises:
            ConfigError: the world size x accumulation does not divide global_batch.
        """
        return BatchSplit.of(self.global_batch, self.batch_per_gpu, world_size,
                             self.grad_accumulation)


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
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
    return from_mapping(TrainConfig, config, where)


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


#: DeepSpeed keys benscale derives from its own config (the batch rule, the seed).
DEEPSPEED_OWN_KEYS: tuple[str, ...] = ("train_batch_size", "train_micro_batch_size_per_gpu",
                                       "gradient_accumulation_steps", "seed", "bf16", "fp16",
                                       "optimizer", "scheduler")


def check_semantics(config: dict[str, Any], where: str) -> None:
    """Rules a schema cannot say simply; each message names the key and the fix."""
    if (config["global_batch"] is None) == (config["batch_per_gpu"] is None):
        raise ConfigError(f"{where}: set exactly one of global_batch (strong scaling) and "
                          f"batch_per_gpu (weak scaling); got global_batch="
                          f"{config['global_batch']}, batch_per_gpu={config['batch_per_gpu']}")
    if config["engine"] == "deepspeed" and config["channels_last"]:
        raise ConfigError(f"{where}: channels_last with engine deepspeed fails inside "
                          "DeepSpeed, whose engine views every parameter as bytes to "
                          "broadcast it, which a channels_last weight (not contiguous in "
                          "its last dimension) cannot be; set channels_last: false, or use "
                          "engine: ddp")
    if config["engine"] == "ddp":
        if config["zero_stage"] != 0:
            raise ConfigError(f"{where}: zero_stage={config['zero_stage']} with engine ddp: "
                              "ZeRO is DeepSpeed's; set engine: deepspeed or zero_stage: 0")
        if config["precision"] == "bf16-deepspeed":
            raise ConfigError(f"{where}: precision bf16-deepspeed is DeepSpeed's bf16 mode; "
                              "with engine ddp use precision bf16 (autocast)")
    if (config["optimizer"]["name"] == "lamb" and config["engine"] == "deepspeed"
            and config["zero_stage"] > 0):
        raise ConfigError(
            f"{where}: optimizer lamb with zero_stage={config['zero_stage']}: DeepSpeed's ZeRO "
            "hands a client optimizer one flat partition of the parameters per rank, so "
            "LAMB's layer-wise trust ratio would be taken over partitions, not layers, and "
            "would change with the world size; use zero_stage: 0, engine: ddp, or adamw")
    own = [k for k in DEEPSPEED_OWN_KEYS if k in config["deepspeed"]]
    if own:
        raise ConfigError(f"{where}: deepspeed.{own[0]}: benscale sets this from its own keys "
                          "(global_batch/batch_per_gpu, grad_accumulation, seed, precision, "
                          "optimizer, schedule); set those instead")
