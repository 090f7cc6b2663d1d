"""``benscale extract``: read, resample and stack every indexed patch into netCDF4 shards.

``benscale extract INDEX|ARCHIVE --out DIR [--shard-size N] [--workers W]
[--resampling bilinear|nearest] [--compression none|zlib] [--strict]
[--index-out DIR] [--format auto|v1|v2] [--v1-lists DIR] [--stream-buffer-mb MB]
[--decompressor NAME]``

Reads the 12 single-band GeoTIFFs of each patch in ``INDEX`` (index.parquet,
docs/architecture.md section 2) with rasterio (:mod:`.read`), and writes per-split shards,
band statistics, a manifest and a report (section 3; docs/shards.md) (:mod:`.write`).

Given the published ``ARCHIVE`` itself (.tar, .tar.gz, .tar.zst), it reads the tar as one
sequential stream and decodes the GeoTIFFs from memory, never unpacking them, and writes
the index and the ingest report as well (:mod:`.stream`; docs/shards.md, "Streaming from
the archive").

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
from benscale.errors import ArchiveError, ConfigError
from benscale.extract.plan import ExtractOptions, partition_done, plan_shards, remove_strays
from benscale.extract.read import RESAMPLING
from benscale.extract.stream import DEFAULT_BUFFER_MB, StreamOptions, extract_stream
from benscale.extract.write import execute, fail_on_rejections, write_outputs
from benscale.files.archive import TAR_SUFFIXES, is_tar
from benscale.files.archive_tar import DECOMPRESSORS
from benscale.files.index import INDEX_FILE, read_index
from benscale.files.shards import COMPRESSIONS, DEFAULT_COMPRESSION, shard_name

#: Default patches per shard: ~120-200 MB files (few files for parallel file systems) and
#: ~350 MB of memory per worker while a shard is assembled.
DEFAULT_SHARD_SIZE = 1000

__all__ = ["DEFAULT_BUFFER_MB", "DEFAULT_SHARD_SIZE", "ExtractOptions", "StreamOptions",
           "configure_parser", "extract", "extract_archive", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``extract`` arguments."""
    parser.add_argument("index", type=Path, metavar="INDEX|ARCHIVE",
                        help="index.parquet written by `benscale ingest`, or the archive "
                             "itself (.tar, .tar.gz, .tar.zst), read as one stream")
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
    stream = parser.add_argument_group("reading an ARCHIVE (not an index)")
    stream.add_argument("--index-out", type=Path, default=None,
                        help="folder for index.parquet and ingest-report.json (default: OUT)")
    stream.add_argument("--format", choices=("auto", "v1", "v2"), default="auto",
                        help="archive format (default: recognised from the member names)")
    stream.add_argument("--v1-lists", type=Path, default=None,
                        help="folder with the official v1 lists; with them the shards are "
                             "cut during the pass (without: at its end, see docs/shards.md)")
    stream.add_argument("--stream-buffer-mb", type=int, default=DEFAULT_BUFFER_MB,
                        help="raw member bytes held in memory before they are spilled to one "
                             f"scratch file in OUT (default {DEFAULT_BUFFER_MB})")
    stream.add_argument("--decompressor", choices=DECOMPRESSORS, default="auto",
                        help="zstd, pigz, gzip (external programs), isal, python; default: "
                             "the fastest available for the archive")


def run(args: argparse.Namespace) -> int:
    """Extract every patch of the index or archive; see the module docstring."""
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size {args.shard_size}: must be at least 1")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    source = Path(args.index)
    archive = source.name.endswith(tuple(TAR_SUFFIXES))
    if archive and not source.exists():
        raise ArchiveError(f"{source}: no such file")
    if source.is_dir():
        raise ConfigError(f"{source}: a folder; run `benscale ingest {source} --out DIR` first "
                          "and extract DIR/index.parquet, or pass the .tar* archive itself")
    if not archive and (args.index_out or args.v1_lists or args.format != "auto"):
        raise ConfigError("--index-out, --v1-lists and --format apply to an ARCHIVE input, "
                          f"not to the index {source}")
    if args.stream_buffer_mb < 0:
        raise ConfigError(f"--stream-buffer-mb {args.stream_buffer_mb}: must be 0 or more")
    index_out = Path(args.index_out or args.out)
    opts = ExtractOptions(index=index_out / INDEX_FILE if archive else source, out=args.out,
                          shard_size=args.shard_size, workers=args.workers,
                          resampling=args.resampling, compression=args.compression,
                          strict=args.strict)
    if archive:
        extract_archive(opts, StreamOptions(
            archive=source.absolute(), fmt=args.format, v1_lists=args.v1_lists,
            index_out=index_out, buffer_mb=args.stream_buffer_mb,
            decompressor=args.decompressor))
    else:
        extract(opts)
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


def extract_archive(opts: ExtractOptions, stream: StreamOptions) -> dict:
    """One pass over the archive: shards, index, reports (see :mod:`.stream`); return the
    streaming facts written to extract-report.json."""
    started = time.perf_counter()
    if not is_tar(stream.archive):
        raise ArchiveError(f"{stream.archive}: not a .tar/.tar.gz/.tar.zst archive")
    result = extract_stream(opts, stream)
    facts = result.facts
    receipts = sorted(result.receipts, key=lambda r: (SPLITS.index(r.split), r.number))
    if opts.strict:
        fail_on_rejections(receipts)
    removed = remove_strays(opts.out, result.plans)
    written = set(result.written)
    fresh = [r for r in receipts if f"{r.split}/{shard_name(r.number)}" in written]
    # per shard written: the netCDF file (none when every patch was rejected) and the
    # receipt; then stats, manifest, this report, the index and its report
    facts["files_created"] = sum(1 + (r.path is not None) for r in fresh) + 5
    write_outputs(opts, receipts, written=result.written, removed=removed,
                  elapsed_s=time.perf_counter() - started, stream=facts)
    return facts
