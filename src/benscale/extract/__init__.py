"""``benscale extract``: read, resample and stack every indexed patch into netCDF4 shards.

``benscale extract INDEX --out DIR [--shard-size N] [--workers W]
[--resampling bilinear|nearest] [--compression none|zlib] [--strict]``

Reads the 12 single-band GeoTIFFs of each patch in ``INDEX`` (index.parquet,
docs/architecture.md section 2) with rasterio (:mod:`.read`), and writes per-split shards,
band statistics, a manifest and a report (section 3; docs/shards.md) (:mod:`.write`).

Restartable by design (:mod:`.plan`): shard ``k`` of a split always holds the same planned
patches, each shard is written to a temporary file and renamed, and a receipt beside it
records what went in, the file's checksum and its exact integer band sums (:mod:`.stats`).
A re-run keeps every shard whose receipt matches its plan and redoes only the others.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benscale.bigearthnet import SPLITS
from benscale.errors import ConfigError
from benscale.extract.plan import ExtractOptions, partition_done, plan_shards, remove_strays
from benscale.extract.read import RESAMPLING
from benscale.extract.write import execute, fail_on_rejections, write_outputs
from benscale.files.index import read_index
from benscale.files.shards import COMPRESSIONS, DEFAULT_COMPRESSION

#: Default patches per shard: ~120-200 MB files (few files for parallel file systems) and
#: ~350 MB of memory per worker while a shard is assembled.
DEFAULT_SHARD_SIZE = 1000

__all__ = ["DEFAULT_SHARD_SIZE", "ExtractOptions", "configure_parser", "extract", "run"]


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
                             "default) or zlib (one zlib+shuffle chunk per patch, smaller); "
                             "docs/shards.md has the measurements")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first bad patch instead of rejecting it")


def run(args: argparse.Namespace) -> int:
    """Extract every patch of the index; see the module docstring."""
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size {args.shard_size}: must be at least 1")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    extract(ExtractOptions(index=args.index, out=args.out, shard_size=args.shard_size,
                           workers=args.workers, resampling=args.resampling,
                           compression=args.compression, strict=args.strict))
    return 0


def extract(opts: ExtractOptions) -> None:
    """Plan, keep what is done, extract the rest, then write stats, manifest and report."""
    started = time.perf_counter()
    plans = plan_shards(read_index(opts.index), opts.shard_size)
    removed = remove_strays(opts.out, plans)
    kept, todo = partition_done(plans, opts)
    receipts = kept + execute(todo, opts)
    receipts.sort(key=lambda r: (SPLITS.index(r.split), r.number))
    if opts.strict:
        fail_on_rejections(receipts)
    write_outputs(opts, receipts, written=[p.rel_path for p in todo], removed=removed,
                  elapsed_s=time.perf_counter() - started)
