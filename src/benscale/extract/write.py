"""Extracting the planned shards on worker processes, and the files that describe them.

Each worker task reads one shard's patches (:mod:`.read`), writes the shard through
xarray to a temporary file renamed into place, and writes its receipt beside it. The
manifest, stats.json and extract-report.json are written last, from the receipts.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benscale import __version__
from benscale.atomic import write_json
from benscale.bigearthnet import BAND_NAMES, SPLITS, label_tables
from benscale.errors import DataError
from benscale.extract.plan import ExtractOptions, ShardPlan
from benscale.extract.read import (
    RESAMPLING,
    ShardBytes,
    band_reading,
    labels43_of,
    read_patches,
)
from benscale.extract.stats import band_moments, band_stats
from benscale.files.shards import (
    REPORT_NAME,
    SHARD_LAYOUTS,
    Manifest,
    ShardEntry,
    ShardInfo,
    ShardReceipt,
    SplitEntry,
    shard_dataset,
    shard_name,
    write_shard,
)
from benscale.typed import to_mapping


def execute(plans: list[ShardPlan], opts: ExtractOptions) -> list[ShardReceipt]:
    """Extract the shards in ``plans`` on ``opts.workers`` processes; return their receipts.

    In strict mode the first shard with a rejected patch stops the run (pending shards are
    cancelled; finished ones stay on disk and are kept by the next run).
    """
    receipts: list[ShardReceipt] = []
    total = sum(len(p.patch_ids) for p in plans)
    with tqdm(total=total, unit="patch", desc="extract", disable=None) as bar:
        for receipt in _extract_all(plans, opts):
            receipts.append(receipt)
            bar.update(len(receipt.planned))
            if opts.strict and receipt.rejected:
                break
    return receipts


def _extract_all(plans: list[ShardPlan], opts: ExtractOptions) -> Iterator[ShardReceipt]:
    args = (opts.out, opts.resampling, opts.compression, opts.strict)
    if opts.workers == 1 or len(plans) <= 1:
        for plan in plans:
            yield extract_shard(plan, *args)
        return
    # spawn: workers start clean, with no HDF5/GDAL state inherited through fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=opts.workers, mp_context=context) as pool:
        pending: set[Future[ShardReceipt]] = {pool.submit(extract_shard, p, *args)
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
                  strict: bool, sources: ShardBytes | None = None) -> ShardReceipt:
    """Worker task: read the plan's patches, write the shard atomically, return its receipt.

    Bad patches are left out (listed in the receipt), so reflectance and labels stay
    aligned. In strict mode a shard with a bad patch is not written at all. ``sources``:
    the band files' bytes from the archive stream (``benscale extract ARCHIVE``).
    """
    try:
        ids, reflectance, labels, rejected = read_patches(plan, RESAMPLING[resampling],
                                                          sources)
    finally:
        if sources is not None:
            sources.close()
    labels43 = labels43_of(plan, ids)
    band_sum, band_sumsq, pixels = band_moments(reflectance)
    path, sha256, size_bytes = None, None, 0
    if ids and not (strict and rejected):
        dataset = shard_dataset(ids, reflectance, labels, ShardInfo(
            split=plan.split, number=plan.number, resampling=resampling,
            source_format=plan.source_format), labels43=labels43)
        written = write_shard(dataset, plan.nc_path(out), compression)
        path, sha256, size_bytes = plan.rel_path, written.sha256, written.size_bytes
    receipt = ShardReceipt(
        split=plan.split, number=plan.number, path=path, resampling=resampling,
        compression=compression, labels43=labels43 is not None, planned=plan.patch_ids,
        patch_ids=tuple(ids), rejected=tuple(rejected), n_patches=len(ids), sha256=sha256,
        size_bytes=size_bytes, band_sum=band_sum, band_sumsq=band_sumsq,
        pixels_per_band=pixels)
    if not (strict and rejected):
        receipt.write(plan.receipt_path(out))
    return receipt


def warm_up() -> int:
    """Worker task run first: the imports and GDAL's start-up, while the stream is read."""
    with band_reading():
        pass
    return multiprocessing.current_process().pid or 0


def write_outputs(opts: ExtractOptions, receipts: list[ShardReceipt], written: list[str],
                  removed: list[str], elapsed_s: float,
                  stream: dict[str, Any] | None = None) -> None:
    """stats.json, manifest.json and extract-report.json, each atomically; ``stream``: the
    facts of a pass over an archive, for the report."""
    band_stats(receipts, opts.resampling).write(opts.out)
    build_manifest(receipts, opts).write(opts.out)
    report = build_report(receipts, opts, written, removed, elapsed_s)
    if stream is not None:
        report["stream"] = stream
    write_json(opts.out / REPORT_NAME, report)


def build_manifest(receipts: list[ShardReceipt], opts: ExtractOptions) -> Manifest:
    """The list of shards per split, with patch counts and checksums."""
    counts: dict[str, int] = {}
    shards: dict[str, list[ShardEntry]] = {}
    for r in receipts:
        counts[r.split] = counts.get(r.split, 0) + r.n_patches
        entries = shards.setdefault(r.split, [])
        if r.path is not None:
            entries.append(ShardEntry(r.path, r.n_patches, r.sha256 or "", r.size_bytes))
    with43 = bool(receipts) and all(r.labels43 for r in receipts)
    return Manifest(
        benscale_version=__version__, bands=BAND_NAMES, classes=label_tables().classes19,
        classes43=label_tables().labels43 if with43 else None, resampling=opts.resampling,
        shard_size=opts.shard_size, layout=SHARD_LAYOUTS[opts.compression].record,
        splits={s: SplitEntry(counts[s], tuple(shards[s])) for s in counts})


def build_report(receipts: list[ShardReceipt], opts: ExtractOptions, written: list[str],
                 removed: list[str], elapsed_s: float) -> dict[str, Any]:
    """What happened: counts, every rejected patch (file + problem), resume details."""
    n_written = sum(len(r.planned) for r in receipts
                    if f"{r.split}/{shard_name(r.number)}" in written)
    return {
        "index": str(opts.index.resolve()), "out": str(opts.out.resolve()),
        "resampling": opts.resampling, "compression": opts.compression,
        "workers": opts.workers, "shard_size": opts.shard_size,
        "n_planned": sum(len(r.planned) for r in receipts),
        "n_extracted": sum(r.n_patches for r in receipts),
        "counts": {s: sum(r.n_patches for r in receipts if r.split == s)
                   for s in SPLITS if any(r.split == s for r in receipts)},
        "rejected": [to_mapping(rej) for r in receipts for rej in r.rejected],
        "shards_written": written, "shards_kept": len(receipts) - len(written),
        "stale_files_removed": removed,
        "elapsed_s": round(elapsed_s, 3),
        "patches_per_s_written": round(n_written / elapsed_s, 2) if elapsed_s > 0 else None,
    }


def fail_on_rejections(receipts: list[ShardReceipt]) -> None:
    """The strict mode's error: the first rejected patch, naming its file."""
    rejected = [rej for r in receipts for rej in r.rejected]
    if rejected:
        first = rejected[0]
        raise DataError(f"{first.path}: {first.problem} (patch {first.patch_id}); "
                        f"--strict stops at bad input ({len(rejected)} bad patch(es) seen). "
                        "Fix or re-ingest the patch, or run without --strict to reject it")
