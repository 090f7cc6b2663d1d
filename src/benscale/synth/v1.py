"""The v1.0 layout: one folder per patch with 12 band GeoTIFFs and the labels JSON, plus
the official split and exclusion lists (bzip2, no header, CRLF)."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import numpy as np

from benscale.bigearthnet import (
    PATCH_SIZE_M,
    V1_EXCLUSION_FILES,
    V1_JSON_SUFFIX,
    V1_ROOT_DIR,
    V1_SPLIT_FILES,
    label_tables,
)
from benscale.synth.plan import NO_CLASS_LABELS, Patch
from benscale.synth.tiff import write_band


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


def write_v1_patch(root: Path, patch: Patch, bands: dict[str, np.ndarray]) -> None:
    """One v1 patch folder: its 12 band GeoTIFFs and its labels JSON."""
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
