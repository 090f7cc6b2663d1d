"""``index.parquet``: one row per usable patch, written by ``benscale ingest`` and read by
``benscale extract`` (docs/architecture.md, section 2).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benscale.atomic import atomic_path
from benscale.bigearthnet import SPLITS
from benscale.errors import DataError

#: File name of the index inside ingest's output folder.
INDEX_FILE = "index.parquet"

#: Columns of index.parquet and their Arrow types.
INDEX_SCHEMA = pa.schema([
    ("patch_id", pa.string()), ("split", pa.string()), ("labels", pa.list_(pa.string())),
    ("path", pa.string()), ("format", pa.string()), ("tile", pa.string()),
    ("acquisition_date", pa.timestamp("s", tz="UTC")), ("country", pa.string()),
    # The original 43 CORINE labels in labels.json order: v1 only (reBEN's metadata has
    # the 19 classes alone); null for v2. For `num_classes: 43` training.
    ("labels43", pa.list_(pa.string())),
])

#: Columns a reader of the index cannot do without.
REQUIRED_COLUMNS: tuple[str, ...] = ("patch_id", "split", "labels", "path")


def write_index(path: Path, table: pa.Table) -> None:
    """Write index.parquet atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_index(path: Path) -> pd.DataFrame:
    """Read and check index.parquet; return it sorted by (split, patch_id).

    Sorting here (not trusting the file's order) is what makes shard membership
    deterministic, and so what makes resuming an extraction safe.

    Raises:
        DataError: the file is missing, unreadable, empty, or breaks the index's rules
            (columns, split names, unique patch ids), naming the file.
    """
    try:
        index = pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: index not found; run `benscale ingest` first") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc}); "
                        "re-run `benscale ingest`") from exc
    if index.empty:
        raise DataError(f"{path}: the index has no patches; check the ingest report beside it")
    missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected the index of "
                        "docs/architecture.md section 2 (re-run `benscale ingest`)")
    bad_splits = sorted(set(index["split"]) - set(SPLITS))
    if bad_splits:
        raise DataError(f"{path}: unknown split value(s) {bad_splits}; expected {list(SPLITS)}")
    duplicated = index["patch_id"][index["patch_id"].duplicated()].tolist()
    if duplicated:
        raise DataError(f"{path}: duplicate patch_id(s) {duplicated[:5]}; "
                        "each patch may appear once (re-run `benscale ingest`)")
    order = index["split"].map(SPLITS.index)
    return (index.assign(_order=order).sort_values(["_order", "patch_id"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))
