"""A scaling study: its configuration, its points, and ``study.json``.

The configuration is the workflow's (``config/config.yaml`` validated by
``workflow/schemas/config.schema.yaml``); it enters benscale as a dict with every key
filled in and travels on as :class:`StudyConfig`. ``benscale study`` plans the points
(:class:`Point`) and writes ``results/<study>/study.json`` (:class:`StudyDocument`), which
the report and ``benscale reproduce`` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from benscale.atomic import write_json
from benscale.errors import ConfigError
from benscale.provenance import GitState
from benscale.typed import from_mapping, to_mapping

STUDY_JSON = "study.json"


@dataclass(frozen=True)
class Variant:
    """A named variant of the training: a partial train config over the train section.

    Attributes:
        name: its name; its run directories are ``runs/<name>/``.
        engine: ``deepspeed`` or ``ddp`` (None: the train section's).
        precision: training precision (None: the train section's).
        zero_stage: DeepSpeed ZeRO stage (None: the train section's).
        grad_accumulation: micro-steps per optimizer step (None: the train section's).
        set: further ``benscale train --set`` overrides.
    """

    OMIT_UNSET: ClassVar[bool] = True

    name: str
    engine: str | None = None
    precision: str | None = None
    zero_stage: int | None = None
    grad_accumulation: int | None = None
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantGrid:
    """``study.variant_grid``: every combination of the listed values is a variant."""

    OMIT_UNSET: ClassVar[bool] = True

    engine: tuple[str, ...] = ()
    precision: tuple[str, ...] = ()
    zero_stage: tuple[int, ...] = ()
    grad_accumulation: tuple[int, ...] = ()


@dataclass(frozen=True)
class StudySection:
    """``study``: the points, each variant x mode x node count x repeat one training run."""

    name: str
    modes: tuple[str, ...]
    nodes: tuple[int, ...]
    gpus_per_node: int
    repeats: int
    global_batch: int
    batch_per_gpu: int
    variants: tuple[Variant, ...] = ()
    variant_grid: VariantGrid = field(default_factory=VariantGrid)


@dataclass(frozen=True)
class SynthSection:
    """``data.synth``: the embedded default archive."""

    format: str
    patches: int
    seed: int


@dataclass(frozen=True)
class ExtractSection:
    """``data.extract``: the options of ``benscale extract`` (the last two for a .tar*
    archive read as one stream; defaults for study configs written before them)."""

    shard_size: int
    workers: int
    resampling: str
    compression: str
    stream_buffer_mb: int = 2048
    decompressor: str = "auto"


@dataclass(frozen=True)
class DataSection:
    """``data``: where the data comes from and how it is extracted."""

    archive: str | None
    format: str
    v1_lists: str | None
    workdir: str
    synth: SynthSection
    extract: ExtractSection


@dataclass(frozen=True)
class TrainSection:
    """``train``: the training of every point (``set``: further ``--set`` overrides)."""

    config: str | None
    epochs: int
    engine: str
    precision: str
    zero_stage: int
    seed: int
    grad_accumulation: int
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LauncherSection:
    """``launcher``: how a point's ranks are started."""

    kind: str
    max_local_procs: int
    threads_per_proc: int


@dataclass(frozen=True)
class SlurmSection:
    """``slurm``: resources of each training job under profiles/slurm."""

    cpus_per_task: int
    mem_mb_per_node: int | None
    runtime_min: int
    gpu_request: str


@dataclass(frozen=True)
class MachineSection:
    """``machine``: the system as the report names it."""

    name: str
    description: str


@dataclass(frozen=True)
class ReportSection:
    """``report``: references to check and the time-to-accuracy target."""

    references: tuple[str, ...]
    target_map_macro: float | None


@dataclass(frozen=True)
class DebugSection:
    """``debug``: failure injection for the workflow's tests."""

    kill_points: tuple[str, ...]
    kill_after_s: float


@dataclass(frozen=True)
class StudyConfig:
    """The resolved configuration of a study (every key of the workflow schema)."""

    study: StudySection
    data: DataSection
    train: TrainSection
    launcher: LauncherSection
    slurm: SlurmSection
    machine: MachineSection
    report: ReportSection
    debug: DebugSection

    @classmethod
    def from_dict(cls, config: dict[str, Any], where: str = "config") -> StudyConfig:
        """The typed configuration of a RESOLVED config dict (defaults filled in).

        Raises:
            ConfigError: a key is missing or unknown, naming it.
        """
        try:
            return from_mapping(cls, config, where)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; pass the RESOLVED study config (as the workflow "
                              "validated it, defaults filled in)") from None

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (the workflow's keys)."""
        return to_mapping(self)


@dataclass(frozen=True)
class Point:
    """One scaling point: one training run, one Slurm allocation.

    Attributes:
        name: ``<variant>/<mode>-n<nodes>-r<repeat>``, the run directory below runs/.
        variant: the variant it runs.
        mode: ``strong`` or ``weak``.
        nodes: nodes of the allocation (emulated by process groups locally).
        gpus_per_node: ranks per node, one GPU each.
        repeat: 0-based repetition index (same seed: repeats measure time variance).
        world_size: ``nodes x gpus_per_node``.
        global_batch: samples per optimizer step over all ranks.
        batch_per_gpu: samples per rank per micro-step.
        run_dir: the run directory, relative to the study folder.
        log: the training log, relative to the study folder.
    """

    name: str
    variant: str
    mode: str
    nodes: int
    gpus_per_node: int
    repeat: int
    world_size: int
    global_batch: int
    batch_per_gpu: int
    run_dir: str
    log: str


@dataclass(frozen=True)
class StudyMachine:
    """The machine a study was planned on, as far as the planning host knows it (per-run
    hosts, CPU/GPU models and Slurm job ids are in each run.json)."""

    name: str
    description: str
    launcher: str
    submit_host: str
    submit_host_cpu: str
    git: GitState
    packages: dict[str, str | None]


@dataclass(frozen=True)
class StudyDocument:
    """``study.json``: the study's configuration, machine and points.

    Attributes:
        study: the study's name.
        config: its resolved configuration.
        machine: where it was planned.
        created_utc: when.
        variants: every variant, resolved (grid expanded), in plan order.
        points: every point, in plan order.
        snakefile: the workflow that planned it (absolute path; None when planned by hand),
            which ``benscale reproduce --profile`` runs again.
        reproduced_from: for a reproduction, the folder of the original study.
    """

    study: str
    config: StudyConfig
    machine: StudyMachine
    created_utc: str
    variants: tuple[Variant, ...]
    points: tuple[Point, ...]
    snakefile: str | None = None
    reproduced_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The document as written."""
        return to_mapping(self)

    def write(self, path: Path) -> None:
        """Write the document atomically."""
        write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> StudyDocument:
        """Read a study.json.

        Raises:
            ConfigError: missing, not JSON, or not a study document, naming the file.
        """
        try:
            doc = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the study file ({exc}); write it with "
                              "`benscale study write` or the workflow's `study` rule") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
            raise ConfigError(f"{path}: no 'points' list; expected the document of "
                              "`benscale study write` (docs/report.md)")
        try:
            return from_mapping(cls, doc, str(path))
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: not a benscale study document ({exc})") from exc

    def point(self, name: str) -> Point:
        """The point called ``name``.

        Raises:
            ConfigError: no such point, listing the known ones.
        """
        for point in self.points:
            if point.name == name:
                return point
        raise ConfigError(f"point {name!r} is not in study {self.study!r}; its points are "
                          f"{sorted(p.name for p in self.points)}")
