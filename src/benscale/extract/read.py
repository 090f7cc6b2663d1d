"""Reading a patch: its 12 band GeoTIFFs through rasterio, resampled to 120 x 120.

20 m and 60 m bands are resampled exactly as torchgeo does (``out_shape`` + bilinear, or
nearest); 10 m bands are read bit-exact. A bad file raises :class:`BadPatchError` naming
it; the caller leaves that patch out and keeps the others.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader

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


def read_patches(plan: ShardPlan, resampling: Resampling
                 ) -> tuple[list[str], np.ndarray, np.ndarray, list[Rejection]]:
    """Read every planned patch; return (kept ids, reflectance, multi-hot labels, rejections).

    The arrays are allocated once for the whole shard (a 1,000-patch shard is 346 MB) and
    a bad patch's slot is reused by the next good one, so rows stay aligned with ``ids``.
    """
    n = len(plan.patch_ids)
    reflectance = np.empty((n, len(BANDS), PATCH_PX, PATCH_PX), dtype=BAND_DTYPE)
    labels = np.zeros((n, len(label_tables().classes19)), dtype=np.uint8)
    ids: list[str] = []
    rejected: list[Rejection] = []
    for patch_id, folder, names in zip(plan.patch_ids, plan.folders, plan.labels, strict=True):
        try:
            labels[len(ids)] = encode_labels(patch_id, folder, names)
            read_patch(patch_id, Path(folder), resampling, out=reflectance[len(ids)])
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
               out: np.ndarray | None = None) -> np.ndarray:
    """The 12 bands of one patch as uint16 (12, 120, 120), in BAND_NAMES order.

    Args:
        patch_id: the patch's name; its files are ``folder/<patch_id>_<BAND>.tif``.
        folder: the patch folder.
        resampling: how 20 m and 60 m bands reach 120 x 120.
        out: an array to fill (saves a copy when assembling a shard).
    """
    if out is None:
        out = np.empty((len(BANDS), PATCH_PX, PATCH_PX), dtype=BAND_DTYPE)
    prefix = os.path.join(folder, patch_id)  # plain strings: pathlib joins cost more
    with band_reading():
        for i, band in enumerate(BANDS):
            read_band(patch_id, f"{prefix}_{band.name}.tif", band.native_px, resampling,
                      out=out[i])
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
              out: np.ndarray) -> None:
    """One band into ``out`` (120 x 120): as stored for 10 m bands, resampled like torchgeo
    otherwise. Call it inside :func:`band_reading`.

    Raises:
        BadPatchError: the file is missing, unreadable, or not a native_px-square uint16
            single-band raster.
    """
    try:
        with DatasetReader(path, driver="GTiff") as src:  # no other format, even if
            _check_band(patch_id, path, src, native_px)       # another driver parses it
            if native_px == PATCH_PX:
                src.read(1, out=out)
            else:
                src.read(1, out=out, resampling=resampling)
    except RasterioError as exc:
        if not os.path.isfile(path):  # asked only on failure: one stat call less per band
            raise BadPatchError(patch_id, path, "missing band file") from None
        raise BadPatchError(patch_id, path, f"unreadable or corrupt GeoTIFF ({exc})") from exc


def _check_band(patch_id: str, path: str, src: DatasetReader, native_px: int) -> None:
    if src.count != 1:
        raise BadPatchError(patch_id, path, f"{src.count} bands, expected 1")
    if src.dtypes[0] != BAND_DTYPE.name:
        raise BadPatchError(patch_id, path, f"dtype {src.dtypes[0]}, expected uint16")
    if (src.width, src.height) != (native_px, native_px):
        raise BadPatchError(patch_id, path, f"size {src.width}x{src.height} px, expected "
                            f"{native_px}x{native_px} for this band")
