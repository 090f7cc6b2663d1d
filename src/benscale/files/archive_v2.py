"""BigEarthNet v2.0 (reBEN) as published: everything from metadata.parquet, vectorised over
Arrow arrays (docs/ingest.md).

The 480,038 rows of the real metadata are validated (patch_id format, known labels, split
values, duplicates), their labels put into the original 19-class order, and their tile,
date and folder derived from the patch_id, without a Python loop over rows. What the image
folders hold comes from the caller (:class:`V2Folders`): ``benscale ingest`` lists folders
on disk, ``benscale extract ARCHIVE`` reports what the tar stream held, and both get the
same index from :func:`finish`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benscale.bigearthnet import (
    SPLITS,
    TILE_PATTERN,
    V2_METADATA_FILE,
    V2_PATCH_ID_PATTERN,
    V2_SNOW_CLOUD_FILE,
    label_tables,
)
from benscale.errors import ArchiveError
from benscale.files.archive_index import NO_CLASS, ScanResult

REQUIRED = ("patch_id", "labels", "split")
#: Snow/cloud parquet flag -> exclusion reason (the same words as v1's lists).
FLAG_REASONS = {"contains_seasonal_snow": "seasonal snow",
                "contains_cloud_or_shadow": "cloud or shadow"}
NOT_IN_METADATA = f"folder not in {V2_METADATA_FILE}"
#: Problem of a metadata row whose patch folder the archive lacks.
FOLDER_MISSING = f"metadata row whose folder is missing (row of {V2_METADATA_FILE})"
MISNAMED = ("folder name unlike the v2 format <product>/"
            "S2[AB]_MSIL2A_<YYYYMMDDTHHMMSS>_N9999_R<orbit>_T<tile>_<xx>_<yy>; not indexed")


def product_of(patch_id: str) -> str:
    """The product folder of a v2 patch: its patch_id without ``_xx_yy``."""
    return patch_id[:-6]


@dataclass(frozen=True)
class V2Metadata:
    """The release's metadata files, read and checked for their columns.

    Attributes:
        table: metadata.parquet (plain strings).
        path: where it came from, as reported (a file, or ``ARCHIVE:metadata.parquet``).
        snow_cloud: the snow/cloud parquet, None when absent.
        snow_cloud_path: where that came from.
    """

    table: pa.Table
    path: str
    snow_cloud: pa.Table | None = None
    snow_cloud_path: str | None = None

    @classmethod
    def read(cls, metadata: Path) -> V2Metadata:
        """metadata.parquet and, beside it, the snow/cloud parquet if present."""
        snow = metadata.parent / V2_SNOW_CLOUD_FILE
        return cls.from_sources(metadata, str(metadata),
                                snow if snow.is_file() else None, str(snow))

    @classmethod
    def from_sources(cls, metadata: Path | bytes, name: str, snow_cloud: Path | bytes | None,
                     snow_cloud_name: str) -> V2Metadata:
        """From files or bytes (members of a tar); ``name`` is what messages call them.

        Raises:
            ArchiveError: metadata.parquet unreadable, without the reBEN columns, or empty.
        """
        table = _read_table(metadata, name)
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise ArchiveError(f"{name}: missing column(s) {missing}; expected the reBEN "
                               f"{V2_METADATA_FILE} (patch_id, labels, split, country, ...)")
        if table.num_rows == 0:
            raise ArchiveError(f"{name}: the metadata has no rows; the archive is empty")
        if "country" not in table.column_names:
            table = table.append_column("country", pa.nulls(table.num_rows, pa.string()))
        snow = None if snow_cloud is None else _read_table(snow_cloud, snow_cloud_name)
        return cls(table, name, snow, snow_cloud_name if snow is not None else None)


def _read_table(source: Path | bytes, name: str) -> pa.Table:
    try:
        table = pq.read_table(pa.BufferReader(source) if isinstance(source, bytes) else source)
    except (OSError, pa.ArrowException) as exc:
        raise ArchiveError(f"{name}: not a readable parquet file ({exc})") from exc
    return _plain_strings(table).combine_chunks()


def _plain_string_type(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(dtype):
        return pa.string()
    if pa.types.is_large_list(dtype) or pa.types.is_list(dtype):
        return pa.list_(_plain_string_type(dtype.value_type))
    return dtype


def _plain_strings(table: pa.Table) -> pa.Table:
    """Cast large_string (and lists of it) to string: the release files use plain strings,
    but a metadata.parquet rewritten by pandas >= 3 or polars uses large_string, which the
    vectorised path building does not mix with plain strings."""
    schema = pa.schema([f.with_type(_plain_string_type(f.type)) for f in table.schema])
    return table if schema.equals(table.schema) else table.cast(schema)


class V2Folders(Protocol):
    """What the archive's image folders hold (on disk, or in a tar stream)."""

    def band_problems(self, todo: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """patch_id -> (path, problem) for the (patch_id, folder) pairs whose folder is
        missing (:data:`FOLDER_MISSING`) or lacks band files."""

    def folders(self) -> Iterable[tuple[str, str, str]]:
        """(product, folder name, path) of every folder two levels below the patches
        folder (``BigEarthNet-S2/<product>/<name>``)."""


@dataclass
class V2Rows:
    """The metadata validated, before any image folder is looked at.

    Attributes:
        meta: the metadata files.
        paths: each row's patch folder.
        bad: patch_id -> (file, problem) of malformed rows (so far).
        labels_ok: rows with at least one label.
        excluded: the snow/cloud exclusions.
    """

    meta: V2Metadata
    paths: pa.ChunkedArray
    bad: dict[str, tuple[str, str]]
    labels_ok: pa.ChunkedArray
    excluded: list[dict[str, str]] = field(default_factory=list)

    def planned(self) -> dict[str, list[tuple[str, str, tuple[str, ...]]]]:
        """Per split, the rows that will be indexed if their folder is complete, sorted by
        patch_id: (patch_id, folder, labels in the original 19-class order)."""
        table = self.meta.table
        keep = pc.and_(pc.invert(pc.is_in(table["patch_id"], value_set=pa.array(
            list(self.bad), pa.string()))), self.labels_ok)
        ids = table["patch_id"].filter(keep).to_pylist()
        splits = table["split"].filter(keep).to_pylist()
        paths = self.paths.filter(keep).to_pylist()
        labels = _ordered_labels(table["labels"].filter(keep)).to_pylist()
        out: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {s: [] for s in SPLITS}
        for pid, split, path, names in zip(ids, splits, paths, labels, strict=True):
            out[split].append((pid, path, tuple(names)))
        return {s: sorted(rows) for s, rows in out.items()}


def validate(patches_dir: str, meta: V2Metadata) -> V2Rows:
    """Check every metadata row (format, labels, split, duplicates, snow/cloud overlap)."""
    table = meta.table
    paths = _paths(patches_dir, table["patch_id"])
    bad = _row_problems(table, meta.path)
    excluded: list[dict[str, str]] = []
    snow_cloud = meta.snow_cloud
    if snow_cloud is not None:
        dup = pc.is_in(snow_cloud["patch_id"], value_set=table["patch_id"])
        for pid in snow_cloud["patch_id"].filter(dup).to_pylist():
            bad.setdefault(pid, (meta.path, f"listed in both {V2_METADATA_FILE} and "
                                            f"{V2_SNOW_CLOUD_FILE}"))
        excluded += _snow_cloud_exclusions(patches_dir, snow_cloud.filter(pc.invert(dup)))
    labels_ok = pc.greater(pc.list_value_length(table["labels"]), 0)
    return V2Rows(meta, paths, bad, labels_ok, excluded)


def finish(patches_dir: str, rows: V2Rows, files: V2Folders | None) -> ScanResult:
    """The index: the validated rows, their folders checked when ``files`` is given."""
    table, meta = rows.meta.table, rows.meta
    bad = dict(rows.bad)
    rejected: list[dict[str, str]] = []
    excluded = list(rows.excluded)
    if files is not None:
        todo = [(p, q) for p, q in zip(table["patch_id"].to_pylist(), rows.paths.to_pylist(),
                                       strict=True) if p not in bad]
        bad.update(files.band_problems(todo))
        excluded += _unlisted_folders(files, table, meta.snow_cloud, rejected)
    is_bad = pc.is_in(table["patch_id"], value_set=pa.array(list(bad), pa.string()))
    rejected += [{"patch_id": pid, "path": str(path), "problem": problem}
                 for pid, (path, problem) in bad.items()]
    no_class = pc.and_(pc.invert(is_bad), pc.invert(rows.labels_ok))
    excluded += [{"patch_id": p, "reason": NO_CLASS, "path": q} for p, q in zip(
        table["patch_id"].filter(no_class).to_pylist(), rows.paths.filter(no_class).to_pylist(),
        strict=True)]
    keep = pc.and_(pc.invert(is_bad), rows.labels_ok)
    return ScanResult(_columns(table.filter(keep), rows.paths.filter(keep)), excluded,
                      rejected, "metadata",
                      {"metadata": meta.path, "snow_cloud_metadata": meta.snow_cloud_path})


def _paths(patches_dir: str, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """``<patches_dir>/<product>/<patch_id>``; product = patch_id without ``_xx_yy``."""
    product = pc.utf8_slice_codeunits(ids, 0, -6)
    return pc.binary_join_element_wise(str(patches_dir), product, ids, "/")


def _row_problems(table: pa.Table, metadata: str) -> dict[str, tuple[str, str]]:
    """patch_id -> (metadata file, problem) for malformed rows (format, labels, split, dups)."""
    ids = table["patch_id"]
    problems: dict[str, str] = {}
    bad_id = pc.invert(pc.match_substring_regex(ids, f"^{V2_PATCH_ID_PATTERN}$"))
    for pid in ids.filter(pc.fill_null(bad_id, True)).to_pylist():
        problems[pid] = (f"patch_id {pid!r} unlike the v2 format S2[AB]_MSIL2A_<YYYYMMDDTHHMMSS>"
                         "_N9999_R<orbit>_T<tile>_<xx>_<yy>")
    classes = pa.array(label_tables().classes19)
    flat = pc.list_flatten(table["labels"])
    unknown = pc.is_null(pc.index_in(flat, value_set=classes))
    if pc.any(unknown).as_py():
        parents = pc.list_parent_indices(table["labels"]).filter(unknown)
        for row in sorted(set(parents.to_pylist())):
            names = [n for n in table["labels"][row].as_py() if n not in classes.to_pylist()]
            problems.setdefault(ids[row].as_py(), f"unknown label name(s) {names}: not one of "
                                "the 19 BigEarthNet classes")
    bad_split = pc.invert(pc.is_in(table["split"], value_set=pa.array(SPLITS)))
    for pid, split in zip(ids.filter(bad_split).to_pylist(),
                          table["split"].filter(bad_split).to_pylist(), strict=True):
        problems.setdefault(pid, f"split {split!r} is not one of {list(SPLITS)}")
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    name = metadata.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    for pid, n in zip(dup.field("values").to_pylist(), dup.field("counts").to_pylist(),
                      strict=True):
        problems.setdefault(pid, f"duplicate patch_id: {n} rows in {name}; none of them indexed")
    return {pid: (metadata, problem) for pid, problem in problems.items()}


def _unlisted_folders(files: V2Folders, table: pa.Table, snow_cloud: pa.Table | None,
                      rejected: list[dict[str, str]]) -> list[dict[str, str]]:
    """Folders in the tree that no metadata row names: excluded, or rejected if misnamed."""
    known = set(table["patch_id"].to_pylist())
    if snow_cloud is not None:
        known |= set(snow_cloud["patch_id"].to_pylist())
    pattern = re.compile(V2_PATCH_ID_PATTERN)
    excluded = []
    for product, name, path in files.folders():
        if name in known:
            continue
        if pattern.fullmatch(name) and name.startswith(product):
            excluded.append({"patch_id": name, "reason": NOT_IN_METADATA, "path": path})
        else:
            rejected.append({"patch_id": name, "path": path, "problem": MISNAMED})
    return excluded


def _snow_cloud_exclusions(patches_dir: str, table: pa.Table) -> list[dict[str, str]]:
    reason = pc.if_else(table["contains_seasonal_snow"], FLAG_REASONS["contains_seasonal_snow"],
                        FLAG_REASONS["contains_cloud_or_shadow"]) \
        if "contains_seasonal_snow" in table.column_names \
        else pa.array(["seasonal snow or cloud"] * table.num_rows)
    paths = _paths(patches_dir, table["patch_id"])
    return [{"patch_id": p, "reason": r, "path": q} for p, r, q in zip(
        table["patch_id"].to_pylist(), reason.to_pylist(), paths.to_pylist(), strict=True)]


def _ordered_labels(labels: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each row's labels in the original 19-class order (the metadata sorts them by name)."""
    labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
    classes = pa.array(label_tables().classes19)
    idx = pc.index_in(pc.list_flatten(labels), value_set=classes)
    parent = pc.list_parent_indices(labels)
    order = pc.sort_indices(pa.table({"p": parent, "i": idx}),
                            sort_keys=[("p", "ascending"), ("i", "ascending")])
    names = classes.take(idx.take(order))
    lengths = pc.list_value_length(labels).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), names)


def _columns(table: pa.Table, paths: pa.ChunkedArray) -> dict[str, object]:
    ids = table["patch_id"]
    stamp = pc.utf8_slice_codeunits(ids, 11, 26)
    when = pc.assume_timezone(pc.strptime(stamp, format="%Y%m%dT%H%M%S", unit="s"), "UTC")
    tile = pc.struct_field(pc.extract_regex(ids, TILE_PATTERN.replace("(T", "(?P<tile>T", 1)),
                           [0])
    return {"patch_id": ids, "split": table["split"], "labels": _ordered_labels(table["labels"]),
            "path": paths, "format": pa.array(["v2"] * table.num_rows), "tile": tile,
            "acquisition_date": when, "country": table["country"],
            "labels43": pa.nulls(table.num_rows, pa.list_(pa.string()))}
