"""Building the index of a published archive: what ``benscale ingest`` (from an unpacked
folder) and ``benscale extract ARCHIVE`` (from one pass over the tar) both do, so that
both give the same ``index.parquet`` and ``ingest-report.json`` (docs/architecture.md,
section 2; docs/ingest.md for the rules).

The per-format rules live in :mod:`.archive_v1` and :mod:`.archive_v2`; this module holds
what they share: the scan result, the deterministic split, the class order, the table and
the report.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from benscale.bigearthnet import BAND_NAMES, SPLITS, label_tables
from benscale.files.index import INDEX_SCHEMA

#: File name of the report beside index.parquet.
INGEST_REPORT_FILE = "ingest-report.json"

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
    rank = {name: i for i, name in enumerate(label_tables().classes19)}
    return sorted(set(names), key=rank.__getitem__)


def missing_bands(patch_id: str, folder: str, present: set[str]
                  ) -> tuple[str, str] | None:
    """(path of the first missing band file, problem) when a patch folder lacks band files.

    ``present`` holds the file names found in the folder (listed on disk, or seen in the
    tar stream).
    """
    missing = [b for b in BAND_NAMES if f"{patch_id}_{b}.tif" not in present]
    if not missing:
        return None
    return f"{folder}/{patch_id}_{missing[0]}.tif", f"missing band file(s) {', '.join(missing)}"


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


def ingest_report(archive: str, fmt: str, result: ScanResult, table: pa.Table,
                  check_files: bool) -> dict:
    """The content of ingest-report.json (docs/architecture.md, section 2)."""
    counts = counts_by_split(table)
    report = {
        "format": fmt, "archive": archive, "split_source": result.split_source,
        "counts": counts, "n_indexed": sum(counts.values()),
        "excluded_counts": _tally(result.excluded, "reason"),
        "n_rejected": len(result.rejected), "checked_files": check_files,
        **result.notes,
        "excluded": result.excluded, "rejected": result.rejected,
    }
    if result.split_source == "deterministic":
        report["split_rule"] = ("sha256(patch_id), first 8 bytes as a fraction u: "
                                + ", ".join(f"{s} if u < {u}" for s, u in DETERMINISTIC_SHARES
                                            if s != SPLITS[-1]) + ", test otherwise")
    return report


def report_json(report: dict) -> str:
    """The report as JSON, one list entry per line.

    Hand-laid so the C encoder does the work: ``json.dumps(indent=...)`` falls back to the
    pure-Python encoder, seconds for the 69,450 exclusions of the full v2 metadata.
    """
    parts = []
    for key, value in report.items():
        if isinstance(value, list) and value:
            body = "[\n    " + ",\n    ".join(json.dumps(v) for v in value) + "\n  ]"
        else:
            body = json.dumps(value)
        parts.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _tally(items: list[dict[str, str]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item[key]] = out.get(item[key], 0) + 1
    return out
