"""BigEarthNet v2.0 (reBEN) on disk: the metadata rules of :mod:`benscale.files.archive_v2`,
with the image folders listed from the unpacked tree.

Checking the files costs one directory listing per patch (thread pool); ``--no-check-files``
skips it and trusts the metadata (benchmarks; archives on slow file systems).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from benscale.bigearthnet import V2_METADATA_FILE
from benscale.errors import ArchiveError
from benscale.files.archive_index import ScanResult, missing_bands
from benscale.files.archive_v2 import FOLDER_MISSING, V2Metadata, finish, validate

CHUNK = 256


def scan_v2(patches_dir: Path, metadata: Path, check_files: bool, workers: int) -> ScanResult:
    """Index a v2 archive; see the module docstring."""
    rows = validate(str(patches_dir), V2Metadata.read(metadata))
    return finish(str(patches_dir), rows,
                  DiskFolders(patches_dir, workers) if check_files else None)


class DiskFolders:
    """The image folders of an unpacked v2 archive (a ``V2Folders``)."""

    def __init__(self, patches_dir: Path, workers: int) -> None:
        """Folders below ``patches_dir``, listed with ``workers`` threads."""
        self.patches_dir, self.workers = patches_dir, workers

    def band_problems(self, todo: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """patch_id -> (path, problem) for rows whose folder or band files are missing."""
        if not self.patches_dir.is_dir():
            raise ArchiveError(f"{self.patches_dir}: folder missing beside {V2_METADATA_FILE};"
                               " unpack BigEarthNet-S2.tar.zst there, or pass --no-check-files"
                               " to index the metadata alone")
        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        problems: dict[str, tuple[str, str]] = {}
        with ThreadPoolExecutor(max(1, self.workers)) as pool, \
                tqdm(total=len(todo), desc="check v2 files", unit="patch", mininterval=2,
                     disable=len(todo) < 5000 or None) as bar:
            for part in pool.map(_check_chunk, chunks):
                problems.update(part)
                bar.update(CHUNK)
        return problems

    def folders(self) -> Iterator[tuple[str, str, str]]:
        """(product, name, path) of every folder two levels down."""
        for product in os.scandir(self.patches_dir):
            if not product.is_dir():
                continue
            for entry in os.scandir(product.path):
                if entry.is_dir():
                    yield product.name, entry.name, entry.path


def _check_chunk(chunk: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    problems = {}
    for pid, folder in chunk:
        try:
            present = set(os.listdir(folder))
        except FileNotFoundError:
            problems[pid] = (folder, FOLDER_MISSING)
            continue
        gap = missing_bands(pid, folder, present)
        if gap:
            problems[pid] = gap
    return problems
