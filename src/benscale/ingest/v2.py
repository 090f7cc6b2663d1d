"""BigEarthNet v2.0 (reBEN): everything from metadata.parquet, vectorised over Arrow arrays.

The 480,038 rows of the real metadata are validated (patch_id format, known labels, split
values, duplicates), their labels put into the original 19-class order, and their tile,
date and folder derived from the patch_id, without a Python loop over rows. Checking the
files costs one directory listing per patch (thread pool); ``--no-check-files`` skips it
and trusts the metadata (benchmarks; archives on slow file systems).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from benscale.bigearthnet import (
    BAND_NAMES,
    SPLITS,
    TILE_PATTERN,
    V2_METADATA_FILE,
    V2_PATCH_ID_PATTERN,
    V2_SNOW_CLOUD_FILE,
    label_tables,
)
from benscale.errors import ArchiveError
from benscale.ingest.common import NO_CLASS, ScanResult

REQUIRED = ("patch_id", "labels", "split")
#: Snow/cloud parquet flag -> exclusion reason (the same words as v1's lists).
FLAG_REASONS = {"contains_seasonal_snow": "seasonal snow",
                "contains_cloud_or_shadow": "cloud or shadow"}
NOT_IN_METADATA = f"folder not in {V2_METADATA_FILE}"
CHUNK = 256


def scan_v2(patches_dir: Path, metadata: Path, check_files: bool, workers: int) -> ScanResult:
    """Index a v2 archive; see the module docstring."""
    table = _read_metadata(metadata)
    rejected: list[dict[str, str]] = []
    excluded: list[dict[str, str]] = []
    paths = _paths(patches_dir, table["patch_id"])
    bad = _row_problems(table, metadata)
    snow_cloud = _read_snow_cloud(metadata.parent / V2_SNOW_CLOUD_FILE)
    if snow_cloud is not None:
        dup = pc.is_in(snow_cloud["patch_id"], value_set=table["patch_id"])
        for pid in snow_cloud["patch_id"].filter(dup).to_pylist():
            bad.setdefault(pid, (metadata, f"listed in both {V2_METADATA_FILE} and "
                                           f"{V2_SNOW_CLOUD_FILE}"))
        excluded += _snow_cloud_exclusions(patches_dir, snow_cloud.filter(pc.invert(dup)))
    labels_ok = pc.greater(pc.list_value_length(table["labels"]), 0)
    if check_files:
        bad.update(_check_folders(patches_dir, table["patch_id"], paths, bad, workers))
        excluded += _unlisted_folders(patches_dir, table, snow_cloud, rejected)
    is_bad = pc.is_in(table["patch_id"], value_set=pa.array(list(bad), pa.string()))
    rejected += [{"patch_id": pid, "path": str(path), "problem": problem}
                 for pid, (path, problem) in bad.items()]
    no_class = pc.and_(pc.invert(is_bad), pc.invert(labels_ok))
    excluded += [{"patch_id": p, "reason": NO_CLASS, "path": q} for p, q in zip(
        table["patch_id"].filter(no_class).to_pylist(), paths.filter(no_class).to_pylist(),
        strict=True)]
    keep = pc.and_(pc.invert(is_bad), labels_ok)
    return ScanResult(_columns(table.filter(keep), paths.filter(keep)), excluded, rejected,
                      "metadata", {"metadata": str(metadata),
                                   "snow_cloud_metadata": str(metadata.parent / V2_SNOW_CLOUD_FILE)
                                   if snow_cloud is not None else None})


def _read_metadata(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ArchiveError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ArchiveError(f"{path}: missing column(s) {missing}; expected the reBEN "
                           f"{V2_METADATA_FILE} (patch_id, labels, split, country, ...)")
    if table.num_rows == 0:
        raise ArchiveError(f"{path}: the metadata has no rows; the archive is empty")
    if "country" not in table.column_names:
        table = table.append_column("country", pa.nulls(table.num_rows, pa.string()))
    return _plain_strings(table).combine_chunks()


def _read_snow_cloud(path: Path) -> pa.Table | None:
    if not path.is_file():
        return None
    table = pq.read_table(path)
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


def _paths(patches_dir: Path, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """``<patches_dir>/<product>/<patch_id>``; product = patch_id without ``_xx_yy``."""
    product = pc.utf8_slice_codeunits(ids, 0, -6)
    return pc.binary_join_element_wise(str(patches_dir), product, ids, "/")


def _row_problems(table: pa.Table, metadata: Path) -> dict[str, tuple[Path, str]]:
    """patch_id -> (metadata file, problem) for malformed rows (format, labels, split, dups)."""
    problems = {pid: (metadata, problem) for pid, problem in _row_messages(table, metadata).items()}
    return problems


def _row_messages(table: pa.Table, metadata: Path) -> dict[str, str]:
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
    for pid, n in zip(dup.field("values").to_pylist(), dup.field("counts").to_pylist(),
                      strict=True):
        problems.setdefault(pid, f"duplicate patch_id: {n} rows in {metadata.name}; "
                            "none of them indexed")
    return problems


def _check_folders(patches_dir: Path, ids: pa.ChunkedArray, paths: pa.ChunkedArray,
                   bad: dict, workers: int) -> dict[str, tuple[str, str]]:
    """patch_id -> (path, problem) for rows whose folder or band files are missing."""
    if not patches_dir.is_dir():
        raise ArchiveError(f"{patches_dir}: folder missing beside {V2_METADATA_FILE}; unpack "
                           "BigEarthNet-S2.tar.zst there, or pass --no-check-files to index "
                           "the metadata alone")
    todo = [(p, q) for p, q in zip(ids.to_pylist(), paths.to_pylist(), strict=True)
            if p not in bad]
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    problems: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(todo), desc="check v2 files", unit="patch", mininterval=2,
                 disable=len(todo) < 5000 or None) as bar:
        for part in pool.map(_check_chunk, chunks):
            problems.update(part)
            bar.update(CHUNK)
    return problems


def _check_chunk(chunk: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    problems = {}
    for pid, folder in chunk:
        try:
            present = set(os.listdir(folder))
        except FileNotFoundError:
            problems[pid] = (folder, f"metadata row whose folder is missing (row of "
                                     f"{V2_METADATA_FILE})")
            continue
        missing = [b for b in BAND_NAMES if f"{pid}_{b}.tif" not in present]
        if missing:
            problems[pid] = (f"{folder}/{pid}_{missing[0]}.tif",
                             f"missing band file(s) {', '.join(missing)}")
    return problems


def _unlisted_folders(patches_dir: Path, table: pa.Table, snow_cloud: pa.Table | None,
                      rejected: list[dict[str, str]]) -> list[dict[str, str]]:
    """Folders in the tree that no metadata row names: excluded, or rejected if misnamed."""
    import re

    known = set(table["patch_id"].to_pylist())
    if snow_cloud is not None:
        known |= set(snow_cloud["patch_id"].to_pylist())
    pattern = re.compile(V2_PATCH_ID_PATTERN)
    excluded = []
    for product in os.scandir(patches_dir):
        if not product.is_dir():
            continue
        for entry in os.scandir(product.path):
            if not entry.is_dir() or entry.name in known:
                continue
            if pattern.fullmatch(entry.name) and entry.name.startswith(product.name):
                excluded.append({"patch_id": entry.name, "reason": NOT_IN_METADATA,
                                 "path": entry.path})
            else:
                rejected.append({"patch_id": entry.name, "path": entry.path,
                                 "problem": "folder name unlike the v2 format <product>/"
                                 "S2[AB]_MSIL2A_<YYYYMMDDTHHMMSS>_N9999_R<orbit>_T<tile>_<xx>_<yy>"
                                 "; not indexed"})
    return excluded


def _snow_cloud_exclusions(patches_dir: Path, table: pa.Table) -> list[dict[str, str]]:
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
