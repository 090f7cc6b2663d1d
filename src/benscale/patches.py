"""``benscale extract``: read, resample and stack every indexed patch into netCDF4 shards.

``benscale extract INDEX --out DIR [--shard-size N] [--workers W]
[--resampling bilinear|nearest] [--compression none|zlib] [--strict]``

Reads the 12 single-band GeoTIFFs of each patch in ``INDEX`` (index.parquet, see
docs/architecture.md section 2) with rasterio, resamples the 20 m and 60 m bands to
120 x 120 exactly as torchgeo does (``out_shape`` + bilinear, or nearest), keeps the 10 m
bands bit-exact, and writes per-split shards, band statistics, a manifest and a report
(section 3; docs/shards.md).

Restartable by design: shard ``k`` of a split always holds the same planned patches (the
index sorted by split and patch_id, cut every ``N`` rows), each shard is written to a
temporary file and renamed, and a small receipt ``shard-NNNNN.json`` beside it records what
went in, the file's checksum and its exact integer band sums. A re-run keeps every shard
whose receipt matches its plan and redoes only the others; the statistics are merged from
the receipts, so they stay exact on a resumed run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from math import sqrt
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from tqdm import tqdm

from benscale import __version__
from benscale.atomic import write_json
from benscale.bigearthnet import BANDS, BAND_NAMES, PATCH_PX, SPLITS, label_tables
from benscale.errors import BadPatchError, ConfigError, DataError
from benscale.shards import (
    COMPRESSIONS, DEFAULT_COMPRESSION, MANIFEST_NAME, REPORT_NAME, STATS_NAME, ShardInfo,
    LAYOUTS, shard_dataset, shard_name, write_shard,
)

#: --resampling choices -> rasterio methods (torchgeo's BigEarthNet uses bilinear).
RESAMPLING: dict[str, Resampling] = {"bilinear": Resampling.bilinear,
                                     "nearest": Resampling.nearest}
#: Index columns extraction needs (docs/architecture.md, section 2).
REQUIRED_COLUMNS: tuple[str, ...] = ("patch_id", "split", "labels", "path")
#: Default patches per shard: ~120-200 MB files (few files for parallel file systems) and
#: ~350 MB of memory per worker while a shard is assembled.
DEFAULT_SHARD_SIZE = 1000
#: GDAL settings for reading band files (measured in docs/benchmarks.md, "Extraction"):
#: no listing of the patch folder on every open (costly on Lustre/GPFS), no probing for
#: .aux.xml side-cars, and no georeferencing: extraction needs pixels only, and building
#: each file's CRS from the PROJ database took ~60 % of a band file's open+read time.
GDAL_ENV: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                            "GDAL_PAM_ENABLED": "NO", "GDAL_GEOREF_SOURCES": "NONE"}
#: Band-file dtype of BigEarthNet (FORMAT.md).
BAND_DTYPE = np.dtype("uint16")


@dataclass(frozen=True)
class ExtractOptions:
    """What ``benscale extract`` was asked to do."""

    index: Path
    out: Path
    shard_size: int
    workers: int
    resampling: str
    compression: str
    strict: bool


@dataclass(frozen=True)
class ShardPlan:
    """The patches planned for one shard: fixed by the sorted index and the shard size."""

    split: str
    number: int
    patch_ids: tuple[str, ...]
    folders: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    source_format: str
    #: The original 43-class labels per patch (v1 indexes), else None.
    labels43: tuple[tuple[str, ...], ...] | None = None

    @property
    def rel_path(self) -> str:
        """The shard's path relative to the output folder: ``train/shard-00000.nc``."""
        return f"{self.split}/{shard_name(self.number)}"

    def nc_path(self, out: Path) -> Path:
        """Where the shard file goes."""
        return out / self.rel_path

    def receipt_path(self, out: Path) -> Path:
        """Where the shard's receipt goes: beside it, ``shard-00000.json``."""
        return self.nc_path(out).with_suffix(".json")


# ---------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``extract`` arguments."""
    parser.add_argument("index", type=Path, help="index.parquet written by `benscale ingest`")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the shards")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                        help=f"patches per shard (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, one shard per task (default 1)")
    parser.add_argument("--resampling", choices=sorted(RESAMPLING), default="bilinear",
                        help="how 20 m and 60 m bands reach 120x120 (default bilinear, as "
                             "torchgeo)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default=DEFAULT_COMPRESSION,
                        help="reflectance storage: none (contiguous, fastest to read; "
                             "default) or zlib (one zlib+shuffle chunk per patch, 1.6x "
                             "smaller); docs/shards.md has the measurements")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first bad patch instead of rejecting it")


def run(args: argparse.Namespace) -> int:
    """Extract every patch of the index; see the module docstring."""
    opts = _options(args)
    started = time.perf_counter()
    index = load_index(opts.index)
    plans = plan_shards(index, opts.shard_size)
    removed = remove_strays(opts.out, plans)
    kept, todo = partition_done(plans, opts)
    receipts = kept + execute(todo, opts)
    receipts.sort(key=lambda r: (SPLITS.index(r["split"]), r["number"]))
    if opts.strict:
        _fail_on_rejections(receipts)
    elapsed_s = time.perf_counter() - started
    write_outputs(opts, receipts, written=[p.rel_path for p in todo], removed=removed,
                  elapsed_s=elapsed_s)
    return 0


def _options(args: argparse.Namespace) -> ExtractOptions:
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size {args.shard_size}: must be at least 1")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    return ExtractOptions(index=args.index, out=args.out, shard_size=args.shard_size,
                          workers=args.workers, resampling=args.resampling,
                          compression=args.compression, strict=args.strict)


# ---------------------------------------------------------------------------- planning


def load_index(path: Path) -> pd.DataFrame:
    """Read and check index.parquet; return it sorted by (split, patch_id).

    Sorting here (not trusting the file's order) is what makes shard membership
    deterministic, and so what makes resuming safe.
    """
    try:
        index = pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: index not found; run `benscale ingest` first") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc}); "
                        "re-run `benscale ingest`") from exc
    if index.empty:
        raise DataError(f"{path}: the index has no patches; check the ingest report beside it")
    missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected the index of "
                        "docs/architecture.md section 2 (re-run `benscale ingest`)")
    bad_splits = sorted(set(index["split"]) - set(SPLITS))
    if bad_splits:
        raise DataError(f"{path}: unknown split value(s) {bad_splits}; expected {list(SPLITS)}")
    duplicated = index["patch_id"][index["patch_id"].duplicated()].tolist()
    if duplicated:
        raise DataError(f"{path}: duplicate patch_id(s) {duplicated[:5]}; "
                        "each patch may appear once (re-run `benscale ingest`)")
    order = index["split"].map(SPLITS.index)
    return (index.assign(_order=order).sort_values(["_order", "patch_id"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def plan_shards(index: pd.DataFrame, shard_size: int) -> list[ShardPlan]:
    """Cut each split of the sorted index into consecutive shards of ``shard_size`` rows."""
    plans: list[ShardPlan] = []
    formats = index["format"] if "format" in index.columns else pd.Series("unknown",
                                                                          index=index.index)
    with43 = "labels43" in index.columns and bool(index["labels43"].notna().all())
    for split in SPLITS:
        rows = index[index["split"] == split]
        for number, start in enumerate(range(0, len(rows), shard_size)):
            chunk = rows.iloc[start:start + shard_size]
            fmt = ",".join(sorted(set(formats.loc[chunk.index].astype(str))))
            plans.append(ShardPlan(
                split=split, number=number,
                patch_ids=tuple(str(p) for p in chunk["patch_id"]),
                folders=tuple(str(p) for p in chunk["path"]),
                labels=_label_tuples(chunk["labels"]),
                labels43=_label_tuples(chunk["labels43"]) if with43 else None,
                source_format=fmt))
    return plans


def _label_tuples(column: pd.Series) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(c) for c in ([] if labels is None else labels)) for labels in column)


def remove_strays(out: Path, plans: list[ShardPlan]) -> list[str]:
    """Delete temporary files of a crashed run and shards no longer in the plan.

    Only files named like ours are touched: ``.shard-*.tmp`` and ``shard-*.nc/json``.
    """
    planned = {p.rel_path for p in plans} | {p.rel_path[:-3] + ".json" for p in plans}
    removed: list[str] = []
    for split in SPLITS:
        folder = out / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(".shard-*.tmp")) + sorted(folder.glob("shard-*.*")):
            rel = f"{split}/{path.name}"
            if path.name.startswith(".") or (path.suffix in (".nc", ".json")
                                             and rel not in planned):
                path.unlink()
                removed.append(rel)
    return removed


def partition_done(plans: list[ShardPlan],
                   opts: ExtractOptions) -> tuple[list[dict[str, Any]], list[ShardPlan]]:
    """Split the plans into (receipts of shards already complete, plans still to do)."""
    done: list[dict[str, Any]] = []
    todo: list[ShardPlan] = []
    for plan in plans:
        receipt = completed_receipt(plan, opts)
        if receipt is None:
            todo.append(plan)
        else:
            done.append(receipt)
    return done, todo


def completed_receipt(plan: ShardPlan, opts: ExtractOptions) -> dict[str, Any] | None:
    """The shard's receipt if the shard on disk is complete and matches ``plan``, else None.

    Checks: receipt readable, same planned patch ids, resampling and compression, shard
    file of the
    recorded size holding exactly the recorded patch ids. (The checksum is not re-hashed:
    that would read every byte again; `sha256sum -c` style checks can use the manifest.)
    """
    try:
        receipt = json.loads(plan.receipt_path(opts.out).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (receipt.get("planned") != list(plan.patch_ids)
            or receipt.get("resampling") != opts.resampling
            or receipt.get("compression") != opts.compression
            or receipt.get("labels43", False) != (plan.labels43 is not None)):
        return None
    if not receipt["patch_ids"]:
        return receipt  # every planned patch was rejected: no shard file by design
    nc_path = plan.nc_path(opts.out)
    try:
        if nc_path.stat().st_size != receipt["size_bytes"]:
            return None
        with netCDF4.Dataset(nc_path, "r") as nc:
            stored = [str(p) for p in nc.variables["patch_id"][:]]
    except (OSError, KeyError):
        return None
    return receipt if stored == receipt["patch_ids"] else None


# ---------------------------------------------------------------------------- execution


def execute(plans: list[ShardPlan], opts: ExtractOptions) -> list[dict[str, Any]]:
    """Extract the shards in ``plans`` on ``opts.workers`` processes; return their receipts.

    In strict mode the first shard with a rejected patch stops the run (pending shards are
    cancelled; finished ones stay on disk and are kept by the next run).
    """
    receipts: list[dict[str, Any]] = []
    total = sum(len(p.patch_ids) for p in plans)
    with tqdm(total=total, unit="patch", desc="extract", disable=None) as bar:
        for receipt in _extract_all(plans, opts):
            receipts.append(receipt)
            bar.update(len(receipt["planned"]))
            if opts.strict and receipt["rejected"]:
                break
    return receipts


def _extract_all(plans: list[ShardPlan], opts: ExtractOptions) -> Iterator[dict[str, Any]]:
    args = (opts.out, opts.resampling, opts.compression, opts.strict)
    if opts.workers == 1 or len(plans) <= 1:
        for plan in plans:
            yield extract_shard(plan, *args)
        return
    # spawn: workers start clean, with no HDF5/GDAL state inherited through fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=opts.workers, mp_context=context) as pool:
        pending: set[Future[dict[str, Any]]] = {pool.submit(extract_shard, p, *args)
                                                for p in plans}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def extract_shard(plan: ShardPlan, out: Path, resampling: str, compression: str,
                  strict: bool) -> dict[str, Any]:
    """Worker task: read the plan's patches, write the shard atomically, return its receipt.

    Bad patches are left out (listed in the receipt), so reflectance and labels stay
    aligned. In strict mode a shard with a bad patch is not written at all.
    """
    ids, reflectance, labels, rejected = read_patches(plan, RESAMPLING[resampling])
    labels43 = _labels43(plan, ids)
    receipt: dict[str, Any] = {
        "split": plan.split, "number": plan.number, "path": None, "resampling": resampling,
        "compression": compression, "labels43": labels43 is not None,
        "planned": list(plan.patch_ids), "patch_ids": ids, "rejected": rejected,
        "n_patches": len(ids), "sha256": None, "size_bytes": 0,
        **band_moments(reflectance),
    }
    if ids and not (strict and rejected):
        dataset = shard_dataset(ids, reflectance, labels, ShardInfo(
            split=plan.split, number=plan.number, resampling=resampling,
            source_format=plan.source_format), labels43=labels43)
        receipt.update(path=plan.rel_path,
                       **write_shard(dataset, plan.nc_path(out), compression))
    if not (strict and rejected):
        write_json(plan.receipt_path(out), receipt)
    return receipt


def read_patches(plan: ShardPlan, resampling: Resampling
                 ) -> tuple[list[str], np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Read every planned patch; return (kept ids, reflectance, multi-hot labels, rejections).

    The arrays are allocated once for the whole shard (a 1,000-patch shard is 346 MB) and
    a bad patch's slot is reused by the next good one, so rows stay aligned with ``ids``.
    """
    n = len(plan.patch_ids)
    reflectance = np.empty((n, len(BANDS), PATCH_PX, PATCH_PX), dtype=BAND_DTYPE)
    labels = np.zeros((n, len(label_tables().classes19)), dtype=np.uint8)
    ids: list[str] = []
    rejected: list[dict[str, str]] = []
    for patch_id, folder, names in zip(plan.patch_ids, plan.folders, plan.labels, strict=True):
        try:
            labels[len(ids)] = encode_labels(patch_id, folder, names)
            read_patch(patch_id, Path(folder), resampling, out=reflectance[len(ids)])
        except BadPatchError as exc:
            rejected.append({"patch_id": exc.patch_id, "split": plan.split,
                             "path": exc.path, "problem": exc.problem})
            continue
        ids.append(patch_id)
    return ids, reflectance[:len(ids)], labels[:len(ids)], rejected


def _labels43(plan: ShardPlan, kept: list[str]) -> np.ndarray | None:
    """Multi-hot (kept patches, 43) over labels.json's 43 labels, or None without them.

    The index's labels43 come from ingest, which checked every name against labels.json.
    """
    if plan.labels43 is None:
        return None
    names43 = label_tables().labels43
    by_id = dict(zip(plan.patch_ids, plan.labels43, strict=True))
    hot = np.zeros((len(kept), len(names43)), dtype=np.uint8)
    for row, patch_id in enumerate(kept):
        hot[row, [names43.index(n) for n in by_id[patch_id]]] = 1
    return hot


def encode_labels(patch_id: str, folder: str, names: Iterable[str]) -> np.ndarray:
    """Multi-hot uint8 vector over the 19 classes in their ORIGINAL order."""
    classes = label_tables().classes19
    hot = np.zeros(len(classes), dtype=np.uint8)
    for name in names:
        if name not in classes:
            raise BadPatchError(patch_id, folder, f"unknown 19-class label {name!r} in the "
                                "index; re-run `benscale ingest`")
        hot[classes.index(name)] = 1
    return hot


def read_patch(patch_id: str, folder: Path, resampling: Resampling,
               out: np.ndarray | None = None) -> np.ndarray:
    """The 12 bands of one patch as uint16 (12, 120, 120), in BAND_NAMES order.

    Args:
        patch_id: the patch's name; its files are ``folder/<patch_id>_<BAND>.tif``.
        folder: the patch folder.
        resampling: how 20 m and 60 m bands reach 120 x 120.
        out: an array to fill (saves a copy when assembling a shard).
    """
    if out is None:
        out = np.empty((len(BANDS), PATCH_PX, PATCH_PX), dtype=BAND_DTYPE)
    prefix = os.path.join(folder, patch_id)  # plain strings: pathlib costs ~8 us per join
    with band_reading():
        for i, band in enumerate(BANDS):
            read_band(patch_id, f"{prefix}_{band.name}.tif", band.native_px, resampling,
                      out=out[i])
    return out


@contextmanager
def band_reading() -> Iterator[None]:
    """The GDAL environment of :data:`GDAL_ENV`, without the warning it implies.

    Opening a patch's band files as ``rasterio.io.DatasetReader`` inside this one
    environment skips the environment that ``rasterio.open`` sets up and tears down on every
    call (~40 us of a ~130 us band read, measured in docs/benchmarks.md).
    """
    with rasterio.Env(**GDAL_ENV), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # GDAL_GEOREF_SOURCES=NONE
        yield


def read_band(patch_id: str, path: str, native_px: int, resampling: Resampling,
              out: np.ndarray) -> None:
    """One band into ``out`` (120 x 120): as stored for 10 m bands, resampled like torchgeo
    otherwise. Call it inside :func:`band_reading`.

    Raises:
        BadPatchError: the file is missing, unreadable, or not a native_px-square uint16
            single-band raster.
    """
    try:
        with DatasetReader(path, driver="GTiff") as src:  # no other format, even if
            _check_band(patch_id, path, src, native_px)       # another driver parses it
            if native_px == PATCH_PX:
                src.read(1, out=out)
            else:
                src.read(1, out=out, resampling=resampling)
    except RasterioError as exc:
        if not os.path.isfile(path):  # asked only on failure: one stat call less per band
            raise BadPatchError(patch_id, path, "missing band file") from None
        raise BadPatchError(patch_id, path, f"unreadable or corrupt GeoTIFF ({exc})") from exc


def _check_band(patch_id: str, path: str, src: DatasetReader, native_px: int) -> None:
    if src.count != 1:
        raise BadPatchError(patch_id, path, f"{src.count} bands, expected 1")
    if src.dtypes[0] != BAND_DTYPE.name:
        raise BadPatchError(patch_id, path, f"dtype {src.dtypes[0]}, expected uint16")
    if (src.width, src.height) != (native_px, native_px):
        raise BadPatchError(patch_id, path, f"size {src.width}x{src.height} px, expected "
                            f"{native_px}x{native_px} for this band")


def band_moments(reflectance: np.ndarray) -> dict[str, Any]:
    """Exact per-band sums and sums of squares (Python ints: no rounding, no overflow).

    Per patch the int64 partial sums cannot overflow (14,400 x 65,535^2 < 2^63); summing
    them as Python ints keeps the totals exact for any number of patches, so statistics
    merged from any set of shards equal a single pass over the concatenated data.
    """
    sums = [0] * len(BANDS)
    sumsq = [0] * len(BANDS)
    for patch in reflectance:
        wide = patch.astype(np.int64)
        for b, (s, q) in enumerate(zip(wide.sum(axis=(1, 2)), (wide * wide).sum(axis=(1, 2)),
                                       strict=True)):
            sums[b] += int(s)
            sumsq[b] += int(q)
    return {"band_sum": sums, "band_sumsq": sumsq,
            "pixels_per_band": len(reflectance) * PATCH_PX**2}


# ---------------------------------------------------------------------------- writing


def write_outputs(opts: ExtractOptions, receipts: list[dict[str, Any]], written: list[str],
                  removed: list[str], elapsed_s: float) -> None:
    """stats.json, manifest.json and extract-report.json, each atomically."""
    write_json(opts.out / STATS_NAME, band_stats(receipts, opts.resampling))
    write_json(opts.out / MANIFEST_NAME, build_manifest(receipts, opts))
    write_json(opts.out / REPORT_NAME, build_report(receipts, opts, written, removed,
                                                   elapsed_s))


def band_stats(receipts: list[dict[str, Any]], resampling: str) -> dict[str, Any]:
    """Per-band mean and population std over the train split, from exact integer sums."""
    train = [r for r in receipts if r["split"] == "train"]
    n = sum(r["pixels_per_band"] for r in train)
    bands: dict[str, dict[str, float | None]] = {}
    for b, name in enumerate(BAND_NAMES):
        total = sum(r["band_sum"][b] for r in train)
        total_sq = sum(r["band_sumsq"][b] for r in train)
        if n == 0:
            bands[name] = {"mean": None, "std": None}
            continue
        # var = (n*Q - S^2) / n^2 in exact integers, one correctly rounded division.
        bands[name] = {"mean": total / n, "std": sqrt((n * total_sq - total * total) / (n * n))}
    return {"split": "train", "n_patches": sum(r["n_patches"] for r in train),
            "resampling": resampling, "ddof": 0, "bands": bands}


def build_manifest(receipts: list[dict[str, Any]], opts: ExtractOptions) -> dict[str, Any]:
    """The list of shards per split, with patch counts and checksums."""
    splits: dict[str, dict[str, Any]] = {}
    for r in receipts:
        entry = splits.setdefault(r["split"], {"n_patches": 0, "shards": []})
        entry["n_patches"] += r["n_patches"]
        if r["path"] is not None:
            entry["shards"].append({"path": r["path"], "n_patches": r["n_patches"],
                                    "sha256": r["sha256"], "size_bytes": r["size_bytes"]})
    with43 = bool(receipts) and all(r.get("labels43") for r in receipts)
    return {"benscale_version": __version__, "bands": list(BAND_NAMES),
            "classes": list(label_tables().classes19),
            **({"classes43": list(label_tables().labels43)} if with43 else {}),
            "resampling": opts.resampling,
            "shard_size": opts.shard_size,
            "layout": LAYOUTS[opts.compression].record,
            "splits": splits}


def build_report(receipts: list[dict[str, Any]], opts: ExtractOptions, written: list[str],
                 removed: list[str], elapsed_s: float) -> dict[str, Any]:
    """What happened: counts, every rejected patch (file + problem), resume details."""
    n_written = sum(len(r["planned"]) for r in receipts
                    if f"{r['split']}/{shard_name(r['number'])}" in written)
    return {
        "index": str(opts.index.resolve()), "out": str(opts.out.resolve()),
        "resampling": opts.resampling, "compression": opts.compression,
        "workers": opts.workers, "shard_size": opts.shard_size,
        "n_planned": sum(len(r["planned"]) for r in receipts),
        "n_extracted": sum(r["n_patches"] for r in receipts),
        "counts": {s: sum(r["n_patches"] for r in receipts if r["split"] == s)
                   for s in SPLITS if any(r["split"] == s for r in receipts)},
        "rejected": [rej for r in receipts for rej in r["rejected"]],
        "shards_written": written, "shards_kept": len(receipts) - len(written),
        "stale_files_removed": removed,
        "elapsed_s": round(elapsed_s, 3),
        "patches_per_s_written": round(n_written / elapsed_s, 2) if elapsed_s > 0 else None,
    }


def _fail_on_rejections(receipts: list[dict[str, Any]]) -> None:
    rejected = [rej for r in receipts for rej in r["rejected"]]
    if rejected:
        first = rejected[0]
        raise DataError(f"{first['path']}: {first['problem']} (patch {first['patch_id']}); "
                        f"--strict stops at bad input ({len(rejected)} bad patch(es) seen). "
                        "Fix or re-ingest the patch, or run without --strict to reject it")
