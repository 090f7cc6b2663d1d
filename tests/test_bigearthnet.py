"""The dataset facts agree with the published label table and FORMAT.md."""

import json

from benscale.bigearthnet import BAND_NAMES, BAND_SETS, BANDS_BY_NAME, label_tables


def test_band_order_and_native_sizes():
    assert BAND_NAMES == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                          "B09", "B11", "B12")
    assert {n: BANDS_BY_NAME[n].native_px for n in ("B01", "B02", "B05", "B09", "B12")} == {
        "B01": 20, "B02": 120, "B05": 60, "B09": 20, "B12": 60}
    assert BAND_SETS["s2-10"] == tuple(n for n in BAND_NAMES if n not in ("B01", "B09"))


def test_label_tables_match_shared_labels_json(shared_dir):
    raw = json.loads((shared_dir / "bigearthnet" / "labels.json").read_text())
    tables = label_tables()
    assert len(tables.labels43) == 43 and len(tables.classes19) == 19
    assert tables.classes19[0] == "Urban fabric"
    dropped = {raw["labels43"][i]["name"] for i in raw["dropped43"]}
    assert {k for k, v in tables.map43_to_19.items() if v is None} == dropped
    assert tables.map43_to_19["Non-irrigated arable land"] == "Arable land"
