"""Index build: ``benscale ingest`` on the full official v2 metadata and on a big v1 tree.

* v2: the official ``metadata.parquet`` (480,038 rows) and the snow/cloud parquet from
  shared/bigearthnet/reference/v2, ingested with ``--no-check-files`` (the 66 GB of
  GeoTIFFs are not here: the per-patch folder checks are skipped, everything else is
  done: label mapping, splits, exclusions, index.parquet, ingest-report.json).
  Floor: reading the metadata parquet and writing a parquet of the same rows.
* v1: a tree of 50,000 patch folders (``--quick``: 300) with the true v1 names, 12 band
  files and the JSON each (hard links to the real samples' files, bench.archives),
  ingested WITH its structure checks (every folder listed, every JSON parsed), without
  official lists (deterministic split). Floor: listing every folder and reading every JSON
  file's bytes.

The command runs in-process (``benscale.cli.main``), output removed before each run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from bench.archives import V2_REFERENCE, v1_tree, v2_metadata_slice
from bench.common import (
    BenchFigure,
    Context,
    TimedWorkload,
    measure_group,
    profile_top,
    rate_figure,
)

NAME = "index_build"
KEYS = ("ingest_v2_metadata_vs_parquet_floor", "ingest_v1_tree_vs_listing_floor")


def ingest_workload(archive: Path, out: Path, extra: list[str], rows: int) -> TimedWorkload:
    """``benscale ingest ARCHIVE --out OUT EXTRA`` in-process, from an empty output folder."""
    from benscale.cli import main

    def run() -> float:
        rc = main(["ingest", str(archive), "--out", str(out), *extra])
        if rc != 0:
            raise RuntimeError(f"benscale ingest {archive} exited {rc}")
        return rows

    return TimedWorkload(run, setup=lambda: shutil.rmtree(out, ignore_errors=True))


def parquet_floor(archive: Path, out: Path, rows: int) -> Any:
    """Read the metadata parquet and write its rows again: the least an index build does."""
    def run() -> float:
        table = pd.read_parquet(archive / "metadata.parquet")
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "floor.parquet", index=False)
        return rows
    return run


def listing_floor(tree: Path, rows: int) -> Any:
    """List every patch folder and read each JSON's bytes: the I/O a v1 ingest cannot skip."""
    top = tree / "BigEarthNet-v1.0"

    def run() -> float:
        for entry in os.scandir(top):
            for f in os.scandir(entry.path):
                if f.name.endswith(".json"):
                    with open(f.path, "rb") as fh:
                        fh.read()
        return rows
    return run


def run(ctx: Context) -> tuple[list[BenchFigure], dict[str, Any]]:
    """Measure the two index-build figures (module docstring)."""
    if ctx.quick:
        v2_rows = 5000
        v2_archive = v2_metadata_slice(ctx.work / "v2-metadata-5000", v2_rows)
    else:
        v2_archive = V2_REFERENCE
        v2_rows = len(pd.read_parquet(V2_REFERENCE / "metadata.parquet", columns=["patch_id"]))
    n_v1 = ctx.size(300, 50_000)
    tree = v1_tree(ctx.work / f"v1-tree-{n_v1}", n_v1)
    out = ctx.work / "ingest-out"
    v2 = ingest_workload(v2_archive, out / "v2", ["--format", "v2", "--no-check-files"], v2_rows)
    v1 = ingest_workload(tree, out / "v1", ["--format", "v1"], n_v1)
    rates = measure_group({"v2": v2, "v2_floor": parquet_floor(v2_archive, out / "floor", v2_rows),
                           "v1": v1, "v1_floor": listing_floor(tree, n_v1)},
                          ctx.repeats, ctx.warmup)
    figures = [
        rate_figure("ingest_v2_metadata_vs_parquet_floor",
                    f"ingest v2 metadata ({v2_rows:,} rows, --no-check-files) vs "
                    "parquet read+write", rates["v2"], rates["v2_floor"],
                    "read + write the metadata parquet", "rows/s"),
        rate_figure("ingest_v1_tree_vs_listing_floor",
                    f"ingest v1 tree ({n_v1:,} folders, structure checked) vs listing",
                    rates["v1"], rates["v1_floor"], "list folders + read JSON bytes",
                    "patches/s"),
    ]
    v2.setup()
    v2.run()
    report = pd.read_json(out / "v2" / "ingest-report.json", typ="series")
    details: dict[str, Any] = {
        "v2_rows": v2_rows, "v1_folders": n_v1,
        "v2_counts": dict(report.get("counts", {})),
        "notes": [f"v2: {v2_rows:,} rows of the official metadata.parquet, --no-check-files "
                  "(no GeoTIFFs here); v1: "
                  f"{n_v1:,} folders of hard links to the real samples, every folder listed "
                  "and every JSON parsed; page cache warm; each build in-process (no "
                  "interpreter start-up)."],
    }
    if not ctx.quick:
        v2.setup()
        details["profile_ingest_v2"] = profile_top(v2.run)
        v1.setup()
        details["profile_ingest_v1"] = profile_top(v1.run)
    shutil.rmtree(out, ignore_errors=True)
    return figures, details
