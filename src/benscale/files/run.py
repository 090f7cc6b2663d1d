"""A training run's directory: run.json, epochs.csv, per_class_ap.csv and the rest.

Written by ``benscale train`` (rank 0), read by the report and by ``benscale reproduce``
(docs/architecture.md, section 4). CSV files are rewritten whole and atomically at each
epoch: a job killed mid-write leaves the previous version, and a resumed run drops rows
beyond its checkpoint so no epoch appears twice.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from benscale.atomic import write_json, write_text
from benscale.errors import ConfigError, DataError
from benscale.provenance import Provenance
from benscale.typed import from_mapping, to_mapping

#: File names inside a run directory.
RUN_JSON = "run.json"
EPOCHS_CSV = "epochs.csv"
PER_CLASS_AP_CSV = "per_class_ap.csv"
EVENT_LOG = "mllog.txt"
#: The resolved engine configuration, per engine.
ENGINE_CONFIGS: dict[str, str] = {"deepspeed": "ds_config.json", "ddp": "ddp_config.json"}
CHECKPOINTS = "checkpoints"
#: The files of a run a reviewer needs (checkpoints stay out: large, re-creatable).
RECORD_FILES: tuple[str, ...] = (RUN_JSON, EPOCHS_CSV, PER_CLASS_AP_CSV, EVENT_LOG,
                                 *ENGINE_CONFIGS.values())

#: Timed phases of an epoch, in column order (docs/training.md, "How an epoch's time is
#: split"); each is the max over ranks, and ``<name>_mean`` the mean.
PHASES: tuple[str, ...] = ("epoch_time_s", "data_time_s", "compute_time_s", "comm_time_s",
                           "optimizer_time_s")
#: The parts an epoch's time splits into (the report's stacked bar), without the whole.
PARTS: tuple[str, ...] = PHASES[1:]
#: Validation and test metrics (benscale.train.metrics), in column order.
METRICS: tuple[str, ...] = ("map_micro", "map_macro", "f1_micro", "f1_macro",
                            "precision_micro", "recall_micro")


@dataclass(frozen=True)
class EpochRow:
    """One row of epochs.csv: one epoch of one run, timings reduced over ranks."""

    epoch: int
    world_size: int
    nodes: int
    global_batch: int
    epoch_time_s: float
    data_time_s: float
    compute_time_s: float
    comm_time_s: float
    optimizer_time_s: float
    epoch_time_s_mean: float
    data_time_s_mean: float
    compute_time_s_mean: float
    comm_time_s_mean: float
    optimizer_time_s_mean: float
    samples_per_s: float
    train_loss: float
    val_loss: float
    val_map_micro: float
    val_map_macro: float
    val_f1_micro: float
    val_f1_macro: float
    val_precision_micro: float
    val_recall_micro: float
    lr: float
    steps: int
    samples: int
    eval_time_s: float
    checkpoint_time_s: float
    engine: str
    engine_version: str
    #: The resolved engine configuration as compact JSON (run.json has it structured).
    engine_config: str


EPOCH_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpochRow))
AP_COLUMNS: tuple[str, ...] = ("epoch", "class", "ap")
#: Columns of epochs.csv that are measurements of time (compared as ratios by reproduce).
TIMING_COLUMNS: tuple[str, ...] = ("epoch_time_s", "samples_per_s", *PARTS)
#: Columns of epochs.csv that a re-run with the same seeds must reproduce exactly on CPU.
RESULT_COLUMNS: tuple[str, ...] = ("train_loss", "val_loss",
                                   *(f"val_{m}" for m in METRICS), "lr", "steps", "samples")


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV (empty when the file does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (missing keys empty) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def _replace_epoch(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    epoch = str(rows[0]["epoch"])
    kept = [r for r in read_rows(path) if r["epoch"] != epoch]
    write_rows(path, columns, kept + rows)


def append_epoch(run_dir: Path, row: EpochRow) -> None:
    """Add one epoch's row to epochs.csv, replacing an earlier row of that epoch."""
    _replace_epoch(run_dir / EPOCHS_CSV, EPOCH_COLUMNS, [to_mapping(row)])


def append_class_ap(run_dir: Path, epoch: int, classes: tuple[str, ...],
                    aps: list[float]) -> None:
    """Add one epoch's per-class APs to per_class_ap.csv (replacing that epoch's)."""
    _replace_epoch(run_dir / PER_CLASS_AP_CSV, AP_COLUMNS,
                   [{"epoch": epoch, "class": c, "ap": float(a)}
                    for c, a in zip(classes, aps, strict=True)])


def truncate_after(run_dir: Path, last_epoch: int) -> None:
    """Drop CSV rows of epochs after ``last_epoch`` (work a killed job did past its
    checkpoint)."""
    for name, columns in ((EPOCHS_CSV, EPOCH_COLUMNS), (PER_CLASS_AP_CSV, AP_COLUMNS)):
        rows = read_rows(run_dir / name)
        if rows:
            write_rows(run_dir / name, columns, [r for r in rows if int(r["epoch"]) <= last_epoch])


# --------------------------------------------------------------------------- event log
#: The prefix mlperf-logging writes before each event's JSON.
MLLOG_PREFIX = ":::MLLOG "


@dataclass(frozen=True)
class Event:
    """One line of the MLPerf event log."""

    key: str
    value: Any
    time_ms: float
    event_type: str
    metadata: dict[str, Any]


def read_event_log(run_dir: Path) -> list[Event]:
    """The events of ``run_dir/mllog.txt`` in mlperf-logging's line format (other lines,
    e.g. a cut last line, are skipped, as MLPerf's own parser does)."""
    path = run_dir / EVENT_LOG
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        if not line.startswith(MLLOG_PREFIX):
            continue
        try:
            doc = json.loads(line[len(MLLOG_PREFIX):])
        except json.JSONDecodeError:
            continue
        events.append(Event(doc["key"], doc.get("value"), float(doc["time_ms"]),
                            doc.get("event_type", ""), doc.get("metadata") or {}))
    return events


def time_to_train_s(events: list[Event]) -> float | None:
    """MLPerf's time to train: from ``run_start`` to a successful ``run_stop`` (None when
    the log has no such pair)."""
    start = next((e.time_ms for e in events if e.key == "run_start"), None)
    stop = next((e.time_ms for e in events if e.key == "run_stop"
                 and e.metadata.get("status") == "success"), None)
    return (stop - start) / 1e3 if start is not None and stop is not None else None


# --------------------------------------------------------------------------- run.json
@dataclass(frozen=True)
class WorldRecord:
    """Where a run's ranks ran (run.json ``world``)."""

    world_size: int
    nodes: int
    gpus_per_node: int
    hosts: tuple[str, ...]
    launcher: str
    backend: str
    device: str
    emulated_nodes: bool
    master_addr: str
    master_port: int
    rank_hosts: tuple[str, ...]


@dataclass(frozen=True)
class BatchRecord:
    """How the run's global batch was split (run.json ``batches``)."""

    global_batch: int
    per_rank: int
    grad_accumulation: int
    steps_per_epoch: int


@dataclass(frozen=True)
class BestEpoch:
    """The epoch with the highest validation macro mAP so far."""

    epoch: int | None = None
    val_map_macro: float | None = None


@dataclass(frozen=True)
class HoldoutEvaluation:
    """The test-split evaluation at the end of a run."""

    map_micro: float
    map_macro: float
    f1_micro: float
    f1_macro: float
    precision_micro: float
    recall_micro: float
    loss: float
    n_patches: int
    checkpoint: str
    test_on: str


@dataclass(frozen=True)
class EngineRecord:
    """The data-parallel engine of a run: which, from which library and version, and its
    resolved configuration (ds_config.json or DDP's options)."""

    name: str
    library: str
    version: str
    config: dict[str, Any]


@dataclass(frozen=True)
class TimingRecord:
    """How the phases of epochs.csv were measured (docs/training.md)."""

    method: str
    comm_measured: bool


@dataclass(frozen=True)
class RuntimeRecord:
    """run.json ``runtime``: the threads and library settings the run set from its config,
    and what the libraries report afterwards (benscale.train.runtime).

    Attributes:
        threads: intra-op threads per rank, as resolved (``threads: null`` -> the cores
            this process may run on divided by the ranks on its host).
        interop_threads: torch inter-op threads.
        torch_threads: ``torch.get_num_threads()`` after setting.
        threadpools: every BLAS/OpenMP pool of the process (threadpoolctl), after setting.
        environment: the thread variables as the run left them for its children.
        deterministic: ``torch.use_deterministic_algorithms``.
        matmul_precision: ``torch.get_float32_matmul_precision()``.
        cudnn: cuDNN's benchmark/deterministic flags and version (None without CUDA).
        parallel_info: ``torch.__config__.parallel_info()`` (ATen, OpenMP, MKL, oneDNN).
    """

    threads: int
    interop_threads: int
    torch_threads: int
    threadpools: list[dict[str, Any]]
    environment: dict[str, str]
    deterministic: bool
    matmul_precision: str
    cudnn: dict[str, Any] | None
    parallel_info: str


@dataclass(frozen=True)
class RunSettings:
    """The settings of a run that the report and the performance model read (a typed view
    of the recorded ``config``)."""

    precision: str
    engine: str
    zero_stage: int
    bands: str
    num_classes: int
    epochs: int
    seed: int


@dataclass(frozen=True)
class RunRecord:
    """run.json: what ran, where, with what, and how it ended.

    Attributes:
        config: the resolved training configuration, verbatim (what ``benscale train
            --config`` reads back to repeat the run).
        world: the ranks and hosts.
        batches: the batch split.
        provenance: versions, machine, Slurm job, config hash (benscale.provenance).
        status: ``running``, ``ok`` or ``failed``.
        test: the test evaluation (None until the run ends well).
        best: the best validation epoch.
        tags: free-form labels (the study's point, mode, ...).
        engine: the data-parallel engine and its resolved configuration.
        timing: how communication and the other phases were measured.
        runtime: the threads and library settings the numbers depend on.
        consistency: checks across ranks (``param_sha256_by_rank``).
    """

    config: dict[str, Any]
    world: WorldRecord
    batches: BatchRecord
    provenance: Provenance
    status: str
    test: HoldoutEvaluation | None
    best: BestEpoch
    tags: dict[str, Any]
    engine: EngineRecord
    timing: TimingRecord
    runtime: RuntimeRecord
    consistency: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the run completed."""
        return self.status == "ok"

    @property
    def settings(self) -> RunSettings:
        """The recorded configuration's settings that results depend on."""
        return RunSettings(**{f.name: self.config[f.name] for f in fields(RunSettings)})

    def to_json(self) -> dict[str, Any]:
        """The document as written (``test`` as ``{}`` while there is none)."""
        doc = to_mapping(self)
        doc["test"] = doc["test"] or {}
        return doc

    def write(self, run_dir: Path) -> None:
        """Write ``run_dir/run.json`` atomically."""
        write_json(run_dir / RUN_JSON, self.to_json())

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        """Read ``run_dir/run.json``.

        Raises:
            DataError: missing, not JSON, or not a run record, naming the file.
        """
        path = run_dir / RUN_JSON
        try:
            doc = json.loads(path.read_text())
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        try:
            doc["test"] = doc.get("test") or None
            return from_mapping(cls, doc, str(path))
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a benscale run record ({exc})") from exc
