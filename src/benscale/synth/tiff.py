"""GeoTIFF writing through GDAL-made templates.

GDAL (through rasterio) writes one template per (band size, CRS, nodata); each band file is
that template with its pixel block and tie point replaced, which gives the bytes GDAL itself
writes (checked in tests/test_synth.py) at a hundredth of the cost of opening a GDAL
dataset per file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from benscale.bigearthnet import PATCH_SIZE_M
from benscale.synth.plan import Patch


@dataclass(frozen=True)
class TiffTemplate:
    """GDAL's bytes for one (size, CRS, nodata), with where the tie point and pixels are."""

    data: bytes
    x_offset: int  # byte offset of the tie point's X (float64, little-endian)
    y_offset: int
    pixel_offset: int  # byte offset of the uncompressed uint16 pixel block

    def render(self, pixels: np.ndarray, ulx: float, uly: float) -> bytes:
        """Bytes of the GeoTIFF with these pixels and this upper-left corner."""
        buf = bytearray(self.data)
        buf[self.x_offset:self.x_offset + 8] = struct.pack("<d", ulx)
        buf[self.y_offset:self.y_offset + 8] = struct.pack("<d", uly)
        raw = pixels.astype("<u2", copy=False).tobytes()
        buf[self.pixel_offset:self.pixel_offset + len(raw)] = raw
        return bytes(buf)


#: Unusual values that occur once in a template, so their byte offsets can be found.
_PROBE_ULX, _PROBE_ULY = 123456.25, 7654321.75


@cache
def tiff_template(size: int, epsg: int, nodata: int | None) -> TiffTemplate:
    """Let GDAL write a probe GeoTIFF and locate its tie point and pixel block."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile

    res = PATCH_SIZE_M / size
    probe = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 7 + 1001)
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                      crs=CRS.from_epsg(epsg), nodata=nodata,
                      transform=Affine(res, 0, _PROBE_ULX, 0, -res, _PROBE_ULY)) as dst:
            dst.write(probe, 1)
        data = mem.read()
    offsets = [data.find(struct.pack("<d", v)) for v in (_PROBE_ULX, _PROBE_ULY)]
    pixel_offset = data.find(probe.astype("<u2").tobytes())
    if min(*offsets, pixel_offset) < 0 or any(
            data.count(struct.pack("<d", v)) != 1 for v in (_PROBE_ULX, _PROBE_ULY)):
        raise AssertionError("GDAL's GeoTIFF layout changed: cannot use it as a template")
    return TiffTemplate(data, offsets[0], offsets[1], pixel_offset)


def write_band(path: Path, pixels: np.ndarray, patch: Patch, nodata: int | None) -> None:
    """Write one band GeoTIFF (uint16, uncompressed, the patch's CRS and corner)."""
    template = tiff_template(pixels.shape[0], patch.product.epsg, nodata)
    path.write_bytes(template.render(pixels, patch.ulx, patch.uly))
