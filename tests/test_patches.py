"""`benscale extract` on the three REAL BigEarthNet v1 patches and on corrupted copies.

The index is built here directly per docs/architecture.md section 2 (the ingest stage has
its own tests); every band file read is a real GeoTIFF, every shard a real netCDF4 file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from rasterio.enums import Resampling

from benscale.bigearthnet import BAND_NAMES, BANDS, label_tables
from benscale.cli import main

TEST_PATCH = "S2A_MSIL2A_20170617T113321_4_55"  # the sample in the official test split
#: Sorts between the real train patches, so a rejection in the middle of a shard is tested.
BAD_ID = "S2A_MSIL2A_20170615T101031_1_1"


def sample_folders(real_v1_samples: Path) -> list[Path]:
    """The three real patch folders."""
    return sorted(p for p in (real_v1_samples / "BigEarthNet-v1.0").iterdir() if p.is_dir())


def labels19(folder: Path) -> list[str]:
    """The 19-class labels of a real v1 patch, from its JSON, in the original class order."""
    tables = label_tables()
    meta = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())
    mapped = {tables.map43_to_19[name] for name in meta["labels"]} - {None}
    return [c for c in tables.classes19 if c in mapped]


def index_row(folder: Path, split: str, patch_id: str | None = None,
              labels: list[str] | None = None) -> dict[str, object]:
    """One index row per the contract (docs/architecture.md, section 2)."""
    return {"patch_id": patch_id or folder.name, "split": split,
            "labels": labels if labels is not None else labels19(folder),
            "path": str(folder), "format": "v1", "tile": "T33UUP",
            "acquisition_date": pd.Timestamp("2017-06-13 10:10:31"), "country": None}


def write_index(rows: list[dict[str, object]], path: Path) -> Path:
    """Write rows (in the given, possibly unsorted, order) as index.parquet."""
    pd.DataFrame(rows).to_parquet(path)
    return path


def real_rows(real_v1_samples: Path) -> list[dict[str, object]]:
    """Index rows of the three real patches, deliberately not sorted."""
    return [index_row(f, "test" if f.name == TEST_PATCH else "train")
            for f in reversed(sample_folders(real_v1_samples))]


def extract(index: Path, out: Path, *extra: object) -> int:
    """Run `benscale extract` in-process; return its exit status."""
    return main(["extract", str(index), "--out", str(out), *map(str, extra)])


def rasterio_read(folder: Path, band: str, patch_id: str | None = None) -> np.ndarray:
    """Reference read of one band, independent of benscale: torchgeo's way."""
    path = folder / f"{patch_id or folder.name}_{band}.tif"
    with rasterio.open(path) as src:
        return src.read(1, out_shape=(120, 120), resampling=Resampling.bilinear)


def shard_paths(out: Path) -> list[Path]:
    """Every shard file below an extraction folder."""
    return sorted(out.glob("*/shard-*.nc"))


@pytest.fixture(scope="module")
def real_out(real_v1_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three real patches extracted with one patch per shard (so stats merge shards)."""
    root = tmp_path_factory.mktemp("real")
    index = write_index(real_rows(real_v1_samples), root / "index.parquet")
    assert extract(index, root / "shards", "--shard-size", 1) == 0
    return root / "shards"


# ------------------------------------------------------------------ the real patches


def test_real_patches_round_trip_exactly(real_out: Path, real_v1_samples: Path) -> None:
    seen = []
    for path in shard_paths(real_out):
        with xr.open_dataset(path, engine="netcdf4") as ds:
            for i, patch_id in enumerate(ds["patch_id"].values):
                folder = real_v1_samples / "BigEarthNet-v1.0" / patch_id
                for b, band in enumerate(BANDS):
                    got = ds["reflectance"].values[i, b]
                    want = rasterio_read(folder, band.name)
                    if band.resolution_m == 10:  # bit-exact vs the plain file read
                        with rasterio.open(folder / f"{patch_id}_{band.name}.tif") as src:
                            want = src.read(1)
                    np.testing.assert_array_equal(got, want, err_msg=f"{patch_id} {band.name}")
                hot = ds["labels"].values[i]
                assert [c for c, h in zip(ds["class"].values, hot, strict=True) if h] == \
                    labels19(folder)
                seen.append((path.parent.name, str(patch_id)))
    assert sorted(seen) == sorted(
        ("test" if f.name == TEST_PATCH else "train", f.name)
        for f in sample_folders(real_v1_samples))


def test_resampled_bands_differ_from_nearest(real_v1_samples: Path, tmp_path: Path) -> None:
    """--resampling nearest really changes 20/60 m bands and leaves 10 m bands alone."""
    index = write_index(real_rows(real_v1_samples), tmp_path / "index.parquet")
    assert extract(index, tmp_path / "near", "--resampling", "nearest") == 0
    folder = sample_folders(real_v1_samples)[0]
    with xr.open_dataset(tmp_path / "near/train/shard-00000.nc") as ds:
        refl = ds["reflectance"].sel(patch=0).values
        assert "nearest" in ds.attrs["resampling"]
    with rasterio.open(folder / f"{folder.name}_B05.tif") as src:
        want = src.read(1, out_shape=(120, 120), resampling=Resampling.nearest)
    np.testing.assert_array_equal(refl[BAND_NAMES.index("B05")], want)
    assert not np.array_equal(want, rasterio_read(folder, "B05"))
    np.testing.assert_array_equal(refl[BAND_NAMES.index("B02")],
                                  rasterio_read(folder, "B02"))


def test_shard_schema(real_out: Path) -> None:
    classes = label_tables().classes19
    with xr.open_dataset(real_out / "train/shard-00000.nc", engine="netcdf4") as ds:
        assert ds["reflectance"].dims == ("patch", "band", "y", "x")
        assert ds["reflectance"].shape == (1, 12, 120, 120)
        assert ds["reflectance"].dtype == np.uint16
        assert ds["labels"].dims == ("patch", "class") and ds["labels"].dtype == np.uint8
        assert list(ds["band"].values) == list(BAND_NAMES)
        assert list(ds["wavelength_nm"].values) == [b.wavelength_nm for b in BANDS]
        assert list(ds["resolution_m"].values) == [b.resolution_m for b in BANDS]
        assert list(ds["class"].values) == list(classes)
        assert ds["patch_id"].dims == ("patch",)
        for key in ("Conventions", "source", "resampling", "benscale_version"):
            assert ds.attrs[key]
        assert ds.attrs["Conventions"].startswith("CF-")
        assert ds["reflectance"].attrs["units"] == "1"
        assert ds["wavelength_nm"].attrs["units"] == "nm"
        enc = ds["reflectance"].encoding  # the default --compression none
        assert enc["contiguous"] and not enc.get("zlib") and not enc.get("shuffle")
        assert "_FillValue" not in ds["reflectance"].attrs


def test_stats_exact_vs_numpy(real_out: Path) -> None:
    """Merged from two shards' integer sums == numpy on the concatenated train data."""
    arrays = []
    for path in sorted((real_out / "train").glob("shard-*.nc")):
        with xr.open_dataset(path) as ds:
            arrays.append(ds["reflectance"].values)
    data = np.concatenate(arrays).astype(np.float64)
    assert len(arrays) == 2 and len(data) == 2
    stats = json.loads((real_out / "stats.json").read_text())
    assert stats["split"] == "train" and stats["n_patches"] == 2
    assert stats["resampling"] == "bilinear"
    for b, band in enumerate(BAND_NAMES):
        assert stats["bands"][band]["mean"] == pytest.approx(data[:, b].mean(), rel=1e-13)
        assert stats["bands"][band]["std"] == pytest.approx(data[:, b].std(), rel=1e-12)


def test_manifest_checksums_and_counts(real_out: Path) -> None:
    manifest = json.loads((real_out / "manifest.json").read_text())
    assert manifest["bands"] == list(BAND_NAMES)
    assert manifest["classes"] == list(label_tables().classes19)
    assert manifest["shard_size"] == 1 and manifest["resampling"] == "bilinear"
    assert {s: v["n_patches"] for s, v in manifest["splits"].items()} == {"train": 2, "test": 1}
    listed = []
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            path = real_out / shard["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            with xr.open_dataset(path) as ds:
                assert ds.sizes["patch"] == shard["n_patches"]
            listed.append(path)
    assert sorted(listed) == shard_paths(real_out)
    report = json.loads((real_out / "extract-report.json").read_text())
    assert report["rejected"] == [] and report["n_extracted"] == 3


# ------------------------------------------------------------------ resume, workers


def test_resume_rewrites_only_missing_shard(real_v1_samples: Path, tmp_path: Path) -> None:
    index = write_index(real_rows(real_v1_samples), tmp_path / "index.parquet")
    out = tmp_path / "shards"
    assert extract(index, out, "--shard-size", 1) == 0
    manifest = (out / "manifest.json").read_text()
    stats = (out / "stats.json").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in shard_paths(out)}
    (out / "train/shard-00001.nc").unlink()  # a crash after shard 0 ...
    stray = out / "test/.shard-00000.nc.abc123.tmp"  # ... and a half-written temp file
    stray.write_bytes(b"partial")

    assert extract(index, out, "--shard-size", 1) == 0
    assert not stray.exists()
    after = {p: p.stat().st_mtime_ns for p in shard_paths(out)}
    assert after.keys() == mtimes.keys()
    changed = [p.relative_to(out).as_posix() for p in after if after[p] != mtimes.get(p)]
    assert changed == ["train/shard-00001.nc"]
    assert (out / "manifest.json").read_text() == manifest  # same bytes, same checksums
    assert (out / "stats.json").read_text() == stats  # exact on a resumed run
    report = json.loads((out / "extract-report.json").read_text())
    assert report["shards_written"] == ["train/shard-00001.nc"] and report["shards_kept"] == 2


def test_changed_plan_redoes_shards(real_v1_samples: Path, tmp_path: Path) -> None:
    """A different shard size or compression never reuses shards of the old plan."""
    index = write_index(real_rows(real_v1_samples), tmp_path / "index.parquet")
    out = tmp_path / "shards"
    assert extract(index, out, "--shard-size", 1) == 0
    assert extract(index, out, "--shard-size", 2) == 0
    assert [p.relative_to(out).as_posix() for p in shard_paths(out)] == \
        ["test/shard-00000.nc", "train/shard-00000.nc"]  # train/shard-00001 was stale
    with xr.open_dataset(out / "train/shard-00000.nc") as ds:
        assert ds.sizes["patch"] == 2
        plain = ds["reflectance"].values
    assert extract(index, out, "--shard-size", 2, "--compression", "zlib") == 0
    report = json.loads((out / "extract-report.json").read_text())
    assert report["shards_kept"] == 0 and report["compression"] == "zlib"
    with xr.open_dataset(out / "train/shard-00000.nc") as ds:
        assert ds["reflectance"].encoding["zlib"]
        np.testing.assert_array_equal(ds["reflectance"].values, plain)


def test_two_workers_give_identical_shards(real_out: Path, real_v1_samples: Path,
                                           tmp_path: Path) -> None:
    index = write_index(real_rows(real_v1_samples), tmp_path / "index.parquet")
    assert extract(index, tmp_path / "w2", "--shard-size", 1, "--workers", 2) == 0
    assert [p.relative_to(tmp_path / "w2") for p in shard_paths(tmp_path / "w2")] == \
        [p.relative_to(real_out) for p in shard_paths(real_out)]
    for one in shard_paths(real_out):
        with xr.open_dataset(one) as a, xr.open_dataset(tmp_path / "w2" /
                                                        one.relative_to(real_out)) as b:
            xr.testing.assert_identical(a.load(), b.load())
    for name in ("stats.json",):
        assert (tmp_path / "w2" / name).read_text() == (real_out / name).read_text()
    shas = [[s["sha256"] for v in json.loads((d / "manifest.json").read_text())["splits"]
             .values() for s in v["shards"]] for d in (real_out, tmp_path / "w2")]
    assert shas[0] == shas[1]  # byte-identical files, whatever the worker count


# ------------------------------------------------------------------ bad input


def _corrupt_missing(path: Path) -> None:
    path.unlink()


def _corrupt_size(path: Path) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(width=120, height=120)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 120, 120), dtype=np.uint16))


def _corrupt_dtype(path: Path) -> None:
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="float32")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.float32))


def _corrupt_truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt_random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4000))


BAD_INPUTS = {  # name -> (band file to damage, damage, expected words in the problem)
    "missing band file": ("B03", _corrupt_missing, "missing band file"),
    "wrong size": ("B05", _corrupt_size, "size 120x120 px, expected 60x60"),
    "wrong dtype": ("B02", _corrupt_dtype, "dtype float32, expected uint16"),
    "truncated tiff": ("B8A", _corrupt_truncate, "unreadable or corrupt GeoTIFF"),
    "random bytes": ("B11", _corrupt_random, "unreadable or corrupt GeoTIFF"),
}


def bad_copy(real_v1_samples: Path, tmp_path: Path) -> Path:
    """A writable copy of a real patch renamed to BAD_ID (folder and file names)."""
    source = sample_folders(real_v1_samples)[0]
    folder = tmp_path / "bad" / BAD_ID
    folder.mkdir(parents=True)
    for file in source.iterdir():
        shutil.copyfile(file, folder / file.name.replace(source.name, BAD_ID))
    return folder


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_band_is_rejected_and_the_rest_kept(case: str, real_v1_samples: Path,
                                                tmp_path: Path) -> None:
    band, damage, words = BAD_INPUTS[case]
    folder = bad_copy(real_v1_samples, tmp_path)
    bad_file = folder / f"{BAD_ID}_{band}.tif"
    damage(bad_file)
    rows = [*real_rows(real_v1_samples), index_row(folder, "train", labels=["Pastures"])]
    index = write_index(rows, tmp_path / "index.parquet")
    out = tmp_path / "shards"
    assert extract(index, out, "--shard-size", 3) == 0

    report = json.loads((out / "extract-report.json").read_text())
    [rejected] = report["rejected"]
    assert rejected["patch_id"] == BAD_ID and rejected["path"] == str(bad_file)
    assert words in rejected["problem"]
    assert report["n_planned"] == 4 and report["n_extracted"] == 3
    # the bad patch sat between the two good train patches: no gap, no misalignment
    with xr.open_dataset(out / "train/shard-00000.nc") as ds:
        good = [f for f in sample_folders(real_v1_samples) if f.name != TEST_PATCH]
        assert list(ds["patch_id"].values) == [f.name for f in good]
        for i, f in enumerate(good):
            np.testing.assert_array_equal(ds["reflectance"].values[i, 1],
                                          rasterio_read(f, "B02"))
            assert [c for c, h in zip(ds["class"].values, ds["labels"].values[i],
                                      strict=True) if h] == labels19(f)
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["n_patches"] == 2


@pytest.mark.parametrize("case", ["missing band file", "truncated tiff"])
def test_strict_fails_naming_the_file(case: str, real_v1_samples: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    band, damage, words = BAD_INPUTS[case]
    folder = bad_copy(real_v1_samples, tmp_path)
    damage(folder / f"{BAD_ID}_{band}.tif")
    rows = [*real_rows(real_v1_samples), index_row(folder, "train")]
    index = write_index(rows, tmp_path / "index.parquet")
    assert extract(index, tmp_path / "shards", "--strict") == 2
    err = capsys.readouterr().err
    assert f"{BAD_ID}_{band}.tif" in err and words in err and "--strict" in err
    assert not (tmp_path / "shards/manifest.json").exists()


def test_unknown_label_is_rejected(real_v1_samples: Path, tmp_path: Path) -> None:
    folder = sample_folders(real_v1_samples)[0]
    rows = [index_row(folder, "train", labels=["Moon craters"])]
    index = write_index(rows, tmp_path / "index.parquet")
    assert extract(index, tmp_path / "shards") == 0
    report = json.loads((tmp_path / "shards/extract-report.json").read_text())
    assert "Moon craters" in report["rejected"][0]["problem"]
    assert report["n_extracted"] == 0 and not shard_paths(tmp_path / "shards")
    stats = json.loads((tmp_path / "shards/stats.json").read_text())
    assert stats["n_patches"] == 0 and stats["bands"]["B01"]["mean"] is None


@pytest.mark.parametrize("problem", ["missing column", "duplicate", "bad split", "no file",
                                     "empty"])
def test_bad_index_is_an_immediate_error(problem: str, real_v1_samples: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rows = real_rows(real_v1_samples)
    frame = pd.DataFrame(rows)
    if problem == "missing column":
        frame = frame.drop(columns="labels")
    elif problem == "duplicate":
        frame = pd.concat([frame, frame.iloc[:1]])
    elif problem == "bad split":
        frame.loc[0, "split"] = "val"
    elif problem == "empty":
        frame = frame.iloc[:0]
    index = tmp_path / "index.parquet"
    if problem != "no file":
        frame.to_parquet(index)
    assert extract(index, tmp_path / "shards") == 2
    err = capsys.readouterr().err
    assert str(index) in err
    assert {"missing column": "labels", "duplicate": "duplicate", "bad split": "'val'",
            "no file": "not found", "empty": "no patches"}[problem] in err


def test_bad_options(real_v1_samples: Path, tmp_path: Path) -> None:
    index = write_index(real_rows(real_v1_samples), tmp_path / "index.parquet")
    assert extract(index, tmp_path / "s", "--shard-size", 0) == 2
    assert extract(index, tmp_path / "s", "--workers", 0) == 2


# ------------------------------------------------------------------ whole data path


def test_synth_ingest_extract_round_trip(tiny_shards: Path) -> None:
    """The shared `tiny_shards` fixture (synth -> ingest -> extract): nothing lost."""
    from benscale.files.shards import ShardSet

    shards = tiny_shards
    index = pd.read_parquet(shards.parent / "index" / "index.parquet")
    report = json.loads((shards / "extract-report.json").read_text())
    assert report["rejected"] == [] and report["n_extracted"] == len(index)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert {s: v["n_patches"] for s, v in manifest["splits"].items()} == \
        index["split"].value_counts().to_dict()
    classes = label_tables().classes19
    train = []
    for split, rows in index.groupby("split"):
        data = ShardSet(shards, str(split))
        assert sorted(data.patch_ids) == sorted(rows["patch_id"])
        by_id = rows.set_index("patch_id")
        for i, patch_id in enumerate(data.patch_ids):
            want = [c for c in classes if c in set(by_id.loc[patch_id, "labels"])]
            assert [c for c, h in zip(classes, data.labels[i], strict=True) if h] == want
        # The original 43-class labels too (v1), straight from each patch's JSON.
        data43 = ShardSet(shards, str(split), num_classes=43)
        assert data43.classes == label_tables().labels43
        for i, patch_id in enumerate(data43.patch_ids):
            folder = Path(by_id.loc[patch_id, "path"])
            meta = json.loads((folder / f"{patch_id}_labels_metadata.json").read_text())
            got = {c for c, h in zip(data43.classes, data43.labels[i], strict=True) if h}
            assert got == set(meta["labels"])
        folder = Path(by_id.loc[data.patch_ids[0], "path"])
        x, _ = data.read(0)
        for band in ("B02", "B05", "B09"):
            np.testing.assert_array_equal(x[BAND_NAMES.index(band)],
                                          rasterio_read(folder, band, data.patch_ids[0]))
        if split == "train":
            train = [data.read(i)[0] for i in range(len(data))]
    stats = json.loads((shards / "stats.json").read_text())
    stacked = np.stack(train).astype(np.float64)
    for b, band in enumerate(BAND_NAMES):
        assert stats["bands"][band]["mean"] == pytest.approx(stacked[:, b].mean(), rel=1e-12)
        assert stats["bands"][band]["std"] == pytest.approx(stacked[:, b].std(), rel=1e-12)
