"""The v2.0 (reBEN) layout: ``BigEarthNet-S2/<product>/<patch_id>/`` band GeoTIFFs plus
``metadata.parquet`` and the snow/cloud parquet, with the release's Arrow schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benscale.bigearthnet import V2_METADATA_FILE, V2_ROOT_DIR, V2_SNOW_CLOUD_FILE, label_tables
from benscale.synth.plan import Patch
from benscale.synth.tiff import write_band


def write_v2_patch(root: Path, patch: Patch, bands: dict[str, np.ndarray]) -> None:
    """One v2 patch folder (inside its product folder): its 12 band GeoTIFFs."""
    pid = patch.v2_patch_id
    folder = root / V2_ROOT_DIR / patch.v2_product / pid
    folder.mkdir(parents=True)
    for band, pixels in bands.items():
        write_band(folder / f"{pid}_{band}.tif", pixels, patch, nodata=0)


#: Arrow schema of the real v2 metadata files (the release's, written by DuckDB).
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
