"""The points of a study and the ``benscale train`` overrides of each.

A study is ``modes x nodes x repeats``; every combination is one *point*, one training run
with its own run directory, and (on a cluster) one Slurm allocation of ``nodes`` nodes with
``gpus_per_node`` tasks per node. Everything here is a pure function of the study's
:class:`~benscale.files.study.StudyConfig`, so the Snakefile, ``benscale study`` and the
tests all plan the same points and batches.
"""

from __future__ import annotations

import json
from typing import Any

from benscale.errors import ConfigError
from benscale.files.batches import MODES, BatchSplit
from benscale.files.study import Point, StudyConfig

#: Where a point's outputs go, relative to the study folder.
RUN_DIR = "runs/{name}"
LOG = "logs/train/{name}.log"


def point_name(mode: str, nodes: int, repeat: int) -> str:
    """The name (and run directory) of a point: ``strong-n2-r0``."""
    return f"{mode}-n{nodes}-r{repeat}"


def point_batches(config: StudyConfig, mode: str, world_size: int, name: str) -> BatchSplit:
    """The batch split of a point: strong scaling keeps study.global_batch, weak scaling
    study.batch_per_gpu.

    Raises:
        ConfigError: unknown mode, or a global batch that cannot be split.
    """
    if mode not in MODES:
        raise ConfigError(f"study.modes: unknown mode {mode!r}; use one of {sorted(MODES)}")
    accumulation = config.train.grad_accumulation
    if mode == "weak":
        return BatchSplit.weak(config.study.batch_per_gpu, world_size, accumulation)
    return BatchSplit.strong(config.study.global_batch, world_size, accumulation,
                             where=f"point {name}: study.global_batch")


def plan_points(config: StudyConfig) -> tuple[Point, ...]:
    """All points of a study, in the order modes x nodes x repeats.

    Raises:
        ConfigError: duplicate node counts, or a batch that cannot be split.
    """
    study = config.study
    if len(set(study.nodes)) != len(study.nodes):
        raise ConfigError(f"study.nodes={list(study.nodes)}: each node count may appear once "
                          "(use study.repeats to measure a point several times)")
    points = []
    for mode in study.modes:
        for nodes in study.nodes:
            for repeat in range(study.repeats):
                name = point_name(mode, nodes, repeat)
                world = nodes * study.gpus_per_node
                batches = point_batches(config, mode, world, name)
                points.append(Point(name, mode, nodes, study.gpus_per_node, repeat, world,
                                    batches.global_batch, batches.per_rank,
                                    RUN_DIR.format(name=name), LOG.format(name=name)))
    return tuple(points)


def find_point(config: StudyConfig, mode: str, nodes: int | str, repeat: int | str) -> Point:
    """The planned point for wildcard values (strings from a Snakemake wildcard are fine)."""
    name = point_name(mode, int(nodes), int(repeat))
    for point in plan_points(config):
        if point.name == name:
            return point
    study = config.study
    raise ConfigError(f"point {name} is not part of study {study.name!r} (modes "
                      f"{list(study.modes)}, nodes {list(study.nodes)}, repeats {study.repeats})")


def train_overrides(point: Point, config: StudyConfig) -> list[str]:
    """The ``--set KEY=VALUE`` items of a point's ``benscale train`` (values as YAML).

    Exactly one of ``global_batch`` / ``batch_per_gpu`` is non-null: the one the mode
    keeps fixed. The study's tags travel into run.json.
    """
    train = config.train
    fixed = MODES[point.mode]
    items = {
        "epochs": train.epochs,
        "precision": train.precision,
        "zero_stage": train.zero_stage,
        "seed": train.seed,
        "grad_accumulation": train.grad_accumulation,
        "global_batch": point.global_batch if fixed == "global_batch" else None,
        "batch_per_gpu": point.batch_per_gpu if fixed == "batch_per_gpu" else None,
        **{str(k): v for k, v in train.set.items()},
        "tags.study": config.study.name,
        "tags.point": point.name,
        "tags.mode": point.mode,
        "tags.repeat": point.repeat,
        "tags.nodes": point.nodes,
        "tags.gpus_per_node": point.gpus_per_node,
    }
    return [f"{key}={_yaml_scalar(value)}" for key, value in items.items()]


def _yaml_scalar(value: Any) -> str:
    """A value as the YAML that ``--set`` parses back to it (JSON is valid YAML)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def set_args(point: Point, config: StudyConfig) -> list[str]:
    """``train_overrides`` as argv: ``["--set", "epochs=3", "--set", ...]``."""
    return [arg for item in train_overrides(point, config) for arg in ("--set", item)]
