"""Facts about BigEarthNet Sentinel-2, kept as data in one place.

Every constant cites its source. The authoritative copy of the formats is
``shared/bigearthnet/FORMAT.md`` (checked against the real files), which in turn cites:

* Sumbul et al., "BigEarthNet: A Large-Scale Benchmark Archive for Remote Sensing Image
  Understanding", IGARSS 2019 (v1.0 layout, 43 CORINE labels).
* Sumbul et al., "BigEarthNet-MM", IEEE GRSM 2021 (the 19-class nomenclature).
* Clasen et al., "reBEN: Refined BigEarthNet Dataset for Remote Sensing Image Analysis",
  2024 (v2.0 layout, metadata.parquet).
* ESA, Sentinel-2 MSI User Guide (band resolutions and centre wavelengths).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 L2A band as stored in BigEarthNet."""

    name: str
    resolution_m: int
    wavelength_nm: int

    @property
    def native_px(self) -> int:
        """Side length of the band's GeoTIFF: a patch covers 1200 m x 1200 m."""
        return PATCH_SIZE_M // self.resolution_m


#: A patch covers 1200 m x 1200 m on the ground (FORMAT.md, "Bands").
PATCH_SIZE_M = 1200
#: Every band is resampled to the 10 m grid: 120 x 120 pixels (torchgeo, FORMAT.md).
PATCH_PX = 120

#: The 12 bands in the customary channel order (torchgeo's BigEarthNet and the published
#: band statistics). There is no B10 in L2A. Resolutions and centre wavelengths: ESA
#: Sentinel-2 MSI User Guide, as tabulated in FORMAT.md.
BANDS: tuple[Band, ...] = (
    Band("B01", 60, 443),
    Band("B02", 10, 490),
    Band("B03", 10, 560),
    Band("B04", 10, 665),
    Band("B05", 20, 705),
    Band("B06", 20, 740),
    Band("B07", 20, 783),
    Band("B08", 10, 842),
    Band("B8A", 20, 865),
    Band("B09", 60, 945),
    Band("B11", 20, 1610),
    Band("B12", 20, 2190),
)
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in BANDS)
BANDS_BY_NAME: dict[str, Band] = {b.name: b for b in BANDS}

#: Named band sets. "s2-10" drops the two 60 m atmospheric bands (B01 aerosols, B09 water
#: vapour), as many BigEarthNet baselines do (bigearthnet-models-tf "S2 10 bands").
BAND_SETS: dict[str, tuple[str, ...]] = {
    "s2-12": BAND_NAMES,
    "s2-10": tuple(n for n in BAND_NAMES if n not in ("B01", "B09")),
}

#: Published per-band statistics, for cross-checking our own train-split statistics.
#: v1: bigearthnet-models-tf (also used by SeCo and torchgeo). v2: ConfigILM, train split,
#: bilinear to 120 px. Source of both: FORMAT.md, "Band statistics".
PUBLISHED_STATS: dict[str, dict[str, dict[str, float]]] = {
    "v1": dict(zip(BAND_NAMES, (
        {"mean": 340.77, "std": 554.81}, {"mean": 429.94, "std": 572.42},
        {"mean": 614.22, "std": 582.88}, {"mean": 590.24, "std": 675.89},
        {"mean": 950.68, "std": 729.90}, {"mean": 1792.46, "std": 1096.01},
        {"mean": 2075.47, "std": 1273.45}, {"mean": 2218.95, "std": 1365.46},
        {"mean": 2266.46, "std": 1356.14}, {"mean": 2246.06, "std": 1302.33},
        {"mean": 1594.43, "std": 1079.19}, {"mean": 1009.33, "std": 818.87},
    ), strict=True)),
    "v2": dict(zip(BAND_NAMES, (
        {"mean": 360.65, "std": 563.17}, {"mean": 438.37, "std": 607.03},
        {"mean": 614.06, "std": 603.30}, {"mean": 588.41, "std": 684.57},
        {"mean": 942.75, "std": 727.58}, {"mean": 1769.85, "std": 1087.43},
        {"mean": 2049.48, "std": 1261.43}, {"mean": 2193.29, "std": 1369.37},
        {"mean": 2235.49, "std": 1342.49}, {"mean": 2241.11, "std": 1294.36},
        {"mean": 1568.21, "std": 1063.92}, {"mean": 997.72, "std": 806.88},
    ), strict=True)),
}

#: Split names as used in our index (v2's own spelling; v1's val.csv maps to "validation").
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Archive sizes, for documentation and sanity checks (FORMAT.md).
V1_PATCH_COUNT = 590_326
V2_PATCH_COUNT = 549_488
V2_METADATA_ROWS = 480_038


@dataclass(frozen=True)
class LabelTables:
    """The 43 CORINE level-3 labels and the 19-class nomenclature, as published."""

    labels43: tuple[str, ...]
    classes19: tuple[str, ...]
    map43_to_19: dict[str, str | None]


@cache
def label_tables() -> LabelTables:
    """Load ``data/labels.json`` (a copy of ``shared/bigearthnet/labels.json``).

    The 19-class order is the ORIGINAL order of BigEarthNet-MM (torchgeo's order), never
    alphabetical; 11 of the 43 labels map to no class.
    """
    raw = json.loads(resources.files("benscale.data").joinpath("labels.json").read_text())
    labels43 = tuple(item["name"] for item in sorted(raw["labels43"], key=lambda i: i["index"]))
    classes = sorted(raw["labels19"], key=lambda i: i["index"])
    mapping: dict[str, str | None] = dict.fromkeys(labels43)
    for cls in classes:
        for idx in cls["from43"]:
            mapping[labels43[idx]] = cls["name"]
    return LabelTables(labels43, tuple(c["name"] for c in classes), mapping)
