"""The shard reader the training stage uses, on shards extracted from the REAL patches."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from benscale.bigearthnet import BAND_NAMES, label_tables
from benscale.cli import main
from benscale.errors import DataError
from benscale.files.shards import COMPRESSIONS, MANIFEST_NAME, BandStats, Manifest, ShardSet


def _labels19(folder: Path) -> list[str]:
    tables = label_tables()
    meta = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())
    mapped = {tables.map43_to_19[name] for name in meta["labels"]} - {None}
    return [c for c in tables.classes19 if c in mapped]


def _extract_real(root: Path, real_v1_samples: Path, compression: str) -> Path:
    """All three real patches in the train split, two shards (sizes 2 and 1)."""
    folders = sorted(p for p in (real_v1_samples / "BigEarthNet-v1.0").iterdir() if p.is_dir())
    rows = [{"patch_id": f.name, "split": "train", "labels": _labels19(f), "path": str(f),
             "format": "v1"} for f in folders]
    pd.DataFrame(rows).to_parquet(root / "index.parquet")
    rc = main(["extract", str(root / "index.parquet"), "--out", str(root / "shards"),
               "--shard-size", "2", "--compression", compression])
    assert rc == 0
    return root / "shards"


@pytest.fixture(scope="module", params=COMPRESSIONS)
def shards(request: pytest.FixtureRequest, real_v1_samples: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real patches stored with each ``--compression`` (the reader memory-maps one and
    decompresses the other)."""
    return _extract_real(tmp_path_factory.mktemp(f"shardset-{request.param}"), real_v1_samples,
                         request.param)


def _reference(shards: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids, refl, labels = [], [], []
    for path in sorted((shards / "train").glob("shard-*.nc")):
        with xr.open_dataset(path) as ds:
            ids += [str(p) for p in ds["patch_id"].values]
            refl.append(ds["reflectance"].values)
            labels.append(ds["labels"].values)
    return ids, np.concatenate(refl), np.concatenate(labels)


def test_shardset_reads_every_patch_across_shards(shards: Path) -> None:
    ids, refl, labels = _reference(shards)
    ds = ShardSet(shards, "train")
    assert len(ds) == 3 and len(ds.paths) == 2
    assert ds.patch_ids == ids and ds.bands == BAND_NAMES
    assert ds.classes == label_tables().classes19
    np.testing.assert_array_equal(ds.labels, labels)
    for i in (2, 0, 1):  # random order, across the shard boundary
        x, y = ds.read(i)
        assert x.dtype == np.uint16 and x.shape == (12, 120, 120)
        assert y.dtype == np.uint8 and y.shape == (19,)
        np.testing.assert_array_equal(x, refl[i])
        np.testing.assert_array_equal(y, labels[i])
    with pytest.raises(IndexError):
        ds.read(3)
    ds.close()


def test_shardset_band_subset_and_pickling(shards: Path) -> None:
    _, refl, _ = _reference(shards)
    bands = ("B8A", "B02", "B04")
    ds = ShardSet(shards, "train", bands=bands)
    ds.read(0)  # opens a handle, which must not travel through pickle
    clone = pickle.loads(pickle.dumps(ds))
    want = refl[1][[BAND_NAMES.index(b) for b in bands]]
    np.testing.assert_array_equal(clone.read(1)[0], want)
    np.testing.assert_array_equal(ds.read(1)[0], want)
    # Closed, not left to the garbage collector: xarray re-opening a netCDF4 file that
    # another netCDF4 handle holds open crashes (netCDF4 1.7.5 / xarray, seen here).
    clone.close()
    ds.close()


def test_layout_as_recorded_and_read_without_whole_shards(shards: Path) -> None:
    """The layout promise: uncompressed shards are contiguous and memory-mapped (a patch is
    one copy of its bytes); compressed ones hold one HDF5 chunk per patch, never the whole
    shard; the manifest says which."""
    layout = Manifest.read(shards).layout
    with netCDF4.Dataset(shards / "train/shard-00000.nc") as nc:
        chunking = nc.variables["reflectance"].chunking()
        filters = nc.variables["reflectance"].filters()
    ds = ShardSet(shards, "train")
    ds.read(0)
    mapped = isinstance(getattr(ds._array(0), "base", None), np.memmap)  # a view of the map
    ds.close()
    if layout["compression"] == "none":
        assert chunking == "contiguous" and not filters["zlib"]
        assert mapped
    else:
        assert layout == {"compression": "zlib", "chunk": [1, 12, 120, 120],
                          "complevel": 1, "shuffle": True}
        assert chunking == [1, 12, 120, 120] and filters["zlib"] and filters["shuffle"]
        assert not mapped  # read chunk by chunk through netCDF4


def test_stats_exact_and_in_requested_order(shards: Path) -> None:
    _, refl, _ = _reference(shards)
    stats = BandStats.read(shards)
    assert list(stats.bands) == list(BAND_NAMES)
    data = refl.astype(np.float64)
    assert stats.bands["B12"].mean == pytest.approx(data[:, 11].mean(), rel=1e-13)
    assert stats.bands["B01"].std == pytest.approx(data[:, 0].std(), rel=1e-12)
    mean, std = stats.normalisation(("B12", "B01"))
    assert mean.shape == std.shape == (2, 1, 1) and mean.dtype == np.float32
    assert mean[0, 0, 0] == np.float32(stats.bands["B12"].mean)
    assert std[1, 0, 0] == np.float32(stats.bands["B01"].std)


def test_reader_errors_name_the_file(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest\.json: not found"):
        Manifest.read(tmp_path)
    with pytest.raises(DataError, match="no split 'test'"):
        ShardSet(shards, "test")
    with pytest.raises(DataError, match="unknown band"):
        ShardSet(shards, "train", bands=("B10",))
    with pytest.raises(DataError, match="unknown band"):
        BandStats.read(shards).normalisation(("B10",))


def test_manifest_layout_that_the_file_contradicts(real_v1_samples: Path,
                                                   tmp_path: Path) -> None:
    """A manifest saying `none` over zlib shards fails on the first read, naming the file."""
    shards = _extract_real(tmp_path, real_v1_samples, "zlib")
    manifest = json.loads((shards / MANIFEST_NAME).read_text())
    manifest["layout"]["compression"] = "none"
    (shards / MANIFEST_NAME).write_text(json.dumps(manifest))
    ds = ShardSet(shards, "train")
    with pytest.raises(DataError, match=r"shard-00000.nc: reflectance is not stored "
                                        r"uncompressed and contiguous"):
        ds.read(0)
