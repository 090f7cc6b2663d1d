"""The files of a run directory (docs/architecture.md, section 4), written by rank 0.

CSV files are rewritten whole and atomically at each epoch: a job killed mid-write leaves
the previous version, and a resumed run drops rows beyond its checkpoint so no epoch
appears twice.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from benscale.atomic import write_text

EPOCH_COLUMNS: tuple[str, ...] = (
    "epoch", "world_size", "nodes", "global_batch",
    "epoch_time_s", "data_time_s", "compute_time_s", "comm_time_s", "optimizer_time_s",
    "epoch_time_s_mean", "data_time_s_mean", "compute_time_s_mean", "comm_time_s_mean",
    "optimizer_time_s_mean",
    "samples_per_s", "train_loss", "val_loss", "val_map_micro", "val_map_macro",
    "val_f1_micro", "val_f1_macro", "val_precision_micro", "val_recall_micro",
    "lr", "steps", "samples", "eval_time_s", "checkpoint_time_s",
)
AP_COLUMNS: tuple[str, ...] = ("epoch", "class", "ap")


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


def append_epoch(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` of one epoch, replacing any earlier rows of that epoch."""
    epoch = str(rows[0]["epoch"])
    kept = [r for r in read_rows(path) if r["epoch"] != epoch]
    write_rows(path, columns, kept + rows)


def truncate_after(path: Path, columns: tuple[str, ...], last_epoch: int) -> None:
    """Drop rows of epochs after ``last_epoch`` (work a killed job did past its checkpoint)."""
    rows = read_rows(path)
    if rows:
        write_rows(path, columns, [r for r in rows if int(r["epoch"]) <= last_epoch])
