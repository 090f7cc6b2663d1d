"""BigEarthNet v1.0 on disk: list the patch folders, read each JSON once, apply the lists.

Per patch the work is one directory listing (all 12 band files and the JSON present?) and
one JSON parse; the rules (labels, splits, exclusions) are :mod:`benscale.files.archive_v1`,
shared with the streaming extraction. The listings and parses run in a thread pool: on a
parallel file system (Lustre, GPFS) the metadata round trips dominate and overlap well;
locally a few threads cost nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from benscale.bigearthnet import V1_JSON_SUFFIX
from benscale.errors import ArchiveError
from benscale.files.archive_index import ScanResult
from benscale.files.archive_v1 import (
    MISNAMED,
    V1Lists,
    assign,
    is_v1_name,
    json_record,
    patch_record,
    reject,
)

#: Patches per task of the thread pool (amortises the pool's per-task overhead).
CHUNK = 256


def scan_v1(patches_dir: Path, lists: V1Lists | None, check_files: bool,
            workers: int) -> ScanResult:
    """Index a ``BigEarthNet-v1.0/`` folder; see the module docstring."""
    names, rejected = _patch_folders(patches_dir)
    if not names and not rejected:
        raise ArchiveError(f"{patches_dir}: the archive is empty (no patch folders)")
    records = _read_all(patches_dir, names, check_files, workers)
    return assign(records, rejected, lists)


def _patch_folders(patches_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    names, rejected = [], []
    with os.scandir(patches_dir) as it:
        for entry in it:
            if not entry.is_dir():
                continue
            if is_v1_name(entry.name):
                names.append(entry.name)
            else:
                rejected.append(reject(entry.name, entry.path, MISNAMED))
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
    """Check one patch folder's structure and read its JSON (see
    :func:`benscale.files.archive_v1.patch_record`). Pixels are not decoded here: that is
    ``benscale extract``'s job."""
    json_path = folder / f"{name}{V1_JSON_SUFFIX}"
    present = set(os.listdir(folder)) if check_files else None
    try:
        data: bytes | None = json_path.read_bytes()
    except FileNotFoundError:
        data = None
    return patch_record(name, str(folder), present, json_record(name, str(json_path), data))
