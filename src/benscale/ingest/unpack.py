"""Unpack .tar / .tar.gz / .tar.zst archives safely.

Unpacking streams the archive once (no seeks: works for a 66 GB .tar.zst on a parallel
file system), decompressed beside the reader (:mod:`benscale.files.archive_tar`: ``zstd``,
``pigz``/``gzip`` or a Python decompressor in a thread), through tarfile's ``data`` filter,
so no member can land outside the target: absolute names, ``..`` and links pointing outside
are refused. A refused member is skipped and reported as a rejection (the rest of the
archive still comes through). A truncated archive keeps every member read before the cut:
the member cut off is removed and reported as a rejection, the patches that lost files are
rejected by the scan, the rest is indexed. An archive from which not one member can be
read is an :class:`ArchiveError`.

``benscale extract ARCHIVE`` reads the same stream without unpacking it; both report
refused members and cuts with the same entries.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from benscale.errors import ArchiveError
from benscale.files.archive_tar import (
    STREAM_ERRORS,
    TarCutError,
    cut_entry,
    is_absolute,
    open_stream,
    refused_entry,
)

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
    with open_stream(archive, desc=f"unpack {archive.name}") as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        count, last, cut = _extract_members(tar, archive, dest, refused)
        complaint = stream.finish()
        if complaint and not cut:
            # The tar layer saw a clean end, the decompressor did not: the cut fell between
            # two members (or in the padding after the last).
            refused.append(cut_entry(archive, TarCutError(None, last, complaint), count))


def _extract_members(tar: tarfile.TarFile, archive: Path, dest: Path,
                     refused: list[dict[str, str]]) -> tuple[int, str | None, bool]:
    """Extract member by member, so that a cut in the stream loses only the member cut;
    return (members read, the last of them, whether the stream was cut).

    Raises the stream's error when it comes before the first member (nothing to keep).
    """
    safe = _SafeFilter(archive, refused)
    count, member, last = 0, None, None
    try:
        for member in tar:
            try:
                tar.extract(member, dest, filter=safe)
            except STREAM_ERRORS as exc:  # inside this member's data
                if member.isfile():
                    (dest / member.name).unlink(missing_ok=True)  # not whole: must not pass
                raise TarCutError(member.name, last, str(exc)) from exc
            count, last = count + 1, member.name
    except TarCutError as cut:
        refused.append(cut_entry(archive, cut, count))
        return count, last, True
    except STREAM_ERRORS as exc:  # reading the next header
        if count == 0:
            raise
        refused.append(cut_entry(archive, TarCutError(None, last, str(exc)), count))
        return count, last, True
    return count, last, False


class _SafeFilter:
    """tarfile's ``data`` filter that records and skips refused members.

    The ``data`` filter would silently strip a leading ``/``; an absolute member name is
    refused here instead, since an archive that holds one is not the published archive.
    """

    def __init__(self, archive: Path, refused: list[dict[str, str]]) -> None:
        self.archive, self.refused = archive, refused

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        try:
            if is_absolute(member.name):
                raise tarfile.AbsolutePathError(member)
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            self.refused.append(refused_entry(
                self.archive, member.name,
                f"tar member escapes the target, not extracted ({exc})"))
            return None
