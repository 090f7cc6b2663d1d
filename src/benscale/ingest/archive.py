"""Find the archive's layout, and unpack .tar / .tar.gz / .tar.zst archives safely.

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

from benscale.bigearthnet import V1_LISTS_DIR, V1_ROOT_DIR, V2_METADATA_FILE, V2_ROOT_DIR
from benscale.errors import ArchiveError

#: Archive suffixes -> tarfile stream mode ("zst" is decompressed with zstandard).
TAR_SUFFIXES: dict[str, str] = {".tar": "r|", ".tar.gz": "r|gz", ".tgz": "r|gz",
                                ".tar.zst": "zst", ".tar.zstd": "zst"}
#: What a cut or damaged stream raises while members are read (tarfile itself, gzip's
#: zlib.error, zstandard.ZstdError, and I/O errors).
STREAM_ERRORS: tuple[type[Exception], ...] = (tarfile.ReadError, EOFError, zlib.error,
                                              zstandard.ZstdError, OSError)
#: Marker written beside a complete unpack: which archive (size, mtime) it came from.
UNPACKED_MARKER = ".benscale-unpacked.json"


@dataclass(frozen=True)
class Layout:
    """Where the patches of a recognised archive are.

    Attributes:
        format: ``v1`` or ``v2``.
        patches_dir: ``BigEarthNet-v1.0/`` or ``BigEarthNet-S2/`` (may not exist for v2
            when only the metadata is indexed, see ``--no-check-files``).
        metadata: v2 ``metadata.parquet``; None for v1.
        lists_dir: v1 lists found in the archive (``v1-lists/`` beside the patches).
    """

    format: str
    patches_dir: Path
    metadata: Path | None = None
    lists_dir: Path | None = None


@dataclass
class Unpacked:
    """An unpacked archive and the members refused on the way."""

    root: Path
    refused: list[dict[str, str]] = field(default_factory=list)


def is_tar(path: Path) -> bool:
    """True when ``path`` names a file with one of the supported tar suffixes."""
    return path.is_file() and any(path.name.endswith(s) for s in TAR_SUFFIXES)


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
    mode = next(m for s, m in TAR_SUFFIXES.items() if archive.name.endswith(s))
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

    def __init__(self, raw, bar: tqdm) -> None:  # noqa: ANN001 - any binary file
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


def detect_layout(root: Path, wanted: str = "auto", beside: Path | None = None) -> Layout:
    """Recognise a v1 or v2 archive at ``root`` (the holder or the top folder itself).

    Args:
        root: the folder to look at.
        wanted: ``auto``, ``v1`` or ``v2``.
        beside: another folder that may hold the v2 metadata: the folder of an unpacked
            tar, since the release ships ``BigEarthNet-S2.tar.zst`` with
            ``metadata.parquet`` (and the snow/cloud parquet) beside it, not inside.
    """
    candidates: list[Layout] = []
    if root.name == V1_ROOT_DIR:
        candidates.append(Layout("v1", root, lists_dir=_dir_or_none(root.parent / V1_LISTS_DIR)))
    if (root / V1_ROOT_DIR).is_dir():
        candidates.append(Layout("v1", root / V1_ROOT_DIR,
                                 lists_dir=_dir_or_none(root / V1_LISTS_DIR)))
    if root.name == V2_ROOT_DIR:
        for meta in (root.parent / V2_METADATA_FILE, root / V2_METADATA_FILE):
            if meta.is_file():
                candidates.append(Layout("v2", root, metadata=meta))
                break
    if (root / V2_METADATA_FILE).is_file():
        candidates.append(Layout("v2", root / V2_ROOT_DIR, metadata=root / V2_METADATA_FILE))
    elif (root / V2_ROOT_DIR).is_dir() and beside is not None \
            and (beside / V2_METADATA_FILE).is_file():
        candidates.append(Layout("v2", root / V2_ROOT_DIR, metadata=beside / V2_METADATA_FILE))
    if wanted != "auto":
        candidates = [c for c in candidates if c.format == wanted]
    if not candidates:
        raise ArchiveError(_unrecognised(root, wanted))
    if len({c.format for c in candidates}) > 1:
        raise ArchiveError(f"{root}: holds both a v1 and a v2 archive; pass --format v1 or v2")
    return candidates[0]


def _dir_or_none(path: Path) -> Path | None:
    return path if path.is_dir() else None


def _unrecognised(root: Path, wanted: str) -> str:
    what = "a BigEarthNet archive" if wanted == "auto" else f"a {wanted} BigEarthNet archive"
    if root.is_dir() and not [p for p in root.iterdir() if p.name != UNPACKED_MARKER]:
        return f"{root}: the archive is empty; expected {what}"
    if (root / V2_ROOT_DIR).is_dir():
        return (f"{root}: has {V2_ROOT_DIR}/ but no {V2_METADATA_FILE} beside it; put the "
                "release's metadata.parquet next to the folder")
    return (f"{root}: not {what}; expected {V1_ROOT_DIR}/<patch>/ (v1), or {V2_ROOT_DIR}/ "
            f"with {V2_METADATA_FILE} beside it (v2), or a .tar/.tar.gz/.tar.zst of either")
