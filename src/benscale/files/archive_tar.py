"""A tar archive read as ONE sequential stream: no seek, nothing unpacked.

Shared by ``benscale ingest`` (which unpacks through :mod:`tarfile`) and ``benscale extract
ARCHIVE`` (which reads the members into memory through :class:`TarReader`), so both use
the same decompressor, refuse the same members and report a cut stream the same way
(docs/ingest.md, docs/shards.md "Streaming from the archive").

Decompression runs beside the reader, never in its thread: an external program in a pipe
(``zstd -dc``; ``pigz -dc`` or ``gzip -dc``) or a thread of python-isal / zlib /
zstandard, which release the GIL while they inflate. The archive file is fed to it in
large blocks by a thread that also drives the progress bar.

:class:`TarReader` parses the headers itself (ustar, GNU long names, pax) with a few slices
and one checksum per header: :mod:`tarfile`'s much longer Python path per header, run for
each of the millions of members of a BigEarthNet release, would make the one thread every
patch goes through the bottleneck (docs/shards.md, "Streaming from the archive").
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import posixpath
import queue
import shutil
import subprocess
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import zstandard
from tqdm import tqdm

from benscale.errors import ConfigError
from benscale.files.archive import tar_mode

#: What a cut or damaged stream raises while members are read (tarfile itself, zlib,
#: zstandard, I/O errors, and a truncated compressed stream).
STREAM_ERRORS: tuple[type[Exception], ...] = (tarfile.ReadError, EOFError, zlib.error,
                                              zstandard.ZstdError, OSError)
#: ``--decompressor`` choices; ``auto`` takes the first available of :data:`AUTO_ORDER`.
DECOMPRESSORS: tuple[str, ...] = ("auto", "zstd", "pigz", "gzip", "isal", "python")
#: Compression (``zst``, ``gz``, ``""`` for a plain tar) -> decompressors, fastest first:
#: external programs run on their own core; python-isal inflates about twice as fast as
#: zlib; ``python`` (zstandard or zlib in a thread) always works.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"zst": ("zstd", "python"),
                                          "gz": ("isal", "pigz", "gzip", "python"),
                                          "": ("none",)}
#: External decompressors: name -> argv (reads stdin, writes stdout).
EXTERNAL: dict[str, tuple[str, ...]] = {"zstd": ("zstd", "-dcq"), "pigz": ("pigz", "-dc"),
                                        "gzip": ("gzip", "-dc")}
#: Bytes read from the archive file per block, and asked of a pipe per read.
BLOCK = 1 << 20
#: Pipe buffer asked of Linux (default 64 KiB): fewer switches between the two processes.
PIPE_BYTES = 1 << 20
#: Decompressed blocks a decompressing thread may hold ahead of the reader.
QUEUE_BLOCKS = 32


def compression_of(archive: Path) -> str:
    """``zst``, ``gz``, or ``""`` (plain tar) from the archive's suffix."""
    return {"zst": "zst", "r|gz": "gz"}.get(tar_mode(archive), "")


def available(name: str) -> bool:
    """Whether decompressor ``name`` can run here."""
    if name in EXTERNAL:
        return shutil.which(EXTERNAL[name][0]) is not None
    if name == "isal":
        return importlib.util.find_spec("isal") is not None
    return name in ("python", "none")


def choose_decompressor(archive: Path, wanted: str = "auto") -> str:
    """The decompressor to use for ``archive`` (see :data:`AUTO_ORDER`).

    Raises:
        ConfigError: ``wanted`` does not fit the archive's compression or is not installed.
    """
    kind = compression_of(archive)
    if kind == "":
        return "none"
    if wanted == "auto":
        return next(n for n in AUTO_ORDER[kind] if available(n))
    if wanted not in AUTO_ORDER[kind]:
        raise ConfigError(f"--decompressor {wanted}: not for a .tar.{kind} archive; choose "
                          f"from {', '.join(AUTO_ORDER[kind])} or auto")
    if not available(wanted):
        hint = "pip install isal" if wanted == "isal" else f"apt-get install {wanted}"
        raise ConfigError(f"--decompressor {wanted}: not installed here ({hint}), or use auto")
    return wanted


class DecompressedStream:
    """The archive's tar bytes, read in order (``read``), from a decompressor running beside.

    Use as a context manager; after the last read, :meth:`finish` says whether the
    decompressor found the archive complete.
    """

    def __init__(self, archive: Path, decompressor: str, desc: str | None = None,
                 progress: bool = True) -> None:
        """Start ``decompressor`` on ``archive``, with a progress bar over the archive's
        bytes (``desc``) unless ``progress`` is False."""
        self.archive, self.name = archive, decompressor
        self.compressed_bytes = 0  # bytes of the archive file read so far
        self.bytes_out = 0         # tar bytes handed out
        self._bar = tqdm(total=archive.stat().st_size, unit="B", unit_scale=True,
                         mininterval=2, desc=desc or f"read {archive.name}",
                         disable=None if progress else True)
        self._error: str | None = None  # what the feeding/decompressing thread met
        self._proc: subprocess.Popen | None = None
        self._queue: queue.Queue | None = None
        self._pending = b""
        self._stop = threading.Event()
        self._raw: BinaryIO | None = None
        self._thread: threading.Thread | None = None
        if decompressor == "none":
            self._raw = archive.open("rb", buffering=0)
        elif decompressor in EXTERNAL:
            self._start_external(EXTERNAL[decompressor])
        else:
            self._start_thread(_inflater(decompressor, compression_of(archive)))

    # ------------------------------------------------------------------ sources
    def _start_external(self, argv: tuple[str, ...]) -> None:
        # A file, not a pipe: a chatty decompressor must never block on its stderr.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen([shutil.which(argv[0]) or argv[0], *argv[1:]],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, bufsize=0)
        for pipe in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._thread = threading.Thread(target=self._feed, name="benscale-tar-feed",
                                        daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        """Thread: copy the archive file into the decompressor's stdin."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            with self.archive.open("rb", buffering=0) as raw:
                while not self._stop.is_set() and (block := raw.read(BLOCK)):
                    self._proc.stdin.write(block)
                    self._count(len(block))
        except BrokenPipeError:
            pass  # the decompressor stopped (error, or closed early): finish() says why
        except OSError as exc:
            self._error = f"reading {self.archive}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()

    def _start_thread(self, make: Callable[[], Any]) -> None:
        self._queue = queue.Queue(QUEUE_BLOCKS)
        self._thread = threading.Thread(target=self._inflate, args=(make,),
                                        name="benscale-tar-inflate", daemon=True)
        self._thread.start()

    def _inflate(self, make: Callable[[], Any]) -> None:
        """Thread: decompress the archive block by block, frame after frame (member after
        member for gzip); a stream that ends inside a frame is truncated."""
        assert self._queue is not None
        unit = None
        try:
            with self.archive.open("rb", buffering=0) as raw:
                while not self._stop.is_set() and (block := raw.read(BLOCK)):
                    self._count(len(block))
                    while block:
                        unit = unit or make()
                        out = unit.decompress(block)
                        if out:
                            self._put(out)
                        block = unit.unused_data if unit.eof else b""
                        if unit.eof:
                            unit = None
            if unit is not None and not self._stop.is_set():
                self._put(EOFError("compressed stream ends inside a frame: the archive is "
                                   "truncated"))
        except (OSError, zlib.error, zstandard.ZstdError) as exc:
            self._put(exc)
        except Exception as exc:  # isal's own error class, or anything unforeseen
            self._put(OSError(f"{type(exc).__name__}: {exc}"))
        self._put(None)

    def _put(self, item: object) -> None:
        assert self._queue is not None
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _count(self, n: int) -> None:
        self.compressed_bytes += n
        self._bar.update(n)

    # ------------------------------------------------------------------ reading
    def read(self, size: int = BLOCK) -> bytes:
        """Up to ``size`` tar bytes (at least one, b"" at the end).

        Raises:
            EOFError, zlib.error, zstandard.ZstdError, OSError: the stream is cut or corrupt.
        """
        if self._raw is not None:
            data = self._raw.read(size)
            self._count(len(data))
        elif self._proc is not None:
            assert self._proc.stdout is not None
            data = os.read(self._proc.stdout.fileno(), size)
        else:
            data = self._next_block(size)
        self.bytes_out += len(data)
        return data

    def _next_block(self, size: int) -> bytes:
        if not self._pending:
            assert self._queue is not None
            item = self._queue.get()
            if item is None:
                self._queue.put(None)  # stay at the end for further reads
                return b""
            if isinstance(item, Exception):
                self._queue.put(None)
                raise item
            self._pending = item
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def finish(self) -> str | None:
        """Read to the end, stop the decompressor; its complaint, or None when the archive
        was complete (zstd's and gzip's own end checks, exit status, stderr)."""
        try:
            while self.read(BLOCK):
                pass
        except STREAM_ERRORS as exc:
            return str(exc) or type(exc).__name__
        if self._thread is not None:
            self._thread.join()
        if self._proc is not None:
            status = self._proc.wait()
            if status != 0:
                self._stderr.seek(0)
                said = self._stderr.read().decode(errors="replace").strip()
                return f"{self.name} exited with status {status}: {said or 'no message'}"
        return self._error

    def close(self) -> None:
        """Stop the decompressor (done or not) and release its pipes and threads."""
        self._stop.set()
        if self._raw is not None:
            self._raw.close()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            assert self._proc.stdout is not None
            self._proc.stdout.close()
            self._stderr.close()
        if self._queue is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._bar.close()

    def __enter__(self) -> DecompressedStream:
        """The stream itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close it."""
        self.close()


def _inflater(name: str, kind: str) -> Callable[[], Any]:
    """A factory of one-frame decompressors (``decompress``, ``eof``, ``unused_data``)."""
    if kind == "zst":
        return zstandard.ZstdDecompressor().decompressobj
    if name == "isal":
        from isal import isal_zlib

        return lambda: isal_zlib.decompressobj(wbits=31)
    return lambda: zlib.decompressobj(wbits=31)


def open_stream(archive: Path, decompressor: str = "auto", desc: str | None = None,
                progress: bool = True) -> DecompressedStream:
    """The decompressed tar bytes of ``archive`` (see :class:`DecompressedStream`), with a
    progress bar over the archive's bytes (``desc``) unless ``progress`` is False."""
    return DecompressedStream(archive, choose_decompressor(archive, decompressor), desc,
                              progress)


# ---------------------------------------------------------------------------- members
ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
#: Type flags of members that only carry the next member's name or attributes.
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
               tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_LINK_TYPES = (tarfile.LNKTYPE, tarfile.SYMTYPE)
_SPECIAL_TYPES = (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)
#: Why a read came short: outside any member's data (True) or inside it (False).
_ENDS_INSIDE = {True: "the archive ends between two members (truncated)",
                False: "the archive ends inside this member's data (truncated)"}


class Entry(NamedTuple):
    """One member of the tar: its name as stored, type flag, data size and link target.

    A named tuple: one is made per member, millions per archive.
    """

    name: str
    type: bytes
    size: int
    linkname: str = ""

    @property
    def isfile(self) -> bool:
        """A regular file (the only members whose data benscale reads)."""
        return self.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)

    @property
    def isdir(self) -> bool:
        """A directory."""
        return self.type == tarfile.DIRTYPE

    @property
    def path(self) -> str:
        """The name normalised (no ``./``, no trailing ``/``): where unpacking puts it."""
        name = self.name
        if name.startswith(".") or "/." in name or "//" in name or name.endswith("/"):
            return posixpath.normpath(name)
        return name  # already normal: the common case, without normpath's work


class TarCutError(Exception):
    """The stream ended or broke inside a member (``member``) or after one (``after``)."""

    def __init__(self, member: str | None, after: str | None, cause: str) -> None:
        """Where the cut is (the member being read, or the last complete one) and why."""
        self.member, self.after, self.cause = member, after, cause
        super().__init__(cause)


class TarReader:
    """The members of a tar stream in order: iterate for the :class:`Entry`s, call
    :meth:`read` for the data of the current one (not read: skipped).

    Raises :class:`TarCutError` where the stream ends or breaks before the end-of-archive
    marker, naming the member cut (or the last complete one when the cut is between two).
    """

    def __init__(self, stream: Any, chunk: int = 4 << 20) -> None:
        """Read from ``stream`` (``read(n) -> bytes``) in ``chunk``-byte steps."""
        self._stream, self._chunk = stream, chunk
        self._buf, self._pos = b"", 0
        self._current: Entry | None = None
        self._unread = 0      # data + padding of the current entry not consumed yet
        self._data_left = False
        self._global: dict[str, str] = {}
        self.last: str | None = None  # the last member whose data was complete
        self.members = 0

    def __iter__(self) -> Iterator[Entry]:
        """Each member in stream order (links, dirs and devices included)."""
        while True:
            if self._current is not None:
                self._skip(self._unread, self._current.name)
                self.last, self._current = self._current.name, None
            entry = self._header()
            if entry is None:
                return
            self._current, self._data_left = entry, True
            self._unread = _padded(entry.size)
            self.members += 1
            yield entry

    def read(self) -> bytes:
        """The data of the member just yielded (once)."""
        entry = self._current
        if entry is None or not self._data_left:
            raise ValueError("read() is for the current member's data, once")
        data = self._take(entry.size, entry.name)
        padding, self._unread, self._data_left = self._unread - entry.size, 0, False
        self.last, self._current = entry.name, None  # whole, whatever follows
        self._skip(padding, None)
        return data

    # ------------------------------------------------------------------ internals
    def _fill(self, need: int, member: str | None) -> bool:
        """At least ``need`` bytes in the buffer; False if the stream ends first."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos:]]
        while have < need:
            try:
                block = self._stream.read(max(self._chunk, need - have))
            except STREAM_ERRORS as exc:
                raise TarCutError(member, self.last, str(exc) or type(exc).__name__) from exc
            if not block:
                break
            parts.append(block)
            have += len(block)
        self._buf, self._pos = b"".join(parts), 0
        return have >= need

    def _take(self, n: int, member: str | None) -> bytes:
        pos = self._pos
        if len(self._buf) - pos < n:  # refill only when short (the rare case)
            if not self._fill(n, member):
                raise TarCutError(member, self.last, _ENDS_INSIDE[member is None])
            pos = self._pos
        self._pos = pos + n
        return self._buf[pos:pos + n]

    def _skip(self, n: int, member: str | None) -> None:
        """Pass over ``n`` bytes: the data of ``member``, or padding (None)."""
        while n > 0:
            have = len(self._buf) - self._pos
            if have >= n:
                self._pos += n
                return
            n -= have
            self._buf, self._pos = b"", 0
            if not self._fill(min(n, self._chunk), member):
                raise TarCutError(member, self.last, _ENDS_INSIDE[member is None])

    def _header(self) -> Entry | None:
        """The next member's header (with its long-name and pax headers applied)."""
        longname = longlink = None
        pax: dict[str, str] = {}
        while True:
            if len(self._buf) - self._pos < tarfile.BLOCKSIZE \
                    and not self._fill(tarfile.BLOCKSIZE, None):
                if len(self._buf) == self._pos:
                    if self.members == 0:
                        return None  # not one byte: the caller says "empty"
                    raise TarCutError(None, self.last, "the archive ends without its "
                                      "end-of-archive marker (truncated after this member)")
                raise TarCutError(None, self.last, _ENDS_INSIDE[True])
            pos = self._pos
            hdr = self._buf[pos:pos + tarfile.BLOCKSIZE]
            self._pos = pos + tarfile.BLOCKSIZE
            if hdr == ZERO_BLOCK:
                return None
            size = _checked_size(hdr, self.last)
            kind = hdr[156:157]
            if kind in _META_TYPES:
                data = self._take(_padded(size), None)[:size]
                if kind == tarfile.GNUTYPE_LONGNAME:
                    longname = _text(data.split(b"\0", 1)[0])
                elif kind == tarfile.GNUTYPE_LONGLINK:
                    longlink = _text(data.split(b"\0", 1)[0])
                elif kind == tarfile.XGLTYPE:
                    self._global.update(_pax_records(data, self.last))
                else:
                    pax.update(_pax_records(data, self.last))
                continue
            if kind == tarfile.GNUTYPE_SPARSE and hdr[482]:
                self._skip_sparse_map()
            merged = {**self._global, **pax}
            if not merged.get("size", "0").isdigit():
                raise TarCutError(None, self.last, "corrupt pax header (size)")
            return self._entry(hdr, kind, size, longname, longlink, merged)

    def _skip_sparse_map(self) -> None:
        """GNU sparse members may carry extension blocks of their map after the header."""
        while True:
            block = self._take(tarfile.BLOCKSIZE, None)
            if not block[504]:
                return

    @staticmethod
    def _entry(hdr: bytes, kind: bytes, size: int, longname: str | None,
               longlink: str | None, pax: dict[str, str]) -> Entry:
        name = longname or _text(hdr[:100].split(b"\0", 1)[0])
        prefix = _text(hdr[345:500].split(b"\0", 1)[0])
        if prefix and not longname and kind not in tarfile.GNU_TYPES:
            name = f"{prefix}/{name}"
        name = pax.get("path", name)
        if kind == tarfile.AREGTYPE and name.endswith("/"):
            kind = tarfile.DIRTYPE
        if kind == tarfile.DIRTYPE:
            name = name.rstrip("/")
        if "size" in pax:
            size = int(pax["size"])
        linkname = pax.get("linkpath") or longlink or _text(hdr[157:257].split(b"\0", 1)[0])
        return Entry(name, kind, size, linkname)


def _padded(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _checked_size(hdr: bytes, after: str | None) -> int:
    """The header's data size, after checking its checksum (as tarfile does)."""
    try:
        stored = int(hdr[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        field = hdr[124:136]
        if field[0] in (0o200, 0o377):  # GNU base-256
            if field[0] == 0o377:
                raise ValueError("negative size")
            size = int.from_bytes(field[1:], "big")
        else:
            size = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError as exc:
        raise TarCutError(None, after, f"corrupt member header ({exc})") from None
    unsigned = 256 + sum(hdr) - sum(hdr[148:156])  # the checksum field counts as spaces
    if stored != unsigned:
        signed = unsigned - 256 * sum(1 for i, b in enumerate(hdr) if b > 127
                                      and not 148 <= i < 156)
        if stored != signed:
            raise TarCutError(None, after, "corrupt member header (bad checksum)")
    return size


def _pax_records(data: bytes, after: str | None) -> dict[str, str]:
    """The ``<length> <key>=<value>`` records of a pax extended header."""
    out, pos = {}, 0
    try:
        while pos < len(data) and data[pos:pos + 1] not in (b"", b"\0"):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            if length <= space - pos:
                raise ValueError(f"record length {length}")
            key, _, value = data[space + 1:pos + length - 1].partition(b"=")
            out[key.decode("utf-8", "surrogateescape")] = _text(value)
            pos += length
    except ValueError as exc:
        raise TarCutError(None, after, f"corrupt pax header ({exc})") from None
    return out


# ---------------------------------------------------------------------------- refusals
def is_absolute(name: str) -> bool:
    """An absolute member name (a leading slash or backslash): never part of a published
    tar; a plain string test, as it runs for each of millions of members."""
    return name.startswith(("/", "\\"))


def refusal(entry: Entry) -> str | None:
    """Why a member must not be read from a stream (None when it may).

    Refused: absolute names, names that climb out of the archive's folder (``..``),
    hard and symbolic links (a stream has no files to point at; a published archive has
    none), devices, FIFOs and GNU sparse members. ``benscale ingest`` refuses the same
    through tarfile's ``data`` filter, which lets links inside the target through as links.
    """
    if is_absolute(entry.name):
        return "absolute member name"
    norm = entry.path
    if norm == ".." or norm.startswith("../"):
        return "member name climbs out of the archive's folder ('..')"
    if entry.type in _LINK_TYPES:
        return f"link to {entry.linkname!r}; links are not followed"
    if entry.type in _SPECIAL_TYPES:
        return "device or FIFO"
    if entry.type == tarfile.GNUTYPE_SPARSE:
        return "GNU sparse member, not read from a stream (re-pack without --sparse)"
    return None


def refused_entry(archive: Path, name: str, problem: str) -> dict[str, str]:
    """The rejection entry of a refused member (ingest report and extract report)."""
    return {"patch_id": posixpath.basename(posixpath.dirname(name)) or name,
            "path": f"{archive}:{name}", "problem": problem}


def cut_entry(archive: Path, cut: TarCutError, count: int) -> dict[str, str]:
    """The rejection entry of a cut stream: the member cut, or the one after which it is."""
    if cut.member is not None:
        name = cut.member
        problem = (f"archive truncated or corrupt here ({cut.cause}); this member and any "
                   f"after it are missing ({count} members read before it)")
    else:
        name = cut.after or "(first member)"
        problem = (f"archive truncated or corrupt after this member ({cut.cause}); any "
                   f"member after it is missing ({count} members read)")
    return {"patch_id": posixpath.basename(posixpath.dirname(name)) or name,
            "path": f"{archive}:{name}", "problem": problem}
