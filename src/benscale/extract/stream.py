"""``benscale extract ARCHIVE``: from the published tar to the shards in one sequential pass.

The archive (``.tar``, ``.tar.gz``, ``.tar.zst``) is read once, in order, decompressed
beside the reader (:mod:`benscale.files.archive_tar`); nothing is unpacked. Each member
is routed to its patch folder in memory; a patch is *complete* when its 12 band files
(and, for v1, its labels JSON) have gone by. The index rules are those of ``benscale
ingest`` (:mod:`benscale.files.archive_v1`, :mod:`benscale.files.archive_v2`), so the
shards, stats.json and manifest.json are those that ingest + extract give on the
unpacked archive, and index.parquet and ingest-report.json are written too.

**The plan.** Shard k of a split holds the k-th run of ``shard_size`` indexed patches in
patch_id order. Where the index is known before the pass (v2: metadata.parquet beside the
tar, as the release ships it; v1: ``--v1-lists``), each split has a cursor over its
planned patches: a shard is cut and handed to a worker as soon as its patches, and every
planned patch before them, are settled (complete, or rejected). Where it is not (the
metadata or lists inside the tar, v1 without lists) the plan is made at the end of the
stream, and every patch waits until then.

**Memory.** The raw bytes of patches not yet handed to a worker are kept in memory up to
``--stream-buffer-mb``; past it they are appended to ONE scratch file in the output folder
(``.benscale-stream-spill``, deleted at the end), from which the workers read them back.
At most ``workers + 2`` shards are in flight. docs/shards.md states the bound.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benscale.atomic import write_text
from benscale.bigearthnet import (
    BAND_NAMES,
    SPLITS,
    V1_JSON_SUFFIX,
    V1_LISTS_DIR,
    V1_ROOT_DIR,
    V2_METADATA_FILE,
    V2_ROOT_DIR,
    V2_SNOW_CLOUD_FILE,
)
from benscale.errors import ArchiveError, BadPatchError, DataError
from benscale.extract.plan import ExtractOptions, ShardPlan, completed_receipt
from benscale.extract.read import BandData, ShardBytes
from benscale.extract.write import extract_shard, warm_up
from benscale.files import archive_v1, archive_v2
from benscale.files.archive_index import (
    INGEST_REPORT_FILE,
    ScanResult,
    build_table,
    ingest_report,
    missing_bands,
    report_json,
)
from benscale.files.archive_tar import (
    Entry,
    TarCutError,
    TarReader,
    cut_entry,
    open_stream,
    refusal,
    refused_entry,
)
from benscale.files.index import INDEX_FILE, write_index
from benscale.files.shards import ShardReceipt

#: Default of ``--stream-buffer-mb``: a tar in path order keeps about one shard per split
#: open (3 x 1,000 patches x ~165 kB = ~0.5 GB with the default shard size); four times
#: that leaves room for shards whose patches are spread further, and is small beside the
#: memory of a compute node.
DEFAULT_BUFFER_MB = 2048
#: Shards handed out beyond one per worker before the reader waits for one to finish: the
#: next shard is ready when a worker frees up, and the raw bytes held stay bounded.
IN_FLIGHT_EXTRA = 2
#: The scratch file of raw member bytes past the buffer (in the output folder).
SPILL_NAME = ".benscale-stream-spill"
#: Bit of the labels JSON in a v1 folder's ``present`` mask (bands are bits 0-11).
_JSON_BIT = 1 << len(BAND_NAMES)
_ALL_BANDS = (1 << len(BAND_NAMES)) - 1
#: ``<BAND>.tif`` -> band bit.
_BAND_FILES = {f"{b}.tif": 1 << i for i, b in enumerate(BAND_NAMES)}
_GOOD, _DROPPED = 1, 2
BESIDE = f"{V2_METADATA_FILE} beside the archive"


@dataclass(frozen=True)
class StreamOptions:
    """What ``benscale extract ARCHIVE`` adds to the extraction options.

    Attributes:
        archive: the .tar / .tar.gz / .tar.zst file.
        fmt: ``auto``, ``v1`` or ``v2``.
        v1_lists: folder of the official v1 lists (the plan before the pass), or None.
        index_out: where index.parquet and ingest-report.json go.
        buffer_mb: raw member bytes kept in memory before spilling.
        decompressor: a name of :data:`benscale.files.archive_tar.DECOMPRESSORS`.
    """

    archive: Path
    fmt: str
    v1_lists: Path | None
    index_out: Path
    buffer_mb: int
    decompressor: str


class _Folder:
    """What the stream has shown of one patch folder."""

    __slots__ = ("bands", "meta", "name", "path", "present", "state")

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path
        self.present = 0  # bit mask: bands, and _JSON_BIT
        self.bands: dict[str, BandData] = {}
        self.meta: dict | None = None  # v1: json_record of the labels JSON
        self.state = 0  # 0 open, _GOOD or _DROPPED once settled

    def present_names(self) -> set[str]:
        names = {f"{self.name}_{b}.tif" for i, b in enumerate(BAND_NAMES)
                 if self.present >> i & 1}
        if self.present & _JSON_BIT:
            names.add(f"{self.name}{V1_JSON_SUFFIX}")
        return names


@dataclass
class _Cursor:
    """One split's walk over its planned patches, in patch_id order."""

    split: str
    ids: list[str]
    pos: int = 0
    batch: list[str] = field(default_factory=list)
    number: int = 0


class _Spill:
    """The one scratch file of raw member bytes that did not fit the buffer."""

    def __init__(self, path: Path) -> None:
        self.path, self.size, self._fd, self.used = path, 0, None, False
        path.unlink(missing_ok=True)  # a crashed run's

    def keep(self, folder: _Folder) -> int:
        """Move a folder's in-memory band bytes to the file; return the bytes moved."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self.used = True
        moved = 0
        for band, data in folder.bands.items():
            if isinstance(data, bytes):
                view, done = memoryview(data), 0
                while done < len(data):
                    done += os.write(self._fd, view[done:])
                folder.bands[band] = (self.size, len(data))
                self.size += len(data)
                moved += len(data)
        return moved

    def close(self) -> None:
        """Close and delete the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


class _Dispatcher:
    """Hands cut shards to worker processes (or runs them here with one worker)."""

    def __init__(self, opts: ExtractOptions) -> None:
        self.opts = opts
        self.receipts: list[ShardReceipt] = []
        self.written: list[str] = []
        self._pending: set[Future[ShardReceipt]] = set()
        self._pool: ProcessPoolExecutor | None = None
        if opts.workers > 1:
            # spawn: workers start clean, with no HDF5/GDAL state inherited through fork.
            self._pool = ProcessPoolExecutor(opts.workers,
                                             mp_context=multiprocessing.get_context("spawn"))
            for _ in range(opts.workers):  # start them now: they import while we read
                self._pool.submit(warm_up)
        self.bar = tqdm(unit="patch", desc="extract", mininterval=2, disable=None)

    def submit(self, plan: ShardPlan, sources: ShardBytes) -> None:
        """Extract one shard (waits while the workers have enough to do)."""
        self.written.append(plan.rel_path)
        args = (plan, self.opts.out, self.opts.resampling, self.opts.compression,
                self.opts.strict, sources)
        if self._pool is None:
            self._done(extract_shard(*args))
            return
        while len(self._pending) >= self.opts.workers + IN_FLIGHT_EXTRA:
            self._collect(block=True)
        self._pending.add(self._pool.submit(extract_shard, *args))

    def keep(self, receipt: ShardReceipt) -> None:
        """A shard already on disk from an earlier run, as planned."""
        self.receipts.append(receipt)

    def poll(self) -> None:
        """Take in the shards finished so far, without waiting."""
        if self._pending:
            self._collect(block=False)

    def _collect(self, block: bool) -> None:
        done, self._pending = wait(self._pending, timeout=None if block else 0,
                                   return_when=FIRST_COMPLETED)
        for future in done:
            self._done(future.result())

    def _done(self, receipt: ShardReceipt) -> None:
        self.receipts.append(receipt)
        self.bar.update(len(receipt.planned))
        if self.opts.strict and receipt.rejected:
            raise _StrictStop

    def drain(self) -> None:
        """Wait for every shard handed out."""
        while self._pending:
            self._collect(block=True)

    def close(self) -> None:
        """Stop the workers (pending shards are cancelled)."""
        for future in self._pending:
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.bar.close()


class _StrictStop(Exception):  # noqa: N818 - control flow, not an error
    """--strict: a shard had a rejected patch; stop reading."""


@dataclass
class StreamResult:
    """What the pass produced, for the reports."""

    receipts: list[ShardReceipt]
    written: list[str]
    plans: list[ShardPlan]
    facts: dict[str, Any]


class StreamPass:
    """One pass over the archive; see the module docstring."""

    def __init__(self, opts: ExtractOptions, stream: StreamOptions) -> None:
        """Prepare the pass (nothing is read yet)."""
        self.opts, self.so = opts, stream
        self.archive = stream.archive
        self.fmt: str | None = None  # known at the first patch member
        self.patches_dir = ""
        self.folders: dict[str, _Folder] = {}   # v1: name; v2: product/patch_id
        self.misnamed: dict[str, dict[str, str]] = {}  # v1 folders named unlike a patch
        self.inside: dict[str, bytes] = {}       # metadata / lists found inside the tar
        self.refused: list[dict[str, str]] = []
        self.cut: dict[str, str] | None = None
        # the plan (None until known)
        self.cursors: dict[str, _Cursor] | None = None
        self.split_of: dict[str, str] = {}      # planned patch_id -> split
        self.rel_of: dict[str, str] = {}        # planned patch_id -> folder key
        self.labels: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {}
        self.v1_rules: archive_v1.V1Rules | None = None
        self.v2_rows: archive_v2.V2Rows | None = None
        self.plan_source = ""
        self.plans: list[ShardPlan] = []
        # memory
        self.budget = stream.buffer_mb << 20
        self.held = self.peak = 0
        self.holding: dict[_Folder, None] = {}  # folders with bytes in memory, in order
        self.spill = _Spill(opts.out / SPILL_NAME)
        self.late_members = 0
        self.ended = False
        self.stopped = False
        self._deferred: tuple[str, _Folder, int] | None = None
        self.dispatch: _Dispatcher | None = None

    # ------------------------------------------------------------------ the pass
    def run(self) -> StreamResult:
        """Read the archive, extract every shard, build the index; see the module doc."""
        self.opts.out.mkdir(parents=True, exist_ok=True)
        self.dispatch = _Dispatcher(self.opts)
        try:
            facts = self._read()
            if self.fmt is None:
                raise ArchiveError(self._unrecognised())
            if self.cursors is None:
                self._plan_at_end()
            self._settle_rest()
            self.dispatch.drain()
        except _StrictStop:
            facts, self.stopped = {}, True
        finally:
            self.dispatch.close()
            self.spill.close()
        facts.update({"spilled": self.spill.used, "spilled_mb": round(self.spill.size / 2**20, 1)})
        return StreamResult(self.dispatch.receipts, self.dispatch.written, self.plans, facts)

    def _read(self) -> dict[str, Any]:
        """The pass over the members."""
        count = 0
        with open_stream(self.archive, self.so.decompressor,
                         desc=f"stream {self.archive.name}") as stream:
            reader = TarReader(stream)
            try:
                for entry in reader:
                    self._mark_deferred()
                    problem = refusal(entry)
                    if problem:
                        self.refused.append(refused_entry(
                            self.archive, entry.name, f"tar member refused, not read: {problem}"))
                    else:
                        self._member(entry, reader)
                    count += 1
                    if not count & 255:
                        self.dispatch.poll()
                self._mark_deferred()
            except TarCutError as cut:
                if cut.member is None and self._deferred and cut.after == self._deferred[0]:
                    self._mark_deferred()  # its data went by whole; the cut is after it
                if count == 0:
                    raise ArchiveError(f"{self.archive}: truncated or corrupt archive, not one "
                                       f"member could be read ({cut.cause}); download it again "
                                       "and check its checksum") from cut
                self.cut = cut_entry(self.archive, cut, count)
            complaint = stream.finish()
            if complaint and self.cut is None:
                self.cut = cut_entry(self.archive, TarCutError(None, reader.last, complaint),
                                     count)
            if count == 0:
                raise ArchiveError(f"{self.archive}: the archive is empty; expected a "
                                   "BigEarthNet archive")
            return {"decompressor": stream.name, "archive_bytes": stream.compressed_bytes,
                    "tar_bytes": stream.bytes_out, "members": count}

    def _member(self, entry: Entry, reader: TarReader) -> None:
        """Route one member: a patch's file, a folder, or the metadata/lists."""
        parts = entry.path.split("/")
        top, depth = parts[0], len(parts)
        if top in (V1_ROOT_DIR, V2_ROOT_DIR):
            fmt = "v1" if top == V1_ROOT_DIR else "v2"
            if self.so.fmt not in ("auto", fmt):
                return  # --format chose the other one
            if self.fmt is None:
                self._start(fmt)
            elif fmt != self.fmt:
                raise ArchiveError(f"{self.archive}: holds both a v1 and a v2 archive; pass "
                                   "--format v1 or v2")
            if fmt == "v1":
                self._v1_member(entry, parts, depth, reader)
            else:
                self._v2_member(entry, parts, depth, reader)
        elif depth == 1 and entry.isfile and top in (V2_METADATA_FILE, V2_SNOW_CLOUD_FILE):
            self._inside_metadata(top, reader.read())
        elif depth == 2 and top == V1_LISTS_DIR and entry.isfile:
            self.inside[entry.path] = reader.read()

    def _v1_member(self, entry: Entry, parts: list[str], depth: int, reader: TarReader) -> None:
        if depth < 2 or (depth == 2 and not entry.isdir):
            return
        name = parts[1]
        folder = self.folders.get(name)
        if folder is None:
            if not archive_v1.is_v1_name(name):
                if name not in self.misnamed:
                    self.misnamed[name] = archive_v1.reject(
                        name, f"{self.patches_dir}/{name}", archive_v1.MISNAMED)
                return
            folder = self.folders[name] = _Folder(name, f"{self.patches_dir}/{name}")
        if depth != 3 or not entry.isfile or not parts[2].startswith(name):
            return
        rest = parts[2][len(name):]
        if rest == V1_JSON_SUFFIX:
            folder.meta = archive_v1.json_record(name, f"{folder.path}/{parts[2]}",
                                                 reader.read())
            self._present(folder, entry, _JSON_BIT)
        elif rest[:1] == "_" and rest[1:] in _BAND_FILES:
            self._present(folder, entry, _BAND_FILES[rest[1:]], rest[1:-4], reader)

    def _v2_member(self, entry: Entry, parts: list[str], depth: int, reader: TarReader) -> None:
        if depth < 3 or (depth == 3 and not entry.isdir):
            return
        pid = parts[2]
        rel = f"{parts[1]}/{pid}"
        folder = self.folders.get(rel)
        if folder is None:
            folder = self.folders[rel] = _Folder(pid, f"{self.patches_dir}/{rel}")
        if depth == 4 and entry.isfile and parts[3].startswith(pid):
            rest = parts[3][len(pid):]
            if rest[:1] == "_" and rest[1:] in _BAND_FILES:
                self._present(folder, entry, _BAND_FILES[rest[1:]], rest[1:-4], reader)

    def _present(self, folder: _Folder, entry: Entry, bit: int, band: str | None = None,
                 reader: TarReader | None = None) -> None:
        """A file of ``folder`` went by: note it, keep its bytes if the patch may be
        indexed, and settle the patch once complete."""
        if folder.state:
            self.late_members += 1  # the patch is settled; a duplicate member changes nothing
            return
        wanted = self.cursors is None or folder.name in self.split_of
        if band is not None and reader is not None and not wanted:
            # skipped unread: present once the stream has gone past its data whole
            self._deferred = (entry.name, folder, bit)
            return
        if band is not None and reader is not None:
            data = reader.read()
            old = folder.bands.get(band)
            if isinstance(old, bytes):
                self.held -= len(old)
            folder.bands[band] = data
            self.holding[folder] = None
            self.held += len(data)
            if self.held > self.peak:
                self.peak = self.held
            if self.held > self.budget:
                self._spill_all()
        self._mark(folder, bit)

    def _mark_deferred(self) -> None:
        if self._deferred is not None:
            _, folder, bit = self._deferred
            self._deferred = None
            self._mark(folder, bit)

    def _mark(self, folder: _Folder, bit: int) -> None:
        folder.present |= bit
        full = _ALL_BANDS | (_JSON_BIT if self.fmt == "v1" else 0)
        if folder.present == full and self.cursors is not None:
            self._settle(folder)

    def _spill_all(self) -> None:
        for folder in self.holding:
            self.held -= self.spill.keep(folder)
        self.holding.clear()

    # ------------------------------------------------------------------ the plan
    def _start(self, fmt: str) -> None:
        """The format is known: plan now if the release's plan files are at hand."""
        self.fmt = fmt
        root = V1_ROOT_DIR if fmt == "v1" else V2_ROOT_DIR
        self.patches_dir = f"{self.archive}:{root}"
        if fmt == "v1" and self.so.v1_lists is not None:
            self._plan_v1(archive_v1.read_v1_lists(self.so.v1_lists), "official lists (--v1-lists)")
        elif fmt == "v2" and V2_METADATA_FILE in self.inside:
            if V2_SNOW_CLOUD_FILE in self.inside:  # both ahead of the patches
                self._plan_v2(self._inside_v2(), f"{V2_METADATA_FILE} inside the archive")
        elif fmt == "v2" and (self.archive.parent / V2_METADATA_FILE).is_file():
            self._plan_v2(archive_v2.V2Metadata.read(self.archive.parent / V2_METADATA_FILE),
                          BESIDE)

    def _inside_metadata(self, name: str, data: bytes) -> None:
        """metadata.parquet or the snow/cloud parquet inside the tar: what ingest uses
        (before the files beside the tar)."""
        beside = self.archive.parent / name
        if self.plan_source == BESIDE and (not beside.is_file() or beside.read_bytes() != data):
            raise ArchiveError(f"{self.archive}: holds a {name} that differs from {beside}; "
                               "ingest would use the one inside the archive. Keep only one "
                               "of them")
        self.inside[name] = data

    def _inside_v2(self) -> archive_v2.V2Metadata:
        if V2_METADATA_FILE not in self.inside:
            raise ArchiveError(f"{self.archive}: has {V2_ROOT_DIR}/ but no "
                               f"{V2_METADATA_FILE}, neither inside nor beside the archive; "
                               "put the release's metadata.parquet next to the tar file")
        return archive_v2.V2Metadata.from_sources(
            self.inside[V2_METADATA_FILE], f"{self.archive}:{V2_METADATA_FILE}",
            self.inside.get(V2_SNOW_CLOUD_FILE), f"{self.archive}:{V2_SNOW_CLOUD_FILE}")

    def _plan_at_end(self) -> None:
        if self.fmt == "v2":
            self._plan_v2(self._inside_v2(), f"end of stream: {V2_METADATA_FILE} inside the "
                          "archive")
        elif any(k.startswith(f"{V1_LISTS_DIR}/") for k in self.inside):
            self._plan_v1(archive_v1.lists_from(
                lambda n: self.inside.get(f"{V1_LISTS_DIR}/{n}"),
                f"{self.archive}:{V1_LISTS_DIR}"), "end of stream: official lists inside the "
                "archive")
        else:
            self._plan_v1(None, "end of stream: deterministic split (no lists)")
        for folder in sorted(self.folders.values(), key=lambda f: f.name):
            full = _ALL_BANDS | (_JSON_BIT if self.fmt == "v1" else 0)
            if folder.present == full:
                self._settle(folder)

    def _plan_v1(self, lists: archive_v1.V1Lists | None, source: str) -> None:
        self.v1_rules = archive_v1.V1Rules(lists)
        planned = self.v1_rules.planned()
        if planned is None:  # no lists: every well-named folder of the archive
            planned = {s: [] for s in SPLITS}
            for name in sorted(f.name for f in self.folders.values()):
                planned[archive_v1.deterministic_split(name)].append(name)
        for split, names in planned.items():
            for name in names:
                self.split_of[name], self.rel_of[name] = split, name
        self._cursors(planned, source)

    def _plan_v2(self, meta: archive_v2.V2Metadata, source: str) -> None:
        self.v2_rows = archive_v2.validate(self.patches_dir, meta)
        planned = {}
        for split, rows in self.v2_rows.planned().items():
            planned[split] = []
            for pid, _path, labels in rows:
                self.split_of[pid] = split
                self.rel_of[pid] = f"{archive_v2.product_of(pid)}/{pid}"
                self.labels[pid] = (labels, None)
                planned[split].append(pid)
        self._cursors(planned, source)

    def _cursors(self, planned: dict[str, list[str]], source: str) -> None:
        self.cursors = {s: _Cursor(s, planned[s]) for s in SPLITS}
        self.plan_source = source
        # folders seen before the plan was known that it does not name hold nothing useful
        for folder in self.folders.values():
            if folder.bands and folder.name not in self.split_of:
                self._release(folder)

    # ------------------------------------------------------------------ settling
    def _settle(self, folder: _Folder) -> None:
        """A complete folder: indexed (good) or not (dropped); advance its split."""
        pid = folder.name
        split = self.split_of.get(pid)
        if split is None or self.rel_of[pid] != self._rel(folder):
            folder.state = _DROPPED
            self._release(folder)
            return
        if self.fmt == "v1":
            rec = folder.meta or {}
            if "problem" in rec or self.v1_rules.fate(pid, rec["labels"]) != ("split", split):
                folder.state = _DROPPED  # bad JSON, or no 19-class label
                self._release(folder)
                self._advance(self.cursors[split])
                return
            self.labels[pid] = (tuple(rec["labels"]), tuple(rec["labels43"]))
        folder.state = _GOOD
        self._advance(self.cursors[split])

    def _rel(self, folder: _Folder) -> str:
        return folder.name if self.fmt == "v1" else folder.path[len(self.patches_dir) + 1:]

    def _advance(self, cur: _Cursor) -> None:
        """Walk the split's plan over every settled patch; cut full shards. After the end of
        the stream, a patch not settled by then is dropped (its folder is incomplete)."""
        while cur.pos < len(cur.ids):
            pid = cur.ids[cur.pos]
            folder = self.folders.get(self.rel_of[pid])
            state = folder.state if folder is not None else 0
            if not state:
                if not self.ended:
                    return
                if folder is not None:
                    folder.state = _DROPPED
                    self._release(folder)
                state = _DROPPED
            if state == _GOOD:
                cur.batch.append(pid)
                if len(cur.batch) == self.opts.shard_size:
                    self._cut(cur)
            cur.pos += 1

    def _settle_rest(self) -> None:
        """End of stream: settle every planned patch, cut the last shard of each split."""
        self.ended = True
        for cur in self.cursors.values():
            self._advance(cur)
            if cur.batch:
                self._cut(cur)

    def _cut(self, cur: _Cursor) -> None:
        """Shard ``cur.number`` of the split is fully known: extract it (or keep it)."""
        ids = tuple(cur.batch)
        folders = [self.folders[self.rel_of[p]] for p in ids]
        plan = ShardPlan(split=cur.split, number=cur.number, patch_ids=ids,
                         folders=tuple(f.path for f in folders),
                         labels=tuple(self.labels[p][0] for p in ids), source_format=self.fmt,
                         labels43=tuple(self.labels[p][1] for p in ids)
                         if self.fmt == "v1" else None)
        cur.batch, cur.number = [], cur.number + 1
        self.plans.append(plan)
        done = completed_receipt(plan, self.opts)
        if done is not None:
            self.dispatch.keep(done)
            for folder in folders:
                self._release(folder)
            return
        sources = ShardBytes({f.name: dict(f.bands) for f in folders},
                             str(self.spill.path) if self.spill.used else None)
        for folder in folders:
            self._release(folder)
        self.dispatch.submit(plan, sources)

    def _release(self, folder: _Folder) -> None:
        if self.holding.pop(folder, 0) is None:
            self.held -= sum(len(d) for d in folder.bands.values() if isinstance(d, bytes))
        folder.bands = {}

    # ------------------------------------------------------------------ the index
    def index(self) -> ScanResult:
        """The index of what the stream held, by ingest's rules."""
        if self.fmt == "v1":
            names = sorted(self.folders)
            if not names and not self.misnamed:
                raise ArchiveError(f"{self.patches_dir}: the archive is empty (no patch folders)")
            records = []
            for name in names:
                folder = self.folders[name]
                meta = folder.meta or archive_v1.json_record(
                    name, f"{folder.path}/{name}{V1_JSON_SUFFIX}", None)
                records.append(archive_v1.patch_record(name, folder.path,
                                                       folder.present_names(), meta))
            lists = self.v1_rules.lists if self.v1_rules else None
            result = archive_v1.assign(records, list(self.misnamed.values()), lists)
        else:
            result = archive_v2.finish(self.patches_dir, self.v2_rows, _StreamFolders(self))
        extra = self.refused + ([self.cut] if self.cut else [])
        result.rejected = extra + result.rejected
        return result

    def _unrecognised(self) -> str:
        want = "a BigEarthNet archive" if self.so.fmt == "auto" else \
            f"a {self.so.fmt} BigEarthNet archive"
        return (f"{self.archive}: not {want}; expected {V1_ROOT_DIR}/<patch>/ (v1), or "
                f"{V2_ROOT_DIR}/ with {V2_METADATA_FILE} beside the tar (v2), at the top of "
                "the tar")


class _StreamFolders:
    """The v2 image folders as the stream showed them (a ``V2Folders``)."""

    def __init__(self, run: StreamPass) -> None:
        self.run = run

    def band_problems(self, todo: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        problems = {}
        for pid, path in todo:
            folder = self.run.folders.get(f"{archive_v2.product_of(pid)}/{pid}")
            if folder is None:
                problems[pid] = (path, archive_v2.FOLDER_MISSING)
                continue
            gap = missing_bands(pid, path, folder.present_names())
            if gap:
                problems[pid] = gap
        return problems

    def folders(self) -> Iterator[tuple[str, str, str]]:
        for rel, folder in self.run.folders.items():
            yield rel.split("/", 1)[0], folder.name, folder.path


def extract_stream(opts: ExtractOptions, so: StreamOptions) -> StreamResult:
    """Run the pass; write index.parquet and ingest-report.json; return the receipts and
    the facts for extract-report.json (the caller writes stats, manifest and report)."""
    started = time.perf_counter()
    run = StreamPass(opts, so)
    result = run.run()
    facts = result.facts
    if run.stopped:  # --strict stopped the pass at a rejected patch
        return result
    scan = run.index()
    table = build_table(scan.columns)
    report = ingest_report(str(so.archive), run.fmt, scan, table, True)
    report["ingest_time_s"] = round(time.perf_counter() - started, 3)
    so.index_out.mkdir(parents=True, exist_ok=True)
    report_path = so.index_out / INGEST_REPORT_FILE
    write_text(report_path, report_json(report))
    if opts.strict and scan.rejected:
        first = scan.rejected[0]
        raise BadPatchError(first["patch_id"], first["path"],
                            f"{first['problem']} (--strict: {len(scan.rejected)} patch(es) "
                            f"rejected; see {report_path}; no index written)")
    write_index(so.index_out / INDEX_FILE, table)
    _check_plan(result.plans, table, opts.shard_size)
    facts.update({
        "archive": str(so.archive), "format": run.fmt, "plan": run.plan_source,
        "index": str((so.index_out / INDEX_FILE).absolute()),
        "ingest_report": str(report_path.absolute()),
        "members_refused": len(run.refused), "cut": run.cut,
        "members_after_patch_done": run.late_members,
        "rejected": scan.rejected, "excluded_counts": report["excluded_counts"],
        "buffer_mb": so.buffer_mb, "peak_buffered_mb": round(run.peak / 2**20, 1),
        "shards_in_flight_max": opts.workers + IN_FLIGHT_EXTRA if opts.workers > 1 else 1,
    })
    return result


def _check_plan(plans: list[ShardPlan], table: Any, shard_size: int) -> None:
    """The shards cut during the pass are those the written index plans (a guard: a
    difference is a bug of this module, never of the input)."""
    ids = table["patch_id"].to_pylist()
    splits = table["split"].to_pylist()
    want: list[tuple[str, tuple[str, ...]]] = []
    for split in SPLITS:
        rows = [p for p, s in zip(ids, splits, strict=True) if s == split]
        want += [(split, tuple(rows[i:i + shard_size])) for i in range(0, len(rows), shard_size)]
    got = [(p.split, p.patch_ids) for p in sorted(plans, key=lambda p: (SPLITS.index(p.split),
                                                                        p.number))]
    if got != want:
        raise DataError(f"internal error: the shards cut while streaming differ from the plan "
                        f"of the index ({len(got)} vs {len(want)} shards); please report it")
