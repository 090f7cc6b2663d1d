"""BigEarthNet v1.0: scan the patch folders, read each JSON once, apply the official lists.

Per patch the work is one directory listing (all 12 band files and the JSON present?) and
one JSON parse; everything else (tile, date, splits) is vectorised over Arrow arrays. The
listings and parses run in a thread pool: on a parallel file system (Lustre, GPFS) the
metadata round trips dominate and overlap well; locally a few threads cost nothing.
"""

from __future__ import annotations

import bz2
import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from benscale.bigearthnet import (
    BAND_NAMES,
    SPLITS,
    TILE_PATTERN,
    V1_DATE_FORMAT,
    V1_EXCLUSION_FILES,
    V1_JSON_SUFFIX,
    V1_NAME_PATTERN,
    V1_SPLIT_FILES,
    label_tables,
)
from benscale.errors import ArchiveError, ConfigError
from benscale.ingest.common import (
    NO_CLASS,
    NOT_IN_SPLIT,
    ScanResult,
    deterministic_split,
    order_classes,
    order_labels43,
)

_NAME = re.compile(V1_NAME_PATTERN)
#: Patches per task of the thread pool (amortises the pool's per-task overhead).
CHUNK = 256


@dataclass(frozen=True)
class V1Lists:
    """The official v1 lists: split -> names, exclusion reason -> names."""

    splits: dict[str, list[str]]
    exclusions: dict[str, list[str]]
    folder: Path


def read_list(path: Path) -> list[str]:
    """One official list: plain or .bz2, no header, one name per line, CRLF tolerated."""
    data = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    return [line for line in data.decode("ascii").splitlines() if line.strip()]


def _find_list(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.bz2"):
        if candidate.is_file():
            return candidate
    return None


def read_v1_lists(folder: Path) -> V1Lists:
    """Read the official splits (required) and snow/cloud lists (optional) of ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--v1-lists {folder}: not a folder; point it at the folder with "
                          "train.csv, val.csv, test.csv (plain or .bz2)")
    splits, exclusions = {}, {}
    for split, name in V1_SPLIT_FILES.items():
        path = _find_list(folder, name)
        if path is None:
            raise ConfigError(f"{folder}: {name} (or {name}.bz2) is missing; the official "
                              "v1 split lists are train.csv, val.csv and test.csv")
        splits[split] = read_list(path)
    for reason, name in V1_EXCLUSION_FILES.items():
        path = _find_list(folder, name)
        exclusions[reason] = read_list(path) if path else []
    return V1Lists(splits, exclusions, folder)


def scan_v1(patches_dir: Path, lists: V1Lists | None, check_files: bool,
            workers: int) -> ScanResult:
    """Index a ``BigEarthNet-v1.0/`` folder; see the module docstring."""
    names, rejected = _patch_folders(patches_dir)
    if not names and not rejected:
        raise ArchiveError(f"{patches_dir}: the archive is empty (no patch folders)")
    records = _read_all(patches_dir, names, check_files, workers)
    good = [r for r in records if "problem" not in r]
    rejected += [r for r in records if "problem" in r]
    return _assign(patches_dir, good, rejected, lists)


def _patch_folders(patches_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    names, rejected = [], []
    with os.scandir(patches_dir) as it:
        for entry in it:
            if not entry.is_dir():
                continue
            if _NAME.fullmatch(entry.name):
                names.append(entry.name)
            else:
                rejected.append({"patch_id": entry.name, "path": entry.path,
                                 "problem": "folder name unlike the v1 format "
                                 "S2[AB]_MSIL2A_<YYYYMMDD>T<HHMMSS>_<col>_<row>; not indexed"})
    names.sort()
    return names, rejected


def _read_all(patches_dir: Path, names: list[str], check_files: bool,
              workers: int) -> list[dict]:
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    out: list[dict] = []
    with tqdm(total=len(names), desc="ingest v1", unit="patch", mininterval=2,
              disable=len(names) < 5000 or None) as bar:
        def work(chunk: list[str]) -> list[dict]:
            return [read_patch(patches_dir / n, n, check_files) for n in chunk]

        if workers <= 1:
            results: Iterable[list[dict]] = map(work, chunks)
        else:
            pool = ThreadPoolExecutor(workers)
            results = pool.map(work, chunks)
        for part in results:
            out.extend(part)
            bar.update(len(part))
        if workers > 1:
            pool.shutdown()
    return out


def read_patch(folder: Path, name: str, check_files: bool = True) -> dict:
    """Check one patch folder's structure and read its JSON.

    Returns ``{"patch_id", "labels" (19-class, original order), "tile_source",
    "acquisition_date", "path"}`` or a rejection ``{"patch_id", "path", "problem"}``.
    Pixels are not decoded here: that is ``benscale extract``'s job.
    """
    json_path = folder / f"{name}{V1_JSON_SUFFIX}"
    if check_files:
        present = set(os.listdir(folder))
        missing = [b for b in BAND_NAMES if f"{name}_{b}.tif" not in present]
        if missing:
            return _reject(name, folder / f"{name}_{missing[0]}.tif",
                           f"missing band file(s) {', '.join(missing)}")
    try:
        meta = json.loads(json_path.read_bytes())
    except FileNotFoundError:
        return _reject(name, json_path, "missing metadata JSON")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _reject(name, json_path, f"JSON does not parse ({exc})")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return _reject(name, json_path, "JSON lacks `labels` (a list of label names)")
    mapping = label_tables().map43_to_19
    unknown = [x for x in labels if x not in mapping]
    if unknown:
        return _reject(name, json_path, f"unknown label name(s) {unknown}: not one of the "
                       "43 BigEarthNet labels (labels.json)")
    return {"patch_id": name, "path": str(folder),
            "labels": order_classes({mapping[x] for x in labels if mapping[x]}),
            "labels43": order_labels43(labels),
            "tile_source": _str_or_none(meta.get("tile_source")),
            "acquisition_date": _str_or_none(meta.get("acquisition_date"))}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _reject(name: str, path: Path, problem: str) -> dict[str, str]:
    return {"patch_id": name, "path": str(path), "problem": problem}


def _assign(patches_dir: Path, good: list[dict], rejected: list[dict[str, str]],
            lists: V1Lists | None) -> ScanResult:
    """Apply exclusions and splits: official lists when given, else the hash rule."""
    split_of, listed_twice = _split_lookup(lists) if lists else ({}, {})
    excluded_by = {n: r for r, names in (lists.exclusions if lists else {}).items()
                   for n in names}
    kept, excluded = [], []
    for rec in good:
        name = rec["patch_id"]
        if name in listed_twice:
            rejected.append(_reject(name, lists.folder, f"listed in {listed_twice[name]}"))
            continue
        reason = excluded_by.get(name) or (None if rec["labels"] else NO_CLASS)
        split = (split_of.get(name) if lists else deterministic_split(name))
        if reason is None and split is None:
            reason = NOT_IN_SPLIT
        if reason:
            excluded.append({"patch_id": name, "reason": reason, "path": rec["path"]})
            continue
        rec["split"] = split
        kept.append(rec)
    result = ScanResult(_columns(kept), excluded, rejected,
                        "official" if lists else "deterministic")
    if lists:
        present = {r["patch_id"] for r in good}
        absent = sorted(n for n in split_of if n not in present)
        result.notes = {"lists": str(lists.folder), "listed_not_in_archive": len(absent),
                        "listed_not_in_archive_examples": absent[:5]}
    return result


def _split_lookup(lists: V1Lists) -> tuple[dict[str, str], dict[str, str]]:
    split_of: dict[str, str] = {}
    twice: dict[str, str] = {}
    for split in SPLITS:
        for name in lists.splits[split]:
            if name in split_of and split_of[name] != split:
                twice[name] = f"{V1_SPLIT_FILES[split_of[name]]} and {V1_SPLIT_FILES[split]}"
            split_of[name] = split
    return split_of, twice


def _columns(kept: list[dict]) -> dict[str, object]:
    """Index columns; tile and date parsed vectorised from the JSON strings."""
    sources = pa.array([r["tile_source"] for r in kept], type=pa.string())
    tile = pc.struct_field(pc.extract_regex(sources, f".*{TILE_PATTERN}.*".replace(
        "(T", "(?P<tile>T", 1)), [0])
    dates = pa.array([r["acquisition_date"] for r in kept], type=pa.string())
    when = pc.assume_timezone(pc.strptime(dates, format=V1_DATE_FORMAT, unit="s",
                                          error_is_null=True), "UTC")
    return {"patch_id": [r["patch_id"] for r in kept], "split": [r["split"] for r in kept],
            "labels": [r["labels"] for r in kept], "path": [r["path"] for r in kept],
            "format": ["v1"] * len(kept), "tile": tile, "acquisition_date": when,
            "country": pa.nulls(len(kept), pa.string()),
            "labels43": [r["labels43"] for r in kept]}
