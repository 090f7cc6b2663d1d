"""Planning a synthetic archive: products, patch positions, labels, conditions, splits.

Labels are drawn with the real v2 class frequencies and co-occurrence groups (farmland,
forest and semi-natural, water and coast), 1 to 5 labels per patch; a few patches carry
seasonal snow or cloud and shadow (and, in v1, labels that map to no 19-class), listed in
the official exclusion files and kept out of the splits, as in the real release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from benscale.bigearthnet import (
    PATCH_SIZE_M,
    SPLITS,
    V2_LABEL_COUNTS,
    V2_LABELS_PER_PATCH,
    label_tables,
)


@dataclass(frozen=True)
class Product:
    """A Sentinel-2 L2A product (one tile on one date) the synthetic patches are cut from.

    Taken from real v2 products (the release's metadata.parquet); three have an hour < 10,
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
        """The v1 spelling of the time: a leading zero of the hour dropped (docs/bigearthnet.md)."""
        return self.datetime.split("T")[1].removeprefix("0")


PRODUCTS: tuple[Product, ...] = (
    Product("S2A", "20170613T101031", 22, "T33UUP", "Austria", "20170612T165809", 399960, 5400000),
    Product("S2A", "20170617T113321", 80, "T29UPU", "Ireland", "20170617T064724", 600000, 5900040),
    Product("S2B", "20170924T093020", 136, "T34TEP", "Serbia", "20170924T162516", 499980, 5000040),
    Product("S2B", "20180525T094029", 36, "T35VNK", "Finland", "20180524T154016", 499980, 6900000),
    Product("S2A", "20170704T112111", 37, "T29SND", "Portugal", "20170706T064235", 600000, 4500000),
    Product("S2B", "20170808T094029", 36, "T35ULA", "Lithuania", "20170808T043459", 300000,
            6100020),
    Product("S2B", "20180506T105029", 51, "T31UER", "Belgium", "20180509T174044", 499980, 5700000),
    Product("S2A", "20170818T103021", 108, "T32TMT", "Switzerland", "20170818T054218", 399960,
            5200020),
)

#: Surface prototypes: typical L2A reflectance x 10,000 in the band order of BANDS
#: (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12), shapes after the USGS spectral
#: library (vegetation red edge, water absorption in the NIR/SWIR, bright sand and snow).

LABEL_GROUPS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4, 5, 6, 7),
    (6, 8, 9, 10, 11, 12, 13, 15, 17),
    (14, 15, 16, 17, 18, 0),
)
#: Weight of a label outside the first label's group, relative to inside.
OUT_OF_GROUP_WEIGHT = 0.15
#: Relative amplitude of the class texture, and of the pixel noise.
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
