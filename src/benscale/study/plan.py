"""The variants and points of a study and the ``benscale train`` overrides of each.

A study is ``variants x modes x nodes x repeats``; every combination is one *point*, one
training run with its own run directory ``runs/<variant>/<mode>-n<nodes>-r<repeat>/``,
and (on a cluster) one Slurm allocation of ``nodes`` nodes with ``gpus_per_node`` tasks per
node. A *variant* is a named partial training config (engine, precision, ZeRO stage, ...)
over the study's train section, so configurations are compared at the same points and the
same batches. Everything here is a pure function of the study's
:class:`~benscale.files.study.StudyConfig`, so the Snakefile, ``benscale study`` and the
tests all plan the same points.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, fields
from typing import Any

from benscale.errors import ConfigError
from benscale.files.batches import MODES, BatchSplit
from benscale.files.study import Point, StudyConfig, Variant
from benscale.study.launchers import threads_per_rank

#: Where a point's outputs go, relative to the study folder.
RUN_DIR = "runs/{name}"
LOG = "logs/train/{name}.log"
#: The variant of a study that names none: the train section itself.
DEFAULT_VARIANT = "default"
#: Training keys a variant may not set: the study's batch is every variant's.
STUDY_OWNED_KEYS: tuple[str, ...] = ("global_batch", "batch_per_gpu")
#: How a grid key's value appears in a variant's name.
GRID_LABELS: dict[str, str] = {"engine": "{}", "precision": "{}", "zero_stage": "z{}",
                               "grad_accumulation": "acc{}"}


@dataclass(frozen=True)
class ResolvedVariant:
    """A variant with every training key the study sets resolved."""

    name: str
    engine: str
    precision: str
    zero_stage: int
    grad_accumulation: int
    set: dict[str, Any]


def runnable(engine: str, precision: str, zero_stage: int) -> str | None:
    """Why an engine cannot run these settings (None: it can)."""
    if engine == "ddp" and zero_stage:
        return "ZeRO is DeepSpeed's (engine ddp needs zero_stage 0)"
    if engine == "ddp" and precision == "bf16-deepspeed":
        return "bf16-deepspeed is DeepSpeed's bf16 mode (engine ddp: use bf16)"
    return None


def grid_variants(config: StudyConfig) -> tuple[list[Variant], list[str]]:
    """The variants of ``study.variant_grid`` (named by their values), and the names of the
    combinations left out because their engine cannot run them."""
    grid = config.study.variant_grid
    axes = [(f.name, getattr(grid, f.name)) for f in fields(grid) if getattr(grid, f.name)]
    if not axes:
        return [], []
    train = config.train
    made, skipped = [], []
    for values in itertools.product(*(v for _, v in axes)):
        chosen = dict(zip((k for k, _ in axes), values, strict=True))
        name = "-".join(GRID_LABELS[k].format(v) for k, v in chosen.items())
        why = runnable(chosen.get("engine", train.engine),
                       chosen.get("precision", train.precision),
                       chosen.get("zero_stage", train.zero_stage))
        if why:
            skipped.append(f"{name}: {why}")
            continue
        made.append(Variant(name=name, **chosen))
    return made, skipped


def resolve_variants(config: StudyConfig) -> tuple[ResolvedVariant, ...]:
    """Every variant of the study with the train section under it, in order: the listed
    ones, then the grid's; one ``default`` variant when there are none.

    Raises:
        ConfigError: a duplicate name, a variant setting the study's batch, or settings its
            engine cannot run, naming the variant and the key.
    """
    listed = list(config.study.variants)
    from_grid, _ = grid_variants(config)
    variants = listed + from_grid or [Variant(name=DEFAULT_VARIANT)]
    seen: set[str] = set()
    out = []
    train = config.train
    for i, v in enumerate(variants):
        where = f"study.variants[{i}] ({v.name})" if i < len(listed) else \
            f"study.variant_grid ({v.name})"
        if v.name in seen:
            raise ConfigError(f"{where}: duplicate variant name {v.name!r}; every variant "
                              "needs its own name (its run directories are runs/<name>/)")
        seen.add(v.name)
        own_keys = [k for k in ("engine", "precision", "zero_stage", "grad_accumulation")
                    if k in v.set]
        if own_keys:
            raise ConfigError(f"{where}: set.{own_keys[0]}: give it as the variant's own key "
                              f"({own_keys[0]}: ...), which names and checks it")
        owned = [k for k in STUDY_OWNED_KEYS if k in v.set]
        if owned:
            raise ConfigError(f"{where}: set.{owned[0]}: a variant may not change the batch; "
                              "the study's global_batch (strong) or batch_per_gpu (weak) is "
                              "every variant's, so that the variants compare at the same "
                              "points; use separate studies for other batches")
        resolved = ResolvedVariant(
            name=v.name, engine=v.engine or train.engine,
            precision=v.precision or train.precision,
            zero_stage=train.zero_stage if v.zero_stage is None else v.zero_stage,
            grad_accumulation=v.grad_accumulation or train.grad_accumulation,
            set={**train.set, **v.set})
        why = runnable(resolved.engine, resolved.precision, resolved.zero_stage)
        if why:
            raise ConfigError(f"{where}: engine {resolved.engine} with precision "
                              f"{resolved.precision}, zero_stage {resolved.zero_stage}: {why}")
        out.append(resolved)
    return tuple(out)


def point_name(variant: str, mode: str, nodes: int, repeat: int) -> str:
    """The name (and run directory below runs/) of a point: ``ddp/strong-n2-r0``."""
    return f"{variant}/{mode}-n{nodes}-r{repeat}"


def point_batches(mode: str, world_size: int, variant: ResolvedVariant, config: StudyConfig,
                  name: str) -> BatchSplit:
    """The batch split of a point: strong scaling keeps study.global_batch, weak scaling
    study.batch_per_gpu.

    Raises:
        ConfigError: unknown mode, or a global batch that cannot be split.
    """
    if mode not in MODES:
        raise ConfigError(f"study.modes: unknown mode {mode!r}; use one of {sorted(MODES)}")
    if mode == "weak":
        return BatchSplit.weak(config.study.batch_per_gpu, world_size,
                               variant.grad_accumulation)
    return BatchSplit.strong(config.study.global_batch, world_size, variant.grad_accumulation,
                             where=f"point {name}: study.global_batch")


def plan_points(config: StudyConfig) -> tuple[Point, ...]:
    """All points of a study, in the order variants x modes x nodes x repeats.

    Raises:
        ConfigError: duplicate node counts, a bad variant, or a batch that cannot be split.
    """
    study = config.study
    if len(set(study.nodes)) != len(study.nodes):
        raise ConfigError(f"study.nodes={list(study.nodes)}: each node count may appear once "
                          "(use study.repeats to measure a point several times)")
    points = []
    for variant in resolve_variants(config):
        for mode in study.modes:
            for nodes in study.nodes:
                for repeat in range(study.repeats):
                    name = point_name(variant.name, mode, nodes, repeat)
                    world = nodes * study.gpus_per_node
                    batches = point_batches(mode, world, variant, config, name)
                    points.append(Point(name, variant.name, mode, nodes, study.gpus_per_node,
                                        repeat, world, batches.global_batch, batches.per_rank,
                                        RUN_DIR.format(name=name), LOG.format(name=name)))
    return tuple(points)


def find_point(config: StudyConfig, variant: str, mode: str, nodes: int | str,
               repeat: int | str) -> Point:
    """The planned point for wildcard values (strings from a Snakemake wildcard are fine)."""
    name = point_name(variant, mode, int(nodes), int(repeat))
    for point in plan_points(config):
        if point.name == name:
            return point
    study = config.study
    raise ConfigError(f"point {name} is not part of study {study.name!r} (variants "
                      f"{[v.name for v in resolve_variants(config)]}, modes "
                      f"{list(study.modes)}, nodes {list(study.nodes)}, repeats "
                      f"{study.repeats})")


def train_overrides(point: Point, config: StudyConfig) -> list[str]:
    """The ``--set KEY=VALUE`` items of a point's ``benscale train`` (values as YAML).

    The train section, then the point's variant over it; exactly one of ``global_batch`` /
    ``batch_per_gpu`` is non-null: the one the mode keeps fixed. The rank's threads are
    part of its config (the run sets them, not the environment). The study's tags travel
    into run.json.
    """
    variant = next(v for v in resolve_variants(config) if v.name == point.variant)
    fixed = MODES[point.mode]
    items = {
        "epochs": config.train.epochs,
        "engine": variant.engine,
        "precision": variant.precision,
        "zero_stage": variant.zero_stage,
        "seed": config.train.seed,
        "grad_accumulation": variant.grad_accumulation,
        "global_batch": point.global_batch if fixed == "global_batch" else None,
        "batch_per_gpu": point.batch_per_gpu if fixed == "batch_per_gpu" else None,
        "threads": threads_per_rank(config),
        **{str(k): v for k, v in variant.set.items()},
        "tags.study": config.study.name,
        "tags.point": point.name,
        "tags.variant": point.variant,
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
