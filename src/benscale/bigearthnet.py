"""Facts about BigEarthNet Sentinel-2, kept as data in one place.

Every constant cites its source. The formats are described, with their sources, in
docs/bigearthnet.md (checked against real release files); the publications:

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


#: A patch covers 1200 m x 1200 m on the ground (docs/bigearthnet.md, "Bands").
PATCH_SIZE_M = 1200
#: Every band is resampled to the 10 m grid: 120 x 120 pixels (torchgeo; docs/bigearthnet.md).
PATCH_PX = 120

#: The 12 bands in the customary channel order (torchgeo's BigEarthNet and the published
#: band statistics). There is no B10 in L2A. Resolutions and centre wavelengths: ESA
#: Sentinel-2 MSI User Guide, as tabulated in docs/bigearthnet.md.
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
#: bilinear to 120 px. Both tabulated in docs/bigearthnet.md, "Band statistics".
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

#: Archive sizes, for documentation and sanity checks (docs/bigearthnet.md).
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
    """Load ``data/labels.json``: the 43 labels and the 19 classes of BigEarthNet-MM.

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


# --- Archive layout (docs/bigearthnet.md, checked against real release files) ----------

#: Top folder of the unpacked v1.0 archive ``BigEarthNet-S2-v1.0.tar.gz``.
V1_ROOT_DIR = "BigEarthNet-v1.0"
#: Top folder of the unpacked v2.0 archive ``BigEarthNet-S2.tar.zst``.
V2_ROOT_DIR = "BigEarthNet-S2"
#: v2 metadata files published beside the archive (reBEN release).
V2_METADATA_FILE = "metadata.parquet"
V2_SNOW_CLOUD_FILE = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
#: Folder where ``benscale synth --format v1`` writes the official-format lists.
V1_LISTS_DIR = "v1-lists"

#: v1 patch folder name: unpadded col/row, 5- or 6-digit time (a leading zero of the hour
#: is dropped in 69,866 names, e.g. ``S2B_MSIL2A_20170924T93020_69_24``).
V1_NAME_PATTERN = r"S2[AB]_MSIL2A_\d{8}T\d{5,6}_\d{1,3}_\d{1,3}"
#: v2 patch_id: zero-padded coordinates; the product folder is patch_id minus ``_xx_yy``.
V2_PATCH_ID_PATTERN = r"S2[AB]_MSIL2A_\d{8}T\d{6}_N9999_R\d{3}_T\d{2}[A-Z]{3}_\d{2}_\d{2}"
#: Sentinel-2 tile id inside a v1 ``tile_source`` or a v2 patch_id, e.g. ``T33UUP``.
TILE_PATTERN = r"_(T\d{2}[A-Z]{3})_"
#: Suffix of a v1 patch's metadata file ``<name>_labels_metadata.json``.
V1_JSON_SUFFIX = "_labels_metadata.json"
#: Keys of every v1 JSON (all five are present in the real archive).
V1_JSON_KEYS: tuple[str, ...] = ("labels", "coordinates", "projection", "tile_source",
                                 "acquisition_date")
#: Format of the v1 JSON ``acquisition_date`` (UTC).
V1_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

#: Official v1 lists (bzip2 in the release, no header, one name per line, CRLF), published
#: separately from the archive. Split file -> our split name.
V1_SPLIT_FILES: dict[str, str] = {"train": "train.csv", "validation": "val.csv",
                                  "test": "test.csv"}
#: Exclusion lists of v1 (disjoint; the official splits exclude both): reason -> file.
V1_EXCLUSION_FILES: dict[str, str] = {"seasonal snow": "patches_with_seasonal_snow.csv",
                                      "cloud or shadow": "patches_with_cloud_and_shadow.csv"}
#: Sizes of the official v1 lists (counted in the published lists).
V1_LIST_COUNTS: dict[str, int] = {"train": 269_695, "validation": 123_723, "test": 125_866,
                                  "seasonal snow": 61_707, "cloud or shadow": 9_280}

#: Columns of the real v2 ``metadata.parquet`` and the snow/cloud parquet, with their Arrow
#: types (the release files, read with pyarrow: written by DuckDB, 8 columns).
V2_METADATA_COLUMNS: dict[str, str] = {
    "patch_id": "string", "labels": "list<string>", "split": "string", "country": "string",
    "s1_name": "string", "s2v1_name": "string", "contains_seasonal_snow": "bool",
    "contains_cloud_or_shadow": "bool",
}
#: Split counts of the real v2 metadata.parquet (counted).
V2_SPLIT_COUNTS: dict[str, int] = {"train": 237_871, "validation": 122_342, "test": 119_825}
#: Countries of the v2 metadata (metadata.parquet, value counts).
V2_COUNTRIES: tuple[str, ...] = ("Finland", "Portugal", "Serbia", "Lithuania", "Ireland",
                                 "Austria", "Belgium", "Switzerland", "Luxembourg", "Kosovo")
#: How often each 19-class label occurs in the v2 metadata (the release's metadata.parquet,
#: 480,038 rows); ``benscale synth`` draws labels with these frequencies.
V2_LABEL_COUNTS: dict[str, int] = {
    "Urban fabric": 63_758, "Industrial or commercial units": 11_142,
    "Arable land": 188_025, "Permanent crops": 29_588, "Pastures": 95_605,
    "Complex cultivation patterns": 99_598,
    "Land principally occupied by agriculture, with significant areas of natural "
    "vegetation": 122_709,
    "Agro-forestry areas": 33_181, "Broad-leaved forest": 135_928,
    "Coniferous forest": 154_941, "Mixed forest": 165_780,
    "Natural grassland and sparsely vegetated areas": 11_882,
    "Moors, heathland and sclerophyllous vegetation": 13_894,
    "Transitional woodland, shrub": 141_150, "Beaches, dunes, sands": 1_316,
    "Inland wetlands": 20_919, "Coastal wetlands": 1_397, "Inland waters": 63_212,
    "Marine waters": 61_832,
}
#: Labels per patch in the v2 metadata (counted): 1..5 cover 97 %.
V2_LABELS_PER_PATCH: dict[int, int] = {1: 86_375, 2: 94_649, 3: 135_885, 4: 102_036,
                                       5: 45_329, 6: 12_963, 7: 2_478, 8: 302}
