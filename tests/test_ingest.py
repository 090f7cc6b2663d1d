"""`benscale ingest` on real files: the real v1 samples and lists, the real v2 metadata,
synthetic archives as folders and as .tar.gz / .tar.zst."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import zstandard

from benscale.bigearthnet import BAND_NAMES, SPLITS, V1_LIST_COUNTS, V2_SPLIT_COUNTS, label_tables
from benscale.files.shards import ShardSet
from benscale.ingest import deterministic_split, ingest, read_v1_lists
from conftest import run_cli

N = 40


def _index(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "index.parquet")


def _report(out: Path) -> dict:
    return json.loads((out / "ingest-report.json").read_text())


def make_tar(src: Path, dest: Path) -> Path:
    """Pack the contents of ``src`` as the release does (.tar.gz or .tar.zst)."""
    if dest.name.endswith(".tar.zst"):
        plain = dest.with_name(dest.name.removesuffix(".zst"))
        with tarfile.open(plain, "w") as tar:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=child.name)
        dest.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
        plain.unlink()
    else:
        with tarfile.open(dest, "w:gz") as tar:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=child.name)
    return dest


def release_tar(v2: Path, dest: Path) -> Path:
    """Pack a v2 archive like the release: a tar of BigEarthNet-S2/ only, with
    metadata.parquet and the snow/cloud parquet beside the tar file, not inside."""
    staging = dest.parent / "staging"
    staging.mkdir()
    shutil.copytree(v2 / "BigEarthNet-S2", staging / "BigEarthNet-S2")
    for parquet in v2.glob("*.parquet"):
        shutil.copy(parquet, dest.parent / parquet.name)
    make_tar(staging, dest)
    shutil.rmtree(staging)
    return dest


@pytest.fixture(scope="module")
def synth_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("archives")
    for fmt in ("v1", "v2"):
        run_cli("synth", "--format", fmt, "--patches", N, "--seed", 9, "--out", root / fmt)
    return {"v1": root / "v1", "v2": root / "v2"}


def test_official_v1_lists_parse(shared_dir: Path) -> None:
    lists = read_v1_lists(shared_dir / "bigearthnet/reference/v1")
    counts = {s: len(v) for s, v in lists.splits.items()}
    counts |= {r: len(v) for r, v in lists.exclusions.items()}
    assert counts == V1_LIST_COUNTS
    assert all("\r" not in n for n in lists.splits["train"][:100])


def test_real_v1_samples_with_official_lists(real_v1_samples: Path, shared_dir: Path,
                                             tmp_path: Path) -> None:
    run_cli("ingest", real_v1_samples, "--out", tmp_path, "--v1-lists",
            shared_dir / "bigearthnet/reference/v1")
    index = _index(tmp_path).set_index("patch_id")
    assert index.loc["S2A_MSIL2A_20170613T101031_87_48", "split"] == "test"
    assert list(index.loc["S2A_MSIL2A_20170613T101031_87_48", "labels"]) == [
        "Arable land",
        "Land principally occupied by agriculture, with significant areas of natural vegetation"]
    assert list(index.loc["S2A_MSIL2A_20170617T113321_36_85", "labels"]) == ["Arable land",
                                                                           "Pastures"]
    assert list(index.loc["S2A_MSIL2A_20170617T113321_4_55", "labels"]) == ["Pastures"]
    assert set(index["split"]) == {"train", "test"}
    assert index.loc["S2A_MSIL2A_20170613T101031_87_48", "tile"] == "T33UUP"
    assert str(index.loc["S2A_MSIL2A_20170613T101031_87_48", "acquisition_date"]) == \
        "2017-06-13 10:10:31+00:00"
    assert index["country"].isna().all() and (index["format"] == "v1").all()
    report = _report(tmp_path)
    assert report["split_source"] == "official" and report["n_indexed"] == 3
    assert report["listed_not_in_archive"] == 519_284 - 3
    assert Path(index.iloc[0]["path"]).is_absolute()


def test_real_v1_samples_deterministic_split(real_v1_samples: Path, tmp_path: Path) -> None:
    run_cli("ingest", real_v1_samples / "BigEarthNet-v1.0", "--out", tmp_path)
    index = _index(tmp_path)
    assert len(index) == 3
    assert all(row.split == deterministic_split(row.patch_id) for row in index.itertuples())
    report = _report(tmp_path)
    assert report["split_source"] == "deterministic" and "sha256" in report["split_rule"]


def test_full_v2_reference_metadata(shared_dir: Path, tmp_path: Path) -> None:
    ref = shared_dir / "bigearthnet/reference/v2"
    run_cli("ingest", ref, "--out", tmp_path, "--no-check-files")
    report = _report(tmp_path)
    assert report["counts"] == V2_SPLIT_COUNTS
    assert report["excluded_counts"] == {"seasonal snow": 60_773, "cloud or shadow": 8_677}
    assert report["rejected"] == [] and report["checked_files"] is False
    table = pq.read_table(tmp_path / "index.parquet")
    assert table.num_rows == 480_038
    ids = table.column("patch_id").to_pylist()
    row = table.slice(ids.index("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"),
                      1).to_pylist()[0]
    # the metadata lists them alphabetically; the index keeps the original class order
    assert row["labels"] == ["Arable land", "Pastures", "Broad-leaved forest", "Mixed forest"]
    assert (row["split"], row["country"], row["tile"]) == ("test", "Austria", "T33UUP")
    assert row["path"].endswith("BigEarthNet-S2/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP/"
                                "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57")
    splits = table.column("split").to_pylist()
    assert splits == sorted(splits, key=SPLITS.index)


def _expected_v1(archive: Path) -> dict[str, tuple[str, list[str]]]:
    """patch -> (split, 19-class labels) straight from the lists and JSON files."""
    lists = read_v1_lists(archive / "v1-lists")
    tables = label_tables()
    out = {}
    for split, names in lists.splits.items():
        for name in names:
            meta = json.loads((archive / "BigEarthNet-v1.0" / name /
                               f"{name}_labels_metadata.json").read_text())
            classes = {tables.map43_to_19[x] for x in meta["labels"]} - {None}
            out[name] = (split, [c for c in tables.classes19 if c in classes])
    return out


def _expected_v2(archive: Path) -> dict[str, tuple[str, list[str]]]:
    rows = pq.read_table(archive / "metadata.parquet").to_pylist()
    order = label_tables().classes19
    return {r["patch_id"]: (r["split"], sorted(r["labels"], key=order.index)) for r in rows}


def _check_no_loss(out: Path, expected: dict[str, tuple[str, list[str]]]) -> None:
    index = _index(out)
    got = {r.patch_id: (r.split, list(r.labels)) for r in index.itertuples()}
    assert got == expected
    assert all(Path(p).is_dir() for p in index["path"])
    assert _report(out)["rejected"] == []


@pytest.mark.parametrize(("fmt", "form"), [
    (fmt, form) for fmt in ("v1", "v2")
    for form in ("folder", "top-folder", ".tar.gz", ".tar.zst")] + [("v2", "release .tar.zst")])
def test_synthetic_archive_forms(synth_archives: dict[str, Path], tmp_path: Path, fmt: str,
                                 form: str) -> None:
    archive = synth_archives[fmt]
    expected = _expected_v1(archive) if fmt == "v1" else _expected_v2(archive)
    if form == "folder":
        target = archive
    elif form == "top-folder":
        target = archive / ("BigEarthNet-v1.0" if fmt == "v1" else "BigEarthNet-S2")
    elif form == "release .tar.zst":  # BigEarthNet-S2.tar.zst, metadata.parquet beside it
        target = release_tar(archive, tmp_path / "BigEarthNet-S2.tar.zst")
    else:
        target = make_tar(archive, tmp_path / f"archive{form}")
    args = ["ingest", target, "--out", tmp_path / "out", "--format", fmt]
    run_cli(*args)
    _check_no_loss(tmp_path / "out", expected)
    report = _report(tmp_path / "out")
    assert report["split_source"] == ("official" if fmt == "v1" else "metadata")
    assert set(report["excluded_counts"]) >= {"seasonal snow", "cloud or shadow"}
    if ".tar" in form:
        assert (tmp_path / "out" / "unpacked").is_dir()
        run_cli(*args)  # a re-run reuses the unpacked tree
        _check_no_loss(tmp_path / "out", expected)


def test_v1_without_lists_is_deterministic(synth_archives: dict[str, Path],
                                           tmp_path: Path) -> None:
    archive = tmp_path / "no-lists"
    shutil.copytree(synth_archives["v1"] / "BigEarthNet-v1.0", archive / "BigEarthNet-v1.0")
    for out in ("a", "b"):
        ingest(archive, tmp_path / out)
    a, b = _index(tmp_path / "a"), _index(tmp_path / "b")
    assert a.equals(b)
    report = _report(tmp_path / "a")
    assert report["split_source"] == "deterministic"
    assert report["excluded_counts"] == {"no 19-class label": 1}
    assert len(a) == N - 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_2000_patches_no_loss(tmp_path: Path, fmt: str) -> None:
    """Ingest AND extract a 2,000-patch archive: every usable patch reaches the shards
    with its split and labels, the 10 m bands as stored."""
    archive = tmp_path / "archive"
    run_cli("synth", "--format", fmt, "--patches", 2000, "--seed", 1, "--out", archive)
    run_cli("ingest", archive, "--out", tmp_path / "out")
    expected = _expected_v1(archive) if fmt == "v1" else _expected_v2(archive)
    _check_no_loss(tmp_path / "out", expected)
    report = _report(tmp_path / "out")
    assert report["n_indexed"] + sum(report["excluded_counts"].values()) == 2000
    shards = tmp_path / "shards"
    run_cli("extract", tmp_path / "out" / "index.parquet", "--out", shards, "--workers", 2,
            "--shard-size", 250)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert {s: v["n_patches"] for s, v in manifest["splits"].items()} == report["counts"]
    assert json.loads((shards / "extract-report.json").read_text())["rejected"] == []
    classes = label_tables().classes19
    index = _index(tmp_path / "out").set_index("patch_id")
    for split in manifest["splits"]:
        data = ShardSet(shards, split)
        assert len(data) == report["counts"][split]
        for i, pid in enumerate(data.patch_ids):
            split_of, labels = expected[pid]
            assert split_of == split
            assert [c for c, hot in zip(classes, data.labels[i], strict=True) if hot] == labels
        for i in range(0, len(data), 97):  # spot checks: the 10 m bands as stored
            folder = Path(index.loc[data.patch_ids[i], "path"])
            x, _ = data.read(i)
            for band in ("B02", "B03", "B04", "B08"):
                with rasterio.open(folder / f"{data.patch_ids[i]}_{band}.tif") as src:
                    np.testing.assert_array_equal(x[BAND_NAMES.index(band)], src.read(1))
        data.close()


def test_v2_metadata_with_large_strings_ingests(tmp_path):
    """A metadata.parquet rewritten with large_string columns (pandas >= 3 does this) ingests
    like the original."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benscale.cli import main

    archive = tmp_path / "archive"
    assert main(["synth", "--format", "v2", "--patches", "24", "--seed", "3", "--out",
                 str(archive)]) == 0
    assert main(["ingest", str(archive), "--out", str(tmp_path / "a")]) == 0
    meta = archive / "metadata.parquet"
    table = pq.read_table(meta)
    large = pa.schema([f.with_type(pa.large_string()) if pa.types.is_string(f.type) else
                       f.with_type(pa.large_list(pa.large_string()))
                       if pa.types.is_list(f.type) else f for f in table.schema])
    pq.write_table(table.cast(large), meta)
    assert pa.types.is_large_string(pq.read_schema(meta).field("patch_id").type)
    assert main(["ingest", str(archive), "--out", str(tmp_path / "b")]) == 0
    a = pd.read_parquet(tmp_path / "a" / "index.parquet")
    b = pd.read_parquet(tmp_path / "b" / "index.parquet")
    assert len(b) == len(a) > 0
    assert b["patch_id"].tolist() == a["patch_id"].tolist()
    assert [list(x) for x in b["labels"]] == [list(x) for x in a["labels"]]
