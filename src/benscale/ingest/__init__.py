"""``benscale ingest``: check a BigEarthNet archive's structure and write its index.

Input (``ARCHIVE``): a folder holding ``BigEarthNet-v1.0/`` (v1) or ``BigEarthNet-S2/`` with
``metadata.parquet`` beside it (v2), one of those folders itself, or a ``.tar``,
``.tar.gz`` or ``.tar.zst`` of either (unpacked safely into ``OUT/unpacked/``; for v2 the
metadata may also sit beside the tar, as the release ships ``BigEarthNet-S2.tar.zst``).

Output: ``OUT/index.parquet`` (one row per usable patch, see docs/architecture.md section 2)
and ``OUT/ingest-report.json`` (counts per split, every excluded and rejected patch with its
reason). Ingest checks structure only (names, files present, JSON, labels, duplicates);
decoding pixels is ``benscale extract``'s job. Details and the split rule: docs/ingest.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benscale.atomic import write_text
from benscale.errors import ArchiveError, BadPatchError
from benscale.files.archive import detect_layout, is_tar
from benscale.files.archive_index import (
    DETERMINISTIC_SHARES,
    INGEST_REPORT_FILE,
    build_table,
    deterministic_split,
    ingest_report,
    report_json,
)
from benscale.files.archive_v1 import V1Lists, read_v1_lists
from benscale.files.index import INDEX_FILE, write_index
from benscale.ingest.unpack import Unpacked, unpack
from benscale.ingest.v1 import scan_v1
from benscale.ingest.v2 import scan_v2

__all__ = ["DETERMINISTIC_SHARES", "V1Lists", "configure_parser", "deterministic_split",
           "ingest", "read_v1_lists", "run"]

REPORT_FILE = INGEST_REPORT_FILE


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``benscale ingest``."""
    parser.add_argument("archive", type=Path,
                        help="archive folder, BigEarthNet-v1.0/ or BigEarthNet-S2/, or a "
                             ".tar/.tar.gz/.tar.zst of either")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder for index.parquet and ingest-report.json")
    parser.add_argument("--format", choices=("auto", "v1", "v2"), default="auto",
                        help="archive format (default: recognised from the layout)")
    parser.add_argument("--v1-lists", type=Path, default=None,
                        help="folder with the official v1 lists (train/val/test.csv and the "
                             "snow/cloud lists, plain or .bz2); default: v1-lists/ beside "
                             "BigEarthNet-v1.0/ if present, else the deterministic split")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 2, naming the file) if any patch is rejected")
    parser.add_argument("--no-check-files", dest="check_files", action="store_false",
                        help="trust the metadata: do not list patch folders for band files "
                             "(v2: the image folders need not be present; for benchmarks "
                             "and archives on slow file systems)")
    parser.add_argument("--workers", type=int, default=min(16, 4 * (os.cpu_count() or 1)),
                        help="threads listing folders and reading JSON (default: 4 per "
                             "core, at most 16)")


def run(args: argparse.Namespace) -> int:
    """Ingest the archive; see the module docstring."""
    report = ingest(args.archive, args.out, fmt=args.format, v1_lists=args.v1_lists,
                    strict=args.strict, check_files=args.check_files, workers=args.workers)
    counts = ", ".join(f"{s} {n}" for s, n in report["counts"].items())
    print(f"benscale ingest: {report['n_indexed']} patches indexed ({counts}); "
          f"{len(report['excluded'])} excluded, {len(report['rejected'])} rejected; "
          f"report: {Path(args.out) / REPORT_FILE}")
    return 0


def ingest(archive: Path, out: Path, fmt: str = "auto", v1_lists: Path | None = None,
           strict: bool = False, check_files: bool = True, workers: int = 4) -> dict:
    """Index ``archive`` into ``out``; return the report (also written to the report file).

    Raises:
        ArchiveError: the archive is missing, empty, unrecognisable, truncated or corrupt.
        BadPatchError: with ``strict``, the first rejected patch (the report is written).
    """
    start = time.perf_counter()
    archive, out = Path(archive).absolute(), Path(out).absolute()
    if not archive.exists():
        raise ArchiveError(f"{archive}: no such file or folder")
    unpacked = unpack(archive, out / "unpacked") if is_tar(archive) else Unpacked(archive)
    if archive.is_file() and not is_tar(archive):
        raise ArchiveError(f"{archive}: not a folder nor a .tar/.tar.gz/.tar.zst archive")
    try:
        layout = detect_layout(unpacked.root, fmt,
                               beside=archive.parent if unpacked.root != archive else None)
    except ArchiveError as exc:
        if unpacked.root == archive:
            raise
        raise ArchiveError(f"{archive} (unpacked into {unpacked.root}): {exc}") from exc
    if layout.format == "v1":
        lists_dir = v1_lists or layout.lists_dir
        lists = read_v1_lists(lists_dir) if lists_dir else None
        result = scan_v1(layout.patches_dir, lists, check_files, workers)
    else:
        result = scan_v2(layout.patches_dir, layout.metadata, check_files, workers)
    result.rejected = unpacked.refused + result.rejected
    table = build_table(result.columns)
    report = ingest_report(str(archive), layout.format, result, table, check_files)
    report["ingest_time_s"] = round(time.perf_counter() - start, 3)
    write_text(out / REPORT_FILE, report_json(report))
    if strict and result.rejected:
        first = result.rejected[0]
        raise BadPatchError(first["patch_id"], first["path"],
                            f"{first['problem']} (--strict: {len(result.rejected)} patch(es) "
                            f"rejected; see {out / REPORT_FILE}; no index written)")
    write_index(out / INDEX_FILE, table)
    return report
