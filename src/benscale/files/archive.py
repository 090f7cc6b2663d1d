"""The archive as published: which BigEarthNet layout a folder holds, and which files are
archives (the input of ``benscale ingest`` and ``benscale extract``, the output of
``benscale synth``).

The layouts themselves (folder names, metadata files) are facts in
:mod:`benscale.bigearthnet`; this module recognises them on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benscale.bigearthnet import V1_LISTS_DIR, V1_ROOT_DIR, V2_METADATA_FILE, V2_ROOT_DIR
from benscale.errors import ArchiveError

#: Archive suffixes -> tarfile stream mode ("zst" is decompressed with zstandard).
TAR_SUFFIXES: dict[str, str] = {".tar": "r|", ".tar.gz": "r|gz", ".tgz": "r|gz",
                                ".tar.zst": "zst", ".tar.zstd": "zst"}


def is_tar(path: Path) -> bool:
    """True when ``path`` names a file with one of the supported tar suffixes."""
    return path.is_file() and any(path.name.endswith(s) for s in TAR_SUFFIXES)


def tar_mode(path: Path) -> str:
    """The stream mode of a tar file (see :data:`TAR_SUFFIXES`)."""
    return next(m for s, m in TAR_SUFFIXES.items() if path.name.endswith(s))


@dataclass(frozen=True)
class ArchiveLayout:
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



def detect_layout(root: Path, wanted: str = "auto", beside: Path | None = None) -> ArchiveLayout:
    """Recognise a v1 or v2 archive at ``root`` (the holder or the top folder itself).

    Args:
        root: the folder to look at.
        wanted: ``auto``, ``v1`` or ``v2``.
        beside: another folder that may hold the v2 metadata: the folder of an unpacked
            tar, since the release ships ``BigEarthNet-S2.tar.zst`` with
            ``metadata.parquet`` (and the snow/cloud parquet) beside it, not inside.
    """
    candidates: list[ArchiveLayout] = []
    if root.name == V1_ROOT_DIR:
        candidates.append(ArchiveLayout("v1", root,
                                        lists_dir=_dir_or_none(root.parent / V1_LISTS_DIR)))
    if (root / V1_ROOT_DIR).is_dir():
        candidates.append(ArchiveLayout("v1", root / V1_ROOT_DIR,
                                 lists_dir=_dir_or_none(root / V1_LISTS_DIR)))
    if root.name == V2_ROOT_DIR:
        for meta in (root.parent / V2_METADATA_FILE, root / V2_METADATA_FILE):
            if meta.is_file():
                candidates.append(ArchiveLayout("v2", root, metadata=meta))
                break
    if (root / V2_METADATA_FILE).is_file():
        candidates.append(ArchiveLayout("v2", root / V2_ROOT_DIR, metadata=root / V2_METADATA_FILE))
    elif (root / V2_ROOT_DIR).is_dir() and beside is not None \
            and (beside / V2_METADATA_FILE).is_file():
        candidates.append(ArchiveLayout("v2", root / V2_ROOT_DIR,
                                        metadata=beside / V2_METADATA_FILE))
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
    if root.is_dir() and not [p for p in root.iterdir() if not p.name.startswith(".")]:
        return f"{root}: the archive is empty; expected {what}"
    if (root / V2_ROOT_DIR).is_dir():
        return (f"{root}: has {V2_ROOT_DIR}/ but no {V2_METADATA_FILE} beside it; put the "
                "release's metadata.parquet next to the folder")
    return (f"{root}: not {what}; expected {V1_ROOT_DIR}/<patch>/ (v1), or {V2_ROOT_DIR}/ "
            f"with {V2_METADATA_FILE} beside it (v2), or a .tar/.tar.gz/.tar.zst of either")
