"""BigEarthNet v1.0 as published: the official lists, each patch's labels JSON, and the
rules that turn them into index rows (docs/ingest.md).

No file system here: the callers bring the bytes (``benscale ingest`` from folders on disk,
``benscale extract ARCHIVE`` from members of the tar stream), so both apply the same rules
and write the same index.
"""

from __future__ import annotations

import bz2
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from benscale.bigearthnet import (
    SPLITS,
    TILE_PATTERN,
    V1_DATE_FORMAT,
    V1_EXCLUSION_FILES,
    V1_NAME_PATTERN,
    V1_SPLIT_FILES,
    label_tables,
)
from benscale.errors import ConfigError
from benscale.files.archive_index import (
    NO_CLASS,
    NOT_IN_SPLIT,
    ScanResult,
    deterministic_split,
    missing_bands,
    order_classes,
    order_labels43,
)

_NAME = re.compile(V1_NAME_PATTERN)
#: Problem of a folder in BigEarthNet-v1.0/ named unlike a patch.
MISNAMED = ("folder name unlike the v1 format S2[AB]_MSIL2A_<YYYYMMDD>T<HHMMSS>_<col>_<row>; "
            "not indexed")


def is_v1_name(name: str) -> bool:
    """Whether ``name`` is a v1 patch folder name."""
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class V1Lists:
    """The official v1 lists: split -> names, exclusion reason -> names.

    ``folder`` names where they came from (a folder, or ``ARCHIVE:v1-lists`` inside a tar).
    """

    splits: dict[str, list[str]]
    exclusions: dict[str, list[str]]
    folder: Path | str


def parse_list(data: bytes, compressed: bool) -> list[str]:
    """One official list: plain or bzip2, no header, one name per line, CRLF tolerated."""
    data = bz2.decompress(data) if compressed else data
    return [line for line in data.decode("ascii").splitlines() if line.strip()]


def read_list(path: Path) -> list[str]:
    """One official list file (plain or .bz2)."""
    return parse_list(path.read_bytes(), path.suffix == ".bz2")


def read_v1_lists(folder: Path) -> V1Lists:
    """Read the official splits (required) and snow/cloud lists (optional) of ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--v1-lists {folder}: not a folder; point it at the folder with "
                          "train.csv, val.csv, test.csv (plain or .bz2)")

    def read(name: str) -> bytes | None:
        path = folder / name
        return path.read_bytes() if path.is_file() else None

    return lists_from(read, folder)


def lists_from(read: Callable[[str], bytes | None], folder: Path | str) -> V1Lists:
    """The lists from ``read(file name) -> bytes or None`` (a folder, or a tar's members).

    Raises:
        ConfigError: a split list is missing, naming ``folder``.
    """
    def find(name: str) -> list[str] | None:
        for candidate in (name, f"{name}.bz2"):
            data = read(candidate)
            if data is not None:
                return parse_list(data, candidate.endswith(".bz2"))
        return None

    splits, exclusions = {}, {}
    for split, name in V1_SPLIT_FILES.items():
        names = find(name)
        if names is None:
            raise ConfigError(f"{folder}: {name} (or {name}.bz2) is missing; the official "
                              "v1 split lists are train.csv, val.csv and test.csv")
        splits[split] = names
    for reason, name in V1_EXCLUSION_FILES.items():
        exclusions[reason] = find(name) or []
    return V1Lists(splits, exclusions, folder)


def json_record(name: str, json_path: str, data: bytes | None) -> dict:
    """What a patch's labels JSON says: ``{"patch_id", "labels" (19-class, original order),
    "labels43", "tile_source", "acquisition_date"}``, or a rejection ``{"patch_id", "path",
    "problem"}`` (``data`` None: the JSON is missing)."""
    if data is None:
        return reject(name, json_path, "missing metadata JSON")
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return reject(name, json_path, f"JSON does not parse ({exc})")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return reject(name, json_path, "JSON lacks `labels` (a list of label names)")
    mapping = label_tables().map43_to_19
    unknown = [x for x in labels if x not in mapping]
    if unknown:
        return reject(name, json_path, f"unknown label name(s) {unknown}: not one of the "
                      "43 BigEarthNet labels (labels.json)")
    return {"patch_id": name,
            "labels": order_classes({mapping[x] for x in labels if mapping[x]}),
            "labels43": order_labels43(labels),
            "tile_source": _str_or_none(meta.get("tile_source")),
            "acquisition_date": _str_or_none(meta.get("acquisition_date"))}


def patch_record(name: str, folder: str, present: set[str] | None, meta: dict) -> dict:
    """One patch folder checked: its record (with ``path``) or its rejection.

    Args:
        name: the folder name (= patch id).
        folder: the folder's path as reported (on disk, or ``ARCHIVE:member``).
        present: file names in the folder; None skips the band check (``--no-check-files``).
        meta: :func:`json_record` of the folder's JSON.
    """
    if present is not None:
        gap = missing_bands(name, folder, present)
        if gap:
            return reject(name, gap[0], gap[1])
    if "problem" in meta:
        return meta
    return {**meta, "path": folder}


def reject(name: str, path: str | Path, problem: str) -> dict[str, str]:
    """A rejection entry of the ingest report."""
    return {"patch_id": name, "path": str(path), "problem": problem}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class V1Rules:
    """Exclusions and splits: the official lists when given, else the hash rule."""

    def __init__(self, lists: V1Lists | None) -> None:
        """Index the lists once (name -> split, name -> exclusion reason)."""
        self.lists = lists
        self.split_of: dict[str, str] = {}
        self.twice: dict[str, str] = {}
        self.excluded_by: dict[str, str] = {}
        if lists is None:
            return
        for split in SPLITS:
            for name in lists.splits[split]:
                if name in self.split_of and self.split_of[name] != split:
                    self.twice[name] = (f"{V1_SPLIT_FILES[self.split_of[name]]} and "
                                        f"{V1_SPLIT_FILES[split]}")
                self.split_of[name] = split
        self.excluded_by = {n: r for r, names in lists.exclusions.items() for n in names}

    def planned(self) -> dict[str, list[str]] | None:
        """With lists, the patches each split will hold if present and sound, sorted; None
        without lists (then the archive itself says which patches there are)."""
        if self.lists is None:
            return None
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        for name, split in self.split_of.items():
            if name not in self.twice and name not in self.excluded_by:
                out[split].append(name)
        return {s: sorted(names) for s, names in out.items()}

    def fate(self, name: str, labels: list[str]) -> tuple[str, str]:
        """What becomes of a sound patch: ``("split", split)``, ``("excluded", reason)`` or
        ``("rejected", problem)``."""
        if name in self.twice:
            return "rejected", f"listed in {self.twice[name]}"
        reason = self.excluded_by.get(name) or (None if labels else NO_CLASS)
        split = self.split_of.get(name) if self.lists else deterministic_split(name)
        if reason is None and split is None:
            reason = NOT_IN_SPLIT
        return ("excluded", reason) if reason else ("split", split)


def assign(records: list[dict], rejected: list[dict[str, str]],
           lists: V1Lists | None) -> ScanResult:
    """The index of the checked patch folders (``records``: :func:`patch_record` results,
    rejections included) and the rejections found before them (misnamed folders...)."""
    good = [r for r in records if "problem" not in r]
    rejected = rejected + [r for r in records if "problem" in r]
    rules = V1Rules(lists)
    kept, excluded = [], []
    for rec in good:
        name = rec["patch_id"]
        kind, value = rules.fate(name, rec["labels"])
        if kind == "rejected":
            rejected.append(reject(name, lists.folder, value))
        elif kind == "excluded":
            excluded.append({"patch_id": name, "reason": value, "path": rec["path"]})
        else:
            kept.append({**rec, "split": value})
    result = ScanResult(_columns(kept), excluded, rejected,
                        "official" if lists else "deterministic")
    if lists:
        present = {r["patch_id"] for r in good}
        absent = sorted(n for n in rules.split_of if n not in present)
        result.notes = {"lists": str(lists.folder), "listed_not_in_archive": len(absent),
                        "listed_not_in_archive_examples": absent[:5]}
    return result


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
