"""Reading a patch: its 12 band GeoTIFFs through rasterio, resampled to 120 x 120.

20 m and 60 m bands are resampled exactly as torchgeo does (``out_shape`` + bilinear, or
nearest); 10 m bands are read bit-exact. The band files are files on disk (an index from
``benscale ingest``) or bytes taken from the archive stream (:class:`ShardBytes`, decoded
from memory through GDAL's /vsimem with the same calls, so the pixels are the same bits).
A bad file raises :class:`BadPatchError` naming it; the caller leaves that patch out and
keeps the others.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, MemoryFile

from benscale.bigearthnet import BANDS, PATCH_PX, label_tables
from benscale.errors import BadPatchError
from benscale.extract.plan import ShardPlan
from benscale.files.shards import Rejection

#: --resampling choices -> rasterio methods (torchgeo's BigEarthNet uses bilinear).
RESAMPLING: dict[str, Resampling] = {"bilinear": Resampling.bilinear,
                                     "nearest": Resampling.nearest}
#: GDAL settings for reading band files (measured in docs/benchmarks.md, "Extraction"):
#: no listing of the patch folder on every open (costly on Lustre/GPFS), no probing for
#: .aux.xml side-cars, and no georeferencing: extraction needs pixels only, and building
#: each file's CRS from the PROJ database is most of a band file's open+read time.
GDAL_ENV: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                            "GDAL_PAM_ENABLED": "NO", "GDAL_GEOREF_SOURCES": "NONE"}
#: Band-file dtype of BigEarthNet (docs/bigearthnet.md).
BAND_DTYPE = np.dtype("uint16")


#: Where a band file's bytes are: in memory, or (offset, length) in the spill file.
BandData = bytes | tuple[int, int]


@dataclass
class ShardBytes:
    """The band files of a shard's patches as taken from the archive stream.

    Attributes:
        bands: patch id -> band name -> the file's bytes, or (offset, length) in ``spill``.
        spill: the stream's scratch file holding the bytes not kept in memory (or None).
    """

    bands: dict[str, dict[str, BandData]]
    spill: str | None = None
    _fd: int | None = field(default=None, init=False, repr=False, compare=False)

    def band(self, patch_id: str, band: str) -> bytes | None:
        """The bytes of one band file (None: the stream did not hold it)."""
        data = self.bands.get(patch_id, {}).get(band)
        if data is None or isinstance(data, bytes):
            return data
        if self._fd is None:
            assert self.spill is not None, "spilled bytes without a spill file"
            self._fd = os.open(self.spill, os.O_RDONLY)
        offset, length = data
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        """Close the spill file if it was opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self) -> dict:
        """Pickled for a worker without the open file (each process opens its own)."""
        return {**self.__dict__, "_fd": None}


def read_patches(plan: ShardPlan, resampling: Resampling, sources: ShardBytes | None = None
                 ) -> tuple[list[str], np.ndarray, np.ndarray, list[Rejection]]:
    """Read every planned patch; return (kept ids, reflectance, multi-hot labels, rejections).

    The arrays are allocated once for the whole shard (a 1,000-patch shard is 346 MB) and
    a bad patch's slot is reused by the next good one, so rows stay aligned with ``ids``.
    With ``sources``, the band files are the stream's bytes instead of files on disk.
    """
    n = len(plan.patch_ids)
    reflectance = np.empty((n, len(BANDS), PATCH_PX, PATCH_PX), dtype=BAND_DTYPE)
    labels = np.zeros((n, len(label_tables().classes19)), dtype=np.uint8)
    ids: list[str] = []
    rejected: list[Rejection] = []
    for patch_id, folder, names in zip(plan.patch_ids, plan.folders, plan.labels, strict=True):
        try:
            labels[len(ids)] = encode_labels(patch_id, folder, names)
            read_patch(patch_id, Path(folder), resampling, out=reflectance[len(ids)],
                       sources=sources)
        except BadPatchError as exc:
            rejected.append(Rejection(exc.patch_id, plan.split, exc.path, exc.problem))
            continue
        ids.append(patch_id)
    return ids, reflectance[:len(ids)], labels[:len(ids)], rejected


def labels43_of(plan: ShardPlan, kept: list[str]) -> np.ndarray | None:
    """Multi-hot (kept patches, 43) over labels.json's 43 labels, or None without them.

    The index's labels43 come from ingest, which checked every name against labels.json.
    """
    if plan.labels43 is None:
        return None
    names43 = label_tables().labels43
    by_id = dict(zip(plan.patch_ids, plan.labels43, strict=True))
    hot = np.zeros((len(kept), len(names43)), dtype=np.uint8)
    for row, patch_id in enumerate(kept):
        hot[row, [names43.index(n) for n in by_id[patch_id]]] = 1
    return hot


def encode_labels(patch_id: str, folder: str, names: Iterable[str]) -> np.ndarray:
    """Multi-hot uint8 vector over the 19 classes in their ORIGINAL order."""
    classes = label_tables().classes19
    hot = np.zeros(len(classes), dtype=np.uint8)
    for name in names:
        if name not in classes:
            raise BadPatchError(patch_id, folder, f"unknown 19-class label {name!r} in the "
                                "index; re-run `benscale ingest`")
        hot[classes.index(name)] = 1
    return hot


def read_patch(patch_id: str, folder: Path, resampling: Resampling,
               out: np.ndarray | None = None, sources: ShardBytes | None = None) -> np.ndarray:
    """The 12 bands of one patch as uint16 (12, 120, 120), in BAND_NAMES order.

    Args:
        patch_id: the patch's name; its files are ``folder/<patch_id>_<BAND>.tif``.
        folder: the patch folder (with ``sources``: the folder inside the archive, which
            messages name).
        resampling: how 20 m and 60 m bands reach 120 x 120.
        out: an array to fill (saves a copy when assembling a shard).
        sources: the band files' bytes from the archive stream, instead of files on disk.
    """
    if out is None:
        out = np.empty((len(BANDS), PATCH_PX, PATCH_PX), dtype=BAND_DTYPE)
    prefix = os.path.join(folder, patch_id)  # plain strings: pathlib joins cost more
    with band_reading():
        for i, band in enumerate(BANDS):
            data = None if sources is None else sources.band(patch_id, band.name)
            if sources is not None and data is None:
                raise BadPatchError(patch_id, f"{prefix}_{band.name}.tif", "missing band file")
            read_band(patch_id, f"{prefix}_{band.name}.tif", band.native_px, resampling,
                      out=out[i], data=data)
    return out


@contextmanager
def band_reading() -> Iterator[None]:
    """The GDAL environment of :data:`GDAL_ENV`, without the warning it implies.

    Opening a patch's band files as ``rasterio.io.DatasetReader`` inside this one
    environment skips the environment that ``rasterio.open`` sets up and tears down on every
    call (measured in docs/benchmarks.md, "Extraction").
    """
    with rasterio.Env(**GDAL_ENV), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # GDAL_GEOREF_SOURCES=NONE
        yield


def read_band(patch_id: str, path: str, native_px: int, resampling: Resampling,
              out: np.ndarray, data: bytes | None = None) -> None:
    """One band into ``out`` (120 x 120): as stored for 10 m bands, resampled like torchgeo
    otherwise. Call it inside :func:`band_reading`.

    Args:
        patch_id: the patch's name (for messages).
        path: the band file (with ``data``: the name messages give it).
        native_px: the band's side in pixels as stored.
        resampling: how a 20 m or 60 m band reaches 120 x 120.
        out: the (120, 120) array to fill.
        data: the file's bytes, decoded from memory (GDAL /vsimem) instead of ``path``.

    Raises:
        BadPatchError: the file is missing, unreadable, or not a native_px-square uint16
            single-band raster.
    """
    try:
        if data is None:
            with DatasetReader(path, driver="GTiff") as src:  # no other format, even if
                _read_into(patch_id, path, src, native_px, resampling, out)  # another parses
        else:
            with MemoryFile(data) as mem, DatasetReader(mem.name, driver="GTiff") as src:
                _read_into(patch_id, path, src, native_px, resampling, out)
    except RasterioError as exc:
        if data is None and not os.path.isfile(path):  # asked only on failure
            raise BadPatchError(patch_id, path, "missing band file") from None
        raise BadPatchError(patch_id, path, f"unreadable or corrupt GeoTIFF ({exc})") from exc


def _read_into(patch_id: str, path: str, src: DatasetReader, native_px: int,
               resampling: Resampling, out: np.ndarray) -> None:
    _check_band(patch_id, path, src, native_px)
    if native_px == PATCH_PX:
        src.read(1, out=out)
    else:
        src.read(1, out=out, resampling=resampling)


def _check_band(patch_id: str, path: str, src: DatasetReader, native_px: int) -> None:
    if src.count != 1:
        raise BadPatchError(patch_id, path, f"{src.count} bands, expected 1")
    if src.dtypes[0] != BAND_DTYPE.name:
        raise BadPatchError(patch_id, path, f"dtype {src.dtypes[0]}, expected uint16")
    if (src.width, src.height) != (native_px, native_px):
        raise BadPatchError(patch_id, path, f"size {src.width}x{src.height} px, expected "
                            f"{native_px}x{native_px} for this band")
