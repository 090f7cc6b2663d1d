"""``benscale synth``: a learnable synthetic archive in the exact published layout.

The embedded default of the benchmark: when the configuration names no archive, the
workflow runs the whole pipeline on what this writes. It must therefore look exactly like
the real thing to every later stage (names, folders, GeoTIFF sizes, CRS, geotransform,
JSON keys, parquet schema, official list format; see ``shared/bigearthnet/FORMAT.md``) and
it must be learnable, so that a training run measures something real:

* each patch is a mosaic of Voronoi regions, one or more per 19-class label of the patch;
* a region of class ``c`` carries the class's spectral signature (12 reflectances: a
  surface prototype - water, forest, crops, soil, urban, sand, wetland - plus a fixed
  class-specific offset) modulated by the class's texture (a sinusoid with a
  class-specific frequency and orientation), times a per-patch illumination, plus noise;
* labels are drawn with the real v2 class frequencies and co-occurrence groups (farmland,
  forest and semi-natural, water and coast), 1 to 5 labels per patch;
* a few patches carry seasonal snow or cloud and shadow (and, in v1, labels that map to no
  19-class), listed in the official exclusion files and kept out of the splits, as in the
  real release.

The class signatures and textures are fixed (independent of ``--seed``), so every archive
describes the same "world"; the seed picks the patches. Same seed, same bytes.

GeoTIFFs: GDAL (through rasterio) writes one template per (band size, CRS, nodata); each
band file is that template with its pixel block and tie point replaced, which gives the
bytes GDAL itself writes (checked in tests/test_synth.py) at a hundredth of the cost of
opening a GDAL dataset per file (26,000 files for 2,000 patches).
"""

from __future__ import annotations

import argparse
import bz2
import json
import math
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from benscale.bigearthnet import (
    BAND_NAMES,
    BANDS,
    PATCH_PX,
    PATCH_SIZE_M,
    SPLITS,
    V1_EXCLUSION_FILES,
    V1_JSON_SUFFIX,
    V1_LISTS_DIR,
    V1_ROOT_DIR,
    V1_SPLIT_FILES,
    V2_LABEL_COUNTS,
    V2_LABELS_PER_PATCH,
    V2_METADATA_FILE,
    V2_ROOT_DIR,
    V2_SNOW_CLOUD_FILE,
    label_tables,
)
from benscale.errors import ConfigError

#: Most patches one archive can hold: 8 products x a 100 x 100 grid of patch positions.
MAX_PATCHES = 80_000


@dataclass(frozen=True)
class Product:
    """A Sentinel-2 L2A product (one tile on one date) the synthetic patches are cut from.

    Taken from real v2 products (reference/v2/metadata.parquet); three have an hour < 10,
    so their v1 names have the 5-digit time (``T93020``) of the real archive.
    """

    satellite: str
    datetime: str  # YYYYMMDDTHHMMSS (UTC)
    orbit: int
    tile: str  # e.g. T33UUP
    country: str
    s1_stamp: str  # the matching Sentinel-1 acquisition, YYYYMMDDTHHMMSS
    ulx0: int  # easting of the (col 0, row 0) patch's upper-left corner
    uly0: int

    @property
    def epsg(self) -> int:
        """UTM north zone of the tile: EPSG 326<zone>."""
        return 32600 + int(self.tile[1:3])

    @property
    def v1_time(self) -> str:
        """The v1 spelling of the time: a leading zero of the hour dropped (FORMAT.md)."""
        return self.datetime.split("T")[1].removeprefix("0")


PRODUCTS: tuple[Product, ...] = (
    Product("S2A", "20170613T101031", 22, "T33UUP", "Austria", "20170612T165809", 399960, 5400000),
    Product("S2A", "20170617T113321", 80, "T29UPU", "Ireland", "20170617T064724", 600000, 5900040),
    Product("S2B", "20170924T093020", 136, "T34TEP", "Serbia", "20170924T162516", 499980, 5000040),
    Product("S2B", "20180525T094029", 36, "T35VNK", "Finland", "20180524T154016", 499980, 6900000),
    Product("S2A", "20170704T112111", 37, "T29SND", "Portugal", "20170706T064235", 600000, 4500000),
    Product("S2B", "20170808T094029", 36, "T35ULA", "Lithuania", "20170808T043459", 300000, 6100020),
    Product("S2B", "20180506T105029", 51, "T31UER", "Belgium", "20180509T174044", 499980, 5700000),
    Product("S2A", "20170818T103021", 108, "T32TMT", "Switzerland", "20170818T054218", 399960, 5200020),
)

#: Surface prototypes: typical L2A reflectance x 10,000 in the band order of BANDS
#: (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12), shapes after the USGS spectral
#: library (vegetation red edge, water absorption in the NIR/SWIR, bright sand and snow).
PROTOTYPES: dict[str, tuple[int, ...]] = {
    "urban": (900, 1000, 1100, 1200, 1400, 1600, 1700, 1800, 1850, 1700, 2200, 1900),
    "crops": (400, 450, 750, 500, 1200, 2600, 3100, 3300, 3400, 3300, 2000, 1000),
    "soil": (700, 800, 1100, 1400, 1700, 2000, 2200, 2300, 2400, 2300, 3000, 2400),
    "forest": (250, 300, 500, 300, 800, 2000, 2400, 2600, 2700, 2600, 1300, 600),
    "water": (300, 400, 500, 300, 250, 200, 180, 150, 130, 100, 60, 40),
    "sand": (1500, 1800, 2200, 2600, 2800, 3000, 3100, 3200, 3300, 3200, 3800, 3200),
    "wetland": (350, 450, 650, 500, 900, 1500, 1700, 1800, 1850, 1800, 1100, 600),
    "snow": (7000, 7500, 7400, 7200, 7000, 6800, 6600, 6400, 6300, 5000, 800, 600),
    "cloud": (5000, 5200, 5300, 5400, 5500, 5600, 5600, 5700, 5700, 4000, 4500, 3500),
}

#: Each 19-class label as a mix of prototypes, in the original class order.
CLASS_MIX: tuple[dict[str, float], ...] = (
    {"urban": 1.0},                                  # Urban fabric
    {"urban": 1.2},                                  # Industrial or commercial units
    {"soil": 0.5, "crops": 0.5},                     # Arable land
    {"crops": 0.85, "soil": 0.15},                   # Permanent crops
    {"crops": 1.05},                                 # Pastures
    {"crops": 0.6, "soil": 0.4},                     # Complex cultivation patterns
    {"crops": 0.5, "forest": 0.5},                   # Agriculture with natural vegetation
    {"forest": 0.6, "soil": 0.4},                    # Agro-forestry areas
    {"forest": 1.1},                                 # Broad-leaved forest
    {"forest": 0.8},                                 # Coniferous forest
    {"forest": 0.95},                                # Mixed forest
    {"soil": 0.6, "crops": 0.4},                     # Natural grassland, sparse vegetation
    {"forest": 0.5, "soil": 0.5},                    # Moors, heathland
    {"forest": 0.6, "crops": 0.4},                   # Transitional woodland, shrub
    {"sand": 1.0},                                   # Beaches, dunes, sands
    {"wetland": 1.0},                                # Inland wetlands
    {"wetland": 0.5, "water": 0.5},                  # Coastal wetlands
    {"water": 1.1},                                  # Inland waters
    {"water": 0.8},                                  # Marine waters
)

#: Co-occurrence groups (indices into the 19 classes): labels of a patch are drawn mostly
#: from the group of its first label, as farmland, forest and coast cluster in reality.
LABEL_GROUPS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4, 5, 6, 7),
    (6, 8, 9, 10, 11, 12, 13, 15, 17),
    (14, 15, 16, 17, 18, 0),
)
#: Weight of a label outside the first label's group, relative to inside.
OUT_OF_GROUP_WEIGHT = 0.15
#: Relative amplitude of the class texture, and of the pixel noise.
TEXTURE_AMPLITUDE = 0.18
NOISE_LEVEL = 0.04
#: The 43-class labels of v1 that map to no 19-class (labels.json "dropped43") used for
#: the few patches without a 19-class label.
NO_CLASS_LABELS: tuple[str, ...] = ("Road and rail networks and associated land",
                                    "Sport and leisure facilities", "Dump sites")
#: Fractions of patches with seasonal snow, with cloud or shadow, without a 19-class label
#: (real v1: 10.5 %, 1.6 %, 0.01 %; fewer here, but at least one each from 20 patches on).
SNOW_FRACTION, CLOUD_FRACTION, NO_CLASS_FRACTION = 0.03, 0.01, 0.002
#: Split shares (roughly the official 50/25/25).
SPLIT_SHARES: tuple[float, float, float] = (0.5, 0.25, 0.25)


@dataclass(frozen=True)
class Patch:
    """One synthetic patch: where it lies, what it shows, where it goes."""

    product: Product
    col: int
    row: int
    classes: tuple[int, ...]  # 19-class indices, ascending
    condition: str  # "clear", "seasonal snow", "cloud or shadow", "no class"
    split: str

    @property
    def v1_name(self) -> str:
        """Unpadded v1 folder name, with the 5-digit time where the hour is < 10."""
        p = self.product
        return f"{p.satellite}_MSIL2A_{p.datetime[:8]}T{p.v1_time}_{self.col}_{self.row}"

    @property
    def v2_product(self) -> str:
        """v2 product folder: the patch_id without its ``_xx_yy``."""
        p = self.product
        return f"{p.satellite}_MSIL2A_{p.datetime}_N9999_R{p.orbit:03d}_{p.tile}"

    @property
    def v2_patch_id(self) -> str:
        """Zero-padded v2 patch_id."""
        return f"{self.v2_product}_{self.col:02d}_{self.row:02d}"

    @property
    def ulx(self) -> int:
        """Easting of the upper-left corner (metres, UTM)."""
        return self.product.ulx0 + self.col * PATCH_SIZE_M

    @property
    def uly(self) -> int:
        """Northing of the upper-left corner (metres, UTM)."""
        return self.product.uly0 - self.row * PATCH_SIZE_M


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``benscale synth``."""
    parser.add_argument("--format", choices=("v1", "v2"), default="v2",
                        help="archive layout to write (default v2)")
    parser.add_argument("--patches", type=int, default=2000, help="number of patches")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--out", type=Path, required=True,
                        help="archive folder to create (must not exist or be empty)")


def run(args: argparse.Namespace) -> int:
    """Write the archive; see the module docstring."""
    synthesize(args.format, args.patches, args.seed, args.out)
    return 0


def synthesize(fmt: str, n_patches: int, seed: int, out: Path) -> Path:
    """Write an archive of ``n_patches`` in layout ``fmt`` to ``out``; return ``out``.

    The archive is built in a hidden sibling folder and renamed onto ``out`` when complete,
    so ``out`` never holds half an archive.
    """
    if fmt not in ("v1", "v2"):
        raise ConfigError(f"--format {fmt!r}: expected v1 or v2")
    if not 1 <= n_patches <= MAX_PATCHES:
        raise ConfigError(f"--patches {n_patches}: expected 1 to {MAX_PATCHES}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty folder; choose a new --out")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    patches = plan_patches(n_patches, fmt, rng)
    writer = _write_v1_patch if fmt == "v1" else _write_v2_patch
    for patch in tqdm(patches, desc=f"synth {fmt}", unit="patch", mininterval=2,
                      disable=n_patches < 500):
        writer(tmp, patch, render_patch(patch, rng))
    if fmt == "v1":
        write_v1_lists(tmp / V1_LISTS_DIR, patches)
    else:
        write_v2_metadata(tmp, patches)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


# --- Planning: names, labels, conditions, splits -----------------------------------------

def plan_patches(n: int, fmt: str, rng: np.random.Generator) -> list[Patch]:
    """Draw every patch's product, position, labels, condition and split."""
    products = rng.permutation(np.arange(n) % len(PRODUCTS))
    positions = {p: iter(rng.permutation(100 * 100)) for p in range(len(PRODUCTS))}
    conditions = _draw_conditions(n, fmt, rng)
    splits = _draw_splits(conditions, rng)
    patches = []
    for i in range(n):
        pos = int(next(positions[int(products[i])]))
        classes = () if conditions[i] == "no class" else draw_labels(rng)
        patches.append(Patch(PRODUCTS[int(products[i])], pos % 100, pos // 100, classes,
                             conditions[i], splits[i]))
    return patches


def draw_labels(rng: np.random.Generator) -> tuple[int, ...]:
    """1 to 5 distinct 19-class labels: real frequencies, grouped co-occurrence."""
    counts = np.array([V2_LABELS_PER_PATCH[k] for k in range(1, 6)], dtype=float)
    k = int(rng.choice(np.arange(1, 6), p=counts / counts.sum()))
    freq = _class_frequencies()
    first = int(rng.choice(19, p=freq))
    group = next(g for g in LABEL_GROUPS if first in g)
    weights = freq * np.where(np.isin(np.arange(19), group), 1.0, OUT_OF_GROUP_WEIGHT)
    weights[first] = 0.0
    rest = rng.choice(19, size=k - 1, replace=False, p=weights / weights.sum())
    return tuple(sorted({first, *map(int, rest)}))


@cache
def _class_frequencies() -> np.ndarray:
    counts = np.array([V2_LABEL_COUNTS[c] for c in label_tables().classes19], dtype=float)
    return counts / counts.sum()


def _draw_conditions(n: int, fmt: str, rng: np.random.Generator) -> list[str]:
    """Mark a few patches snowy, cloudy or (v1) without a 19-class label."""
    conditions = ["clear"] * n
    if n < 20:
        return conditions
    wanted = [("seasonal snow", SNOW_FRACTION), ("cloud or shadow", CLOUD_FRACTION)]
    if fmt == "v1":
        wanted.append(("no class", NO_CLASS_FRACTION))
    order = iter(rng.permutation(n))
    for condition, fraction in wanted:
        for _ in range(max(1, round(fraction * n))):
            conditions[int(next(order))] = condition
    return conditions


def _draw_splits(conditions: list[str], rng: np.random.Generator) -> list[str]:
    """About 50/25/25 over all patches, at least one clear patch per split from 3 on.

    Snowy and cloudy patches get a split too (v2 keeps one in its snow/cloud parquet); the
    guarantee is for the clear ones, which are what an index keeps.
    """
    n = len(conditions)
    splits = [""] * n
    clear = [i for i, c in enumerate(conditions) if c == "clear"]
    other = [i for i, c in enumerate(conditions) if c != "clear"]
    for group in (clear, other):
        order = rng.permutation(group) if group else []
        n_train = math.ceil(SPLIT_SHARES[0] * len(group))
        n_val = math.ceil(SPLIT_SHARES[1] * len(group))
        if len(group) >= 3:
            n_train = min(n_train, len(group) - 2)
            n_val = max(1, min(n_val, len(group) - n_train - 1))
        for j, i in enumerate(order):
            k = 0 if j < n_train else 1 if j < n_train + n_val else 2
            splits[int(i)] = SPLITS[k]
    return splits


# --- Pixels ------------------------------------------------------------------------------

@cache
def class_signatures() -> np.ndarray:
    """(19, 12) float32 reflectance of each class: prototype mix + a fixed class offset.

    The offset (up to +-15 % per band, from a fixed generator) keeps classes with the same
    prototype mix apart; it does not depend on ``--seed``.
    """
    fixed = np.random.default_rng(19)
    sig = np.zeros((19, len(BANDS)), dtype=np.float64)
    for c, mix in enumerate(CLASS_MIX):
        for proto, weight in mix.items():
            sig[c] += weight * np.asarray(PROTOTYPES[proto], dtype=np.float64)
    sig *= 1.0 + fixed.uniform(-0.15, 0.15, size=sig.shape)
    return sig.astype(np.float32)


@cache
def class_textures() -> tuple[np.ndarray, np.ndarray]:
    """Per class: spatial frequency (cycles per patch, 2..16) and orientation (radians)."""
    fixed = np.random.default_rng(43)
    freq = np.linspace(2.0, 16.0, 19)[fixed.permutation(19)]
    theta = np.pi * ((np.arange(19) * 7) % 19) / 19
    return freq.astype(np.float32), theta.astype(np.float32)


@cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:PATCH_PX, 0:PATCH_PX].astype(np.float32)
    return y, x


def render_patch(patch: Patch, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The 12 bands of a patch as uint16 arrays at their native sizes."""
    classes = patch.classes or (0,)  # a patch without 19-class label looks urban-ish
    region = _voronoi(len(classes), rng)
    cls = np.asarray(classes)[region]  # (120, 120) class index per pixel
    y, x = _grid()
    freq, theta = class_textures()
    phase = rng.uniform(0, 2 * np.pi, size=19).astype(np.float32)
    wave = (x * np.cos(theta[cls]) + y * np.sin(theta[cls])) * (2 * np.pi / PATCH_PX)
    texture = 1.0 + TEXTURE_AMPLITUDE * np.sin(freq[cls] * wave + phase[cls])
    illumination = np.float32(rng.uniform(0.85, 1.15))
    sig = class_signatures()[cls]  # (120, 120, 12)
    value = sig * (texture * illumination)[..., None]
    value += NOISE_LEVEL * sig * _noise(value.shape, rng)
    if patch.condition in ("seasonal snow", "cloud or shadow"):
        _overlay(value, patch.condition, rng)
    cube = np.clip(np.rint(value), 1, 20000).astype(np.uint16).transpose(2, 0, 1)
    return {band.name: _block_mean(cube[i], band.native_px) for i, band in enumerate(BANDS)}


@cache
def _noise_bank() -> np.ndarray:
    """4 Mi standard normals drawn once; patches take windows of it (cheaper than drawing)."""
    return np.random.default_rng(4).standard_normal(1 << 22, dtype=np.float32)


def _noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard-normal noise of ``shape``: a window of the bank at a random offset."""
    bank, size = _noise_bank(), math.prod(shape)
    start = int(rng.integers(0, bank.size - size))
    return bank[start:start + size].reshape(shape)


def _voronoi(n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Region map (120, 120) of indices into the patch's classes; every class present."""
    n_seeds = n_classes + int(rng.integers(0, 4))
    owner = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_seeds - n_classes)])
    seeds = rng.uniform(0, PATCH_PX, size=(n_seeds, 2)).astype(np.float32)
    y, x = _grid()
    dist = (y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2
    return owner[np.argmin(dist, axis=0)]


def _overlay(value: np.ndarray, condition: str, rng: np.random.Generator) -> None:
    """Paint snow (a bright band of the patch) or a cloud with its shadow, in place."""
    y, x = _grid()
    cy, cx = rng.uniform(20, 100, size=2)
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 25.0 ** 2))[..., None]
    if condition == "seasonal snow":
        value[:] = value * (1 - blob) + np.asarray(PROTOTYPES["snow"], np.float32) * blob
    else:
        shadow = np.exp(-((y - cy - 15) ** 2 + (x - cx - 15) ** 2) / (2 * 25.0 ** 2))[..., None]
        value *= 1 - 0.6 * shadow
        value[:] = value * (1 - blob) + np.asarray(PROTOTYPES["cloud"], np.float32) * blob


def _block_mean(band: np.ndarray, size: int) -> np.ndarray:
    """Aggregate a 120 px band to its native ``size`` (60 or 20 px) by block mean."""
    if size == PATCH_PX:
        return np.ascontiguousarray(band)
    f = PATCH_PX // size
    return np.rint(band.reshape(size, f, size, f).mean(axis=(1, 3))).astype(np.uint16)


# --- GeoTIFF writing through GDAL-made templates ----------------------------------------

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
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile
    from affine import Affine

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


# --- v1 ----------------------------------------------------------------------------------

def _utm_wkt(epsg: int) -> str:
    """The projection WKT exactly as the real v1 JSON spells it (GDAL 2 style)."""
    zone = epsg - 32600
    return (
        f'PROJCS["WGS 84 / UTM zone {zone}N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID['
        '"WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],'
        'PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,'
        'AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY['
        '"EPSG","4326"]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
        f'PARAMETER["central_meridian",{6 * zone - 183}],PARAMETER["scale_factor",0.9996],'
        'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1,'
        'AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY['
        f'"EPSG","{epsg}"]]'
    )


def v1_labels(patch: Patch, rng: np.random.Generator) -> list[str]:
    """43-class names of a patch, in the 43-class order as in the real JSON files."""
    tables = label_tables()
    if patch.condition == "no class":
        return [NO_CLASS_LABELS[int(rng.integers(len(NO_CLASS_LABELS)))]]
    names = set()
    for c in patch.classes:
        sources = [n for n, cls in tables.map43_to_19.items() if cls == tables.classes19[c]]
        names.add(sources[int(rng.integers(len(sources)))])
    if rng.random() < 0.1:  # a dropped label beside mapped ones, as in the real archive
        names.add(NO_CLASS_LABELS[0])
    return sorted(names, key=tables.labels43.index)


def v1_json(patch: Patch, rng: np.random.Generator) -> dict:
    """The ``<name>_labels_metadata.json`` content with all five keys."""
    p = patch.product
    date = p.datetime
    stamp = f"{date[:4]}-{date[4:6]}-{date[6:8]} {date[9:11]}:{date[11:13]}:{date[13:15]}"
    return {
        "labels": v1_labels(patch, rng),
        "coordinates": {"ulx": patch.ulx, "uly": patch.uly,
                        "lrx": patch.ulx + PATCH_SIZE_M, "lry": patch.uly - PATCH_SIZE_M},
        "projection": _utm_wkt(p.epsg),
        "tile_source": f"{p.satellite}_MSIL1C_{date}_N0205_R{p.orbit:03d}_{p.tile}_{date}.SAFE",
        "acquisition_date": stamp,
    }


def _write_v1_patch(root: Path, patch: Patch, bands: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng([patch.col, patch.row, patch.product.orbit])
    name = patch.v1_name
    folder = root / V1_ROOT_DIR / name
    folder.mkdir(parents=True)
    for band, pixels in bands.items():
        write_band(folder / f"{name}_{band}.tif", pixels, patch, nodata=None)
    (folder / f"{name}{V1_JSON_SUFFIX}").write_text(json.dumps(v1_json(patch, rng)))


def write_v1_lists(folder: Path, patches: list[Patch]) -> None:
    """The five official lists in the official format: bzip2, no header, CRLF."""
    folder.mkdir(parents=True)
    lists: dict[str, list[str]] = {f: [] for f in (*V1_SPLIT_FILES.values(),
                                                    *V1_EXCLUSION_FILES.values())}
    for p in patches:
        if p.condition == "clear":
            lists[V1_SPLIT_FILES[p.split]].append(p.v1_name)
        elif p.condition in V1_EXCLUSION_FILES:
            lists[V1_EXCLUSION_FILES[p.condition]].append(p.v1_name)
    for file, names in lists.items():
        text = "".join(f"{n}\r\n" for n in names)
        (folder / f"{file}.bz2").write_bytes(bz2.compress(text.encode()))


# --- v2 ----------------------------------------------------------------------------------

def _write_v2_patch(root: Path, patch: Patch, bands: dict[str, np.ndarray]) -> None:
    pid = patch.v2_patch_id
    folder = root / V2_ROOT_DIR / patch.v2_product / pid
    folder.mkdir(parents=True)
    for band, pixels in bands.items():
        write_band(folder / f"{pid}_{band}.tif", pixels, patch, nodata=0)


#: Arrow schema of the real v2 metadata files (reference/v2/, written by DuckDB).
V2_METADATA_SCHEMA = pa.schema([
    ("patch_id", pa.string()), ("labels", pa.list_(pa.field("element", pa.string()))),
    ("split", pa.string()), ("country", pa.string()), ("s1_name", pa.string()),
    ("s2v1_name", pa.string()), ("contains_seasonal_snow", pa.bool_()),
    ("contains_cloud_or_shadow", pa.bool_()),
])


def _v2_rows(patches: list[Patch]) -> Iterator[dict]:
    classes = label_tables().classes19
    for p in patches:
        s1 = p.product.s1_stamp
        yield {
            "patch_id": p.v2_patch_id,
            "labels": sorted(classes[c] for c in p.classes),  # alphabetical, as published
            "split": p.split, "country": p.product.country,
            "s1_name": f"S1B_IW_GRDH_1SDV_{s1}_{p.product.tile[1:]}_{p.col}_{p.row}",
            "s2v1_name": p.v1_name,
            "contains_seasonal_snow": p.condition == "seasonal snow",
            "contains_cloud_or_shadow": p.condition == "cloud or shadow",
        }


def write_v2_metadata(root: Path, patches: list[Patch]) -> None:
    """metadata.parquet (clear patches) and the snow/cloud parquet (the others)."""
    for file, keep in ((V2_METADATA_FILE, True), (V2_SNOW_CLOUD_FILE, False)):
        rows = list(_v2_rows([p for p in patches if (p.condition == "clear") == keep]))
        table = pa.Table.from_pylist(rows, schema=V2_METADATA_SCHEMA)
        pq.write_table(table, root / file)
