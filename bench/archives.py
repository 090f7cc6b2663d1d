"""Benchmark inputs built from the REAL BigEarthNet patches in shared/, not from synth.

Read speed depends on how the GeoTIFFs are encoded (uncompressed strips, header size), so
the extraction and loader benchmarks use copies of the three real v1 patches, renamed to
unique v1 names, rather than files written by our own synthesiser. The copies are real
files (not links), so the page cache holds N distinct patches as it would for N real ones.

Also here: a big v1 folder TREE for the index-build benchmark, whose band files and JSON
are hard links to the real sample files (50,000 folders x 13 files would otherwise be
~10 GB); the tree has exactly the structure and names ingest walks.

And a synthetic v2 RELEASE (``BigEarthNet-S2.tar.zst`` with metadata.parquet beside it) for
the streaming benchmark, which needs the v2 layout inside a tar; its GeoTIFFs come from
``benscale synth`` (GDAL-written, the real files' sizes and layout).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tarfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import zstandard

from bench.common import SHARED
from benscale.atomic import write_text
from benscale.bigearthnet import BAND_NAMES, label_tables
from benscale.cli import main

SAMPLES = SHARED / "bigearthnet" / "samples" / "v1" / "BigEarthNet-v1.0"
V2_REFERENCE = SHARED / "bigearthnet" / "reference" / "v2"
#: torchgeo's BigEarthNet expects these split files in its root (lines "s2name,s1name").
TORCHGEO_SPLIT_FILES = ("bigearthnet-train.csv", "bigearthnet-val.csv", "bigearthnet-test.csv")


def sample_folders() -> list[Path]:
    """The three real v1 patch folders."""
    folders = sorted(p for p in SAMPLES.iterdir() if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"{SAMPLES}: no real BigEarthNet samples (set BENSCALE_SHARED)")
    return folders


def v1_name(source: str, i: int) -> str:
    """A unique, valid v1 folder name derived from a real one: same product, new col/row."""
    product = source.rsplit("_", 2)[0]
    return f"{product}_{i // 1000}_{i % 1000}"


def _split_of(i: int) -> str:
    """80 % train, 10 % validation, 10 % test, interleaved (every split gets patches early)."""
    return {8: "validation", 9: "test"}.get(i % 10, "train")


def _is_cached(root: Path, n: int) -> bool:
    """Whether ``root`` already holds a complete build of ``n`` patches (see ``.complete``)."""
    done = root / ".complete"
    return done.exists() and done.read_text() == str(n)


def _fresh_top(root: Path) -> Path:
    """Empty ``root`` and create its ``BigEarthNet-v1.0/`` folder."""
    shutil.rmtree(root, ignore_errors=True)
    top = root / "BigEarthNet-v1.0"
    top.mkdir(parents=True)
    return top


def patch_archive(root: Path, n: int) -> Path:
    """A v1 archive of ``n`` real patches (copied) laid out for BOTH readers; returns root.

    ``root/BigEarthNet-v1.0/<name>/...`` is the published layout (benscale) and also
    torchgeo's expected ``directory``; ``root/bigearthnet-*.csv`` are torchgeo's split
    files; ``root/index.parquet`` is a benscale index (docs/architecture.md section 2)
    naming the same folders, so both readers see exactly the same patches.
    """
    if _is_cached(root, n):
        return root
    top = _fresh_top(root)
    sources = sample_folders()
    rows = []
    for i in range(n):
        src = sources[i % len(sources)]
        name = v1_name(src.name, i)
        dst = top / name
        dst.mkdir()
        for f in src.iterdir():
            shutil.copyfile(f, dst / f.name.replace(src.name, name))
        rows.append(_index_row(dst, name, _split_of(i)))
    pd.DataFrame(rows).to_parquet(root / "index.parquet", index=False)
    names = "\n".join(f"{r['patch_id']},{r['patch_id']}" for r in rows) + "\n"
    for split_file in TORCHGEO_SPLIT_FILES:
        write_text(root / split_file, names)
    (root / ".complete").write_text(str(n))
    return root


def _index_row(folder: Path, name: str, split: str) -> dict:
    meta = json.loads((folder / f"{name}_labels_metadata.json").read_text())
    mapping = label_tables().map43_to_19
    classes = label_tables().classes19
    labels = sorted({mapping[x] for x in meta["labels"] if mapping[x]}, key=classes.index)
    return {"patch_id": name, "split": split, "labels": labels, "path": str(folder.resolve()),
            "format": "v1", "tile": re.search(r"_(T\d{2}[A-Z]{3})_", meta["tile_source"])[1],
            "acquisition_date": datetime.fromisoformat(meta["acquisition_date"]),
            "country": None}


def archive_bytes(root: Path) -> int:
    """Total size of the band GeoTIFFs under ``root/BigEarthNet-v1.0``."""
    return sum(f.stat().st_size for f in (root / "BigEarthNet-v1.0").glob("*/*.tif"))


def band_paths(root: Path) -> list[Path]:
    """Every band file of the archive, folder by folder, in BAND_NAMES order."""
    out = []
    for folder in sorted((root / "BigEarthNet-v1.0").iterdir()):
        out += [folder / f"{folder.name}_{b}.tif" for b in BAND_NAMES]
    return out


def v1_tree(root: Path, n: int) -> Path:
    """A v1 tree of ``n`` patch folders whose files are hard links to the real samples.

    Every folder has the 12 band files and the JSON under their true names; names follow
    the v1 rule (unpadded col/row). Hard links keep it to ``n`` directories on disk.
    Returns the folder holding ``BigEarthNet-v1.0/``.
    """
    if _is_cached(root, n):
        return root
    top = _fresh_top(root)
    # Link to private copies, not to shared/'s files (their link counts are not ours).
    originals = root / "originals"
    sources = []
    for s in sample_folders():
        shutil.copytree(s, originals / s.name)
        sources.append((originals / s.name, sorted((originals / s.name).iterdir())))
    for i in range(n):
        src, files = sources[i % len(sources)]
        name = v1_name(src.name, i)
        dst = top / name
        dst.mkdir()
        for f in files:
            os.link(f, dst / f.name.replace(src.name, name))
    (root / ".complete").write_text(str(n))
    return root


def v2_metadata_slice(root: Path, rows: int) -> Path:
    """A v2 "archive" holding the first ``rows`` rows of the official metadata (quick mode)."""
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    for name in ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"):
        # pyarrow, not pandas: keeps the official schema (string, not large_string).
        pq.write_table(pq.read_table(V2_REFERENCE / name).slice(0, rows), root / name)
    return root


def v2_release(root: Path, n: int, seed: int = 1) -> Path:
    """A synthetic v2 release of ``n`` patches laid out as reBEN ships it; returns the
    archive ``root/release/BigEarthNet-S2.tar.zst``.

    ``benscale synth --format v2`` writes the patches (GeoTIFFs in the layout of the real
    files: GDAL-written, uncompressed uint16 strips, the real sizes); the tar holds
    ``BigEarthNet-S2/`` in path order, zstd level 3 (the CLI's default), and
    ``metadata.parquet`` with the snow/cloud parquet sit beside it. A ``.tar.gz`` of the same
    tar (gzip level 6, the default) is written beside it for the gzip decompressors.
    """
    release = root / "release"
    archive = release / "BigEarthNet-S2.tar.zst"
    if _is_cached(root, n):
        return archive
    shutil.rmtree(root, ignore_errors=True)
    if main(["synth", "--format", "v2", "--patches", str(n), "--seed", str(seed), "--out",
             str(root / "synth")]) != 0:
        raise RuntimeError("benscale synth failed")
    release.mkdir(parents=True)
    plain = release / "BigEarthNet-S2.tar"
    with tarfile.open(plain, "w") as tar:  # tarfile adds a folder's entries sorted
        tar.add(root / "synth" / "BigEarthNet-S2", arcname="BigEarthNet-S2")
    with plain.open("rb") as src, archive.open("wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
    with plain.open("rb") as src, gzip.open(release / "BigEarthNet-S2.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    plain.unlink()
    for parquet in (root / "synth").glob("*.parquet"):
        shutil.copy(parquet, release / parquet.name)
    shutil.rmtree(root / "synth")
    (root / ".complete").write_text(str(n))
    return archive
