"""Unpack .tar / .tar.gz / .tar.zst archives safely.

Unpacking streams the archive once (no seeks: works for a 66 GB .tar.zst on a parallel
file system) through tarfile's ``data`` filter, so no member can land outside the target:
absolute names, ``..`` and links pointing outside are refused. A refused member is skipped
and reported as a rejection (the rest of the archive still comes through). A truncated
archive keeps every member read before the cut: the member cut off is removed and reported
as a rejection, the patches that lost files are rejected by the scan, the rest is indexed.
An archive from which not one member can be read is an :class:`ArchiveError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from tqdm import tqdm

from benscale.errors import ArchiveError
from benscale.files.archive import tar_mode

#: What a cut or damaged stream raises while members are read (tarfile itself, gzip's
#: zlib.error, zstandard.ZstdError, and I/O errors).
STREAM_ERRORS: tuple[type[Exception], ...] = (tarfile.ReadError, EOFError, zlib.error,
                                              zstandard.ZstdError, OSError)
#: Marker written beside a complete unpack: which archive (size, mtime) it came from.
UNPACKED_MARKER = ".benscale-unpacked.json"


@dataclass
class Unpacked:
    """An unpacked archive and the members refused on the way."""

    root: Path
    refused: list[dict[str, str]] = field(default_factory=list)


def unpack(archive: Path, target: Path) -> Unpacked:
    """Unpack ``archive`` into ``target`` (reused when already unpacked from the same file).

    The members go to ``target.partial`` first, renamed to ``target`` when the archive has
    been read to its end, so a crash or a truncated file leaves no half-unpacked tree that a
    re-run would take for complete.
    """
    stamp = {"archive": str(archive.resolve()), "size": archive.stat().st_size,
             "mtime_ns": archive.stat().st_mtime_ns}
    marker = target / UNPACKED_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("stamp") == stamp:
        return Unpacked(target, json.loads(marker.read_text())["refused"])
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    refused: list[dict[str, str]] = []
    try:
        _extract(archive, partial, refused)
    except (tarfile.TarError, ValueError, *STREAM_ERRORS) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ArchiveError(f"{archive}: truncated or corrupt archive, not one member could "
                           f"be read ({exc}); download it again and check its checksum") from exc
    (partial / UNPACKED_MARKER).write_text(json.dumps({"stamp": stamp, "refused": refused}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return Unpacked(target, refused)


def _extract(archive: Path, dest: Path, refused: list[dict[str, str]]) -> None:
    """Unpack every member that can be read (see module docstring)."""
    mode = tar_mode(archive)
    with open(archive, "rb") as raw, tqdm(total=archive.stat().st_size, unit="B",
                                          unit_scale=True, desc=f"unpack {archive.name}",
                                          mininterval=2, disable=None) as bar:
        stream = _Progress(raw, bar)
        if mode == "zst":
            with zstandard.ZstdDecompressor().stream_reader(stream) as plain, \
                    tarfile.open(fileobj=plain, mode="r|") as tar:
                _extract_members(tar, archive, dest, refused)
        else:
            with tarfile.open(fileobj=stream, mode=mode) as tar:
                _extract_members(tar, archive, dest, refused)


def _extract_members(tar: tarfile.TarFile, archive: Path, dest: Path,
                     refused: list[dict[str, str]]) -> None:
    """Extract member by member, so that a cut in the stream loses only the member cut.

    Raises the stream's error when it comes before the first member (nothing to keep).
    """
    safe = _SafeFilter(archive, refused)
    count, member = 0, None
    try:
        for member in tar:
            tar.extract(member, dest, filter=safe)
            count += 1
    except STREAM_ERRORS as exc:
        if count == 0:
            raise
        cut = member.name if member is not None else "(unknown member)"
        if member is not None and member.isfile():
            (dest / cut).unlink(missing_ok=True)  # a partial file must not pass for whole
        refused.append({
            "patch_id": Path(cut).parent.name or cut, "path": f"{archive}:{cut}",
            "problem": f"archive truncated or corrupt here ({exc}); this member and any "
                       f"after it are missing ({count} members read before it)"})


class _Progress:
    """A read-only file wrapper that advances a progress bar by the bytes read."""

    def __init__(self, raw, bar: tqdm) -> None:
        self._raw, self._bar = raw, bar

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._bar.update(len(data))
        return data


class _SafeFilter:
    """tarfile's ``data`` filter that records and skips refused members.

    The ``data`` filter would silently strip a leading ``/``; an absolute member name is
    refused here instead, since an archive that holds one is not the published archive.
    """

    def __init__(self, archive: Path, refused: list[dict[str, str]]) -> None:
        self.archive, self.refused = archive, refused

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        try:
            if member.name.startswith(("/", "\\")) or Path(member.name).is_absolute():
                raise tarfile.AbsolutePathError(member)
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            self.refused.append({
                "patch_id": Path(member.name).parent.name or member.name,
                "path": f"{self.archive}:{member.name}",
                "problem": f"tar member escapes the target, not extracted ({exc})",
            })
            return None
