"""Measure netCDF4 shard layouts (chunking x compression) for the choice in docs/shards.md.

For each layout: write a shard of N patches (the three REAL BigEarthNet v1 patches from
shared/, bilinear to 120 px, repeated; every chunk of one patch is compressed on its own,
so the repetition does not flatter the ratio of single-patch chunks), then read it
(a) sequentially one patch at a time and (b) one patch at a time in random order, the way
a training data loader does. Files sit in the OS page cache: the figures are the CPU cost
of HDF5 + decompression, the part a layout decides. Best of ``--repeats`` runs.

Usage: python bench/shard_layout.py [--patches 240] [--repeats 3] [--out results/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
from rasterio.enums import Resampling

from benscale.bigearthnet import BAND_NAMES, PATCH_PX
from benscale.extract.read import read_patch
from benscale.files.shards import memory_map

SHARED = Path(os.environ.get("BENSCALE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SAMPLES = SHARED / "bigearthnet/samples/v1/BigEarthNet-v1.0"
PATCH = (len(BAND_NAMES), PATCH_PX, PATCH_PX)

#: name -> netCDF4 createVariable keyword arguments.
LAYOUTS: dict[str, dict[str, Any]] = {
    "contiguous, none": {"contiguous": True, "shuffle": False},
    "chunk 1 patch, none": {"chunksizes": (1, *PATCH), "shuffle": False},
    "chunk 1 patch, zlib1": {"chunksizes": (1, *PATCH), "compression": "zlib", "complevel": 1,
                             "shuffle": False},
    "chunk 1 patch, zlib1+shuffle": {"chunksizes": (1, *PATCH), "compression": "zlib",
                                     "complevel": 1, "shuffle": True},
    "chunk 1 patch, zlib4+shuffle": {"chunksizes": (1, *PATCH), "compression": "zlib",
                                     "complevel": 4, "shuffle": True},
    "chunk 1 patch, zlib9+shuffle": {"chunksizes": (1, *PATCH), "compression": "zlib",
                                     "complevel": 9, "shuffle": True},
    "chunk 1 patch, zstd3+shuffle": {"chunksizes": (1, *PATCH), "compression": "zstd",
                                     "complevel": 3, "shuffle": True},
    "chunk 1 patch, zstd3": {"chunksizes": (1, *PATCH), "compression": "zstd",
                             "complevel": 3, "shuffle": False},
    "chunk 1 patch, blosc_lz4+shuffle": {"chunksizes": (1, *PATCH),
                                         "compression": "blosc_lz4", "complevel": 5,
                                         "blosc_shuffle": 1, "shuffle": False},
    "chunk 1 patch, blosc_zstd3+shuffle": {"chunksizes": (1, *PATCH),
                                           "compression": "blosc_zstd", "complevel": 3,
                                           "blosc_shuffle": 1, "shuffle": False},
    "chunk 1 band, zlib1+shuffle": {"chunksizes": (1, 1, PATCH_PX, PATCH_PX),
                                    "compression": "zlib", "complevel": 1, "shuffle": True},
    "chunk 16 patches, zlib1+shuffle": {"chunksizes": (16, *PATCH), "compression": "zlib",
                                        "complevel": 1, "shuffle": True},
}


def load_patches(n: int) -> np.ndarray:
    """N patches cycling through the three real samples."""
    folders = sorted(p for p in SAMPLES.iterdir() if p.is_dir())
    real = [read_patch(f.name, f, Resampling.bilinear) for f in folders]
    return np.stack([real[i % len(real)] for i in range(n)])


def write(path: Path, data: np.ndarray, layout: dict[str, Any]) -> float:
    """Write one shard; return seconds."""
    if "chunksizes" in layout:  # a chunk may not exceed the shard
        layout = {**layout, "chunksizes": (min(layout["chunksizes"][0], len(data)),
                                           *layout["chunksizes"][1:])}
    start = time.perf_counter()
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for dim, size in zip(("patch", "band", "y", "x"), data.shape, strict=True):
            nc.createDimension(dim, size)
        var = nc.createVariable("reflectance", "u2", ("patch", "band", "y", "x"),
                                fill_value=False, **layout)
        var[:] = data
    return time.perf_counter() - start


def read(path: Path, order: np.ndarray) -> float:
    """Read patches one at a time in ``order``; return seconds."""
    start = time.perf_counter()
    with netCDF4.Dataset(path, "r") as nc:
        nc.set_auto_mask(False)
        var = nc.variables["reflectance"]
        for i in order:
            np.asarray(var[int(i)])
    return time.perf_counter() - start


def read_mapped(path: Path, order: np.ndarray) -> float:
    """Read patches one at a time in ``order`` from benscale's memory map; return seconds."""
    start = time.perf_counter()
    mapped = memory_map(path)
    for i in order:
        np.array(mapped[int(i)])
    return time.perf_counter() - start


def measure(data: np.ndarray, repeats: int, workdir: Path) -> list[dict[str, Any]]:
    """All layouts, best of ``repeats``; checks every read returns the written data."""
    n = len(data)
    rng = np.random.default_rng(0)
    rows = []
    for name, layout in LAYOUTS.items():
        path = workdir / "shard.nc"
        write_s = min(write(path, data, layout) for _ in range(repeats))
        with netCDF4.Dataset(path) as nc:
            assert np.array_equal(nc.variables["reflectance"][:], data)
        seq_s = min(read(path, np.arange(n)) for _ in range(repeats))
        rnd_s = min(read(path, rng.permutation(n)) for _ in range(repeats))
        rows.append({"layout": name, "bytes_per_patch": round(path.stat().st_size / n),
                     "ratio": round(data[0].nbytes * n / path.stat().st_size, 3),
                     "write_patches_per_s": round(n / write_s, 1),
                     "seq_read_patches_per_s": round(n / seq_s, 1),
                     "random_read_patches_per_s": round(n / rnd_s, 1)})
        print(json.dumps(rows[-1]), flush=True)
        if layout.get("contiguous"):  # how ShardSet reads the default layout
            rows.append({**rows[-1], "layout": f"{name}, memory-mapped (ShardSet)",
                         "seq_read_patches_per_s": round(
                             n / min(read_mapped(path, np.arange(n)) for _ in range(repeats)), 1),
                         "random_read_patches_per_s": round(
                             n / min(read_mapped(path, rng.permutation(n))
                                     for _ in range(repeats)), 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    """Run the measurement and write results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    data = load_patches(args.patches)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(data, args.repeats, Path(tmp))
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores",
              "netcdf": netCDF4.__netcdf4libversion__, "hdf5": netCDF4.__hdf5libversion__,
              "patches": args.patches, "repeats": args.repeats, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shard_layout.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
