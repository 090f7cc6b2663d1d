"""Extraction: patches/s of ``benscale extract`` against torchgeo's reader and the file floor.

All three read the SAME patches (copies of the real v1 samples, bench.archives), warm in
the page cache:

* candidate: ``benscale extract INDEX --out DIR --workers W`` run in-process (the whole
  command: read 12 GeoTIFFs, resample, stack, label, write netCDF4 shards (default layout),
  checksums, statistics, manifest); output removed before every run (untimed) so nothing is resumed;
* baseline: torchgeo 0.8 ``BigEarthNet(bands="s2")._load_image(i)`` for every patch: its
  own per-sample path (glob the folder, rasterio-open the 12 band files, read each with
  ``out_shape=(120, 120)``, bilinear, int32, stack, ``torch.float``);
  ``dataset[i]`` (image + JSON label) is reported as well;
* floor: reading every byte of the same band files with plain ``open().read()``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.archives import archive_bytes, band_paths, patch_archive
from bench.common import (
    BenchFigure,
    Context,
    TimedWorkload,
    measure_group,
    profile_top,
    rate_figure,
)

NAME = "extract"
#: BenchFigure keys this benchmark always produces (the smoke test checks them).
KEYS = ("extract_vs_torchgeo_per_core", "extract_vs_torchgeo_getitem",
        "extract_vs_file_read_floor", "extract_2_workers_vs_1")


def torchgeo_dataset(root: Path) -> Any:
    """Torchgeo's BigEarthNet over the benchmark archive (its split file lists every patch)."""
    from torchgeo.datasets import BigEarthNet

    return BigEarthNet(root=str(root), split="train", bands="s2", num_classes=19)


def extract_workload(root: Path, out: Path, workers: int, shard_size: int) -> TimedWorkload:
    """The whole ``benscale extract`` command, in-process, from an empty output folder."""
    from benscale.cli import main

    n = len(list((root / "BigEarthNet-v1.0").iterdir()))

    def run() -> float:
        rc = main(["extract", str(root / "index.parquet"), "--out", str(out), "--workers",
                   str(workers), "--shard-size", str(shard_size)])
        if rc != 0:
            raise RuntimeError(f"benscale extract exited {rc}")
        return n

    return TimedWorkload(run, setup=lambda: shutil.rmtree(out, ignore_errors=True))


def run(ctx: Context) -> tuple[list[BenchFigure], dict[str, Any]]:
    """Measure the four extraction figures (module docstring)."""
    n = ctx.size(12, 2000)  # 2,000: enough work that worker start-up (~0.6 s) does not decide
    shard_size = ctx.size(4, 100)
    root = patch_archive(ctx.work / f"patches-{n}", n)
    dataset = torchgeo_dataset(root)
    assert len(dataset) == n, (len(dataset), n)
    paths = band_paths(root)
    total_bytes = archive_bytes(root)

    def torchgeo_images() -> float:
        for i in range(n):
            dataset._load_image(i)
        return n

    def torchgeo_samples() -> float:
        for i in range(n):
            dataset[i]
        return n

    def file_floor() -> float:
        for p in paths:
            with open(p, "rb") as fh:
                fh.read()
        return n

    out = ctx.work / f"extract-out-{n}"
    one = extract_workload(root, out, 1, shard_size)
    rates = measure_group({"one": one, "two": extract_workload(root, out, 2, shard_size),
                           "tg_image": torchgeo_images, "tg_item": torchgeo_samples,
                           "floor": file_floor}, ctx.repeats, ctx.warmup)
    unit = "patches/s"
    figures = [
        rate_figure("extract_vs_torchgeo_per_core",
                    "extract, 1 worker vs torchgeo _load_image, 1 process",
                    rates["one"], rates["tg_image"], "torchgeo _load_image", unit, goal=3.0),
        rate_figure("extract_vs_torchgeo_getitem",
                    "extract, 1 worker vs torchgeo dataset[i] (image + JSON label)",
                    rates["one"], rates["tg_item"], "torchgeo dataset[i]", unit),
        rate_figure("extract_vs_file_read_floor",
                    "extract, 1 worker vs reading the band files' bytes",
                    rates["one"], rates["floor"], "open().read() of the 12 files", unit,
                    note=f"floor = {total_bytes / n / 1e3:.1f} kB of GeoTIFF per patch"),
        rate_figure("extract_2_workers_vs_1", "extract, 2 workers vs 1 worker",
                    rates["two"], rates["one"], "extract --workers 1", unit,
                    note="ideal on 2 idle cores: 2"),
    ]
    details: dict[str, Any] = {
        "patches": n, "shard_size": shard_size, "geotiff_bytes": total_bytes,
        "data": "copies of the 3 real v1 samples, page cache warm",
        "notes": [f"{n} copies of the 3 real v1 patches ({total_bytes / n / 1e3:.0f} kB of "
                  "GeoTIFF each), page cache warm; extract = the whole command in-process "
                  f"(shard size {shard_size}, default layout: uncompressed netCDF4, sha256, "
                  "statistics)."],
    }
    if not ctx.quick:
        one.setup()
        details["profile_extract_1_worker"] = profile_top(one.run)
        details["profile_torchgeo_load_image"] = profile_top(torchgeo_images)
    shutil.rmtree(out, ignore_errors=True)
    return figures, details
