"""What both formats share: the scan result, the label order, the split rule, the outputs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from benscale.bigearthnet import SPLITS, label_tables
from benscale.files.index import INDEX_SCHEMA

#: The deterministic split used without official lists: the first 8 bytes of
#: sha256(patch_id) as a fraction u in [0, 1); train if u < 0.5, validation if u < 0.75,
#: test otherwise. Stable across runs, machines and archive subsets (a patch's split never
#: depends on which other patches are present).
DETERMINISTIC_SHARES: tuple[tuple[str, float], ...] = (("train", 0.5), ("validation", 0.75),
                                                       ("test", 1.0))

#: Exclusion reasons (the dataset's own rules, not bad input).
NO_CLASS = "no 19-class label"
NOT_IN_SPLIT = "not in any official split list"


@dataclass
class ScanResult:
    """What a format's scanner found: the usable patches as columns, and the rest.

    Attributes:
        columns: index columns (INDEX_SCHEMA names) as Arrow arrays or Python lists.
        excluded: ``{"patch_id", "reason", "path"}`` per patch left out by the rules.
        rejected: ``{"patch_id", "path", "problem"}`` per bad patch.
        split_source: ``official``, ``metadata`` or ``deterministic``.
        notes: extra report fields (lists used, listed patches absent from the archive...).
    """

    columns: dict[str, object]
    excluded: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    split_source: str = "metadata"
    notes: dict[str, object] = field(default_factory=dict)


def deterministic_split(patch_id: str) -> str:
    """The documented split of a patch without official lists (see DETERMINISTIC_SHARES)."""
    u = int.from_bytes(hashlib.sha256(patch_id.encode()).digest()[:8], "big") / 2.0 ** 64
    return next(name for name, upper in DETERMINISTIC_SHARES if u < upper)


def order_labels43(names: list[str]) -> list[str]:
    """43-class names in labels.json order, each once."""
    rank = {name: i for i, name in enumerate(label_tables().labels43)}
    return sorted(set(names), key=rank.__getitem__)


def order_classes(names: set[str] | list[str]) -> list[str]:
    """19-class names in the ORIGINAL class order of labels.json (never alphabetical)."""
    rank = _class_rank()
    return sorted(set(names), key=rank.__getitem__)


def _class_rank() -> dict[str, int]:
    return {name: i for i, name in enumerate(label_tables().classes19)}


def build_table(columns: dict[str, object]) -> pa.Table:
    """The index as an Arrow table with INDEX_SCHEMA, sorted by (split order, patch_id)."""
    arrays = {f.name: pa.array(columns[f.name], type=f.type)
              if not isinstance(columns[f.name], pa.Array | pa.ChunkedArray)
              else columns[f.name].cast(f.type) for f in INDEX_SCHEMA}
    table = pa.table(arrays, schema=INDEX_SCHEMA)
    keyed = table.append_column("_rank", pc.index_in(table["split"], pa.array(SPLITS)))
    order = pc.sort_indices(keyed, sort_keys=[("_rank", "ascending"), ("patch_id", "ascending")])
    return table.take(order)


def counts_by_split(table: pa.Table) -> dict[str, int]:
    """Patches per split, in split order, zeros included."""
    counts = dict.fromkeys(SPLITS, 0)
    for row in pc.value_counts(table["split"]).to_pylist():
        counts[row["values"]] = row["counts"]
    return counts
