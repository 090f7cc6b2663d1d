"""Bad input to `benscale ingest`: each is named (file + problem), the good patches still
come through; archive-level problems are immediate errors; --strict fails on any rejection."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benscale.cli import main
from benscale.errors import ArchiveError, BadPatchError
from benscale.ingest import ingest
from conftest import run_cli

N = 24


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    for fmt in ("v1", "v2"):
        run_cli("synth", "--format", fmt, "--patches", N, "--seed", 2, "--out", root / fmt)
    return {fmt: root / fmt for fmt in ("v1", "v2")}


@pytest.fixture(scope="module")
def baseline(pristine: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("baseline")
    return {fmt: ingest(path, root / fmt)["n_indexed"] for fmt, path in pristine.items()}


def _copy(pristine: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine[fmt], tmp_path / fmt))


def _v1_patch(archive: Path, k: int = 0) -> Path:
    names = (archive / "v1-lists" / "train.csv.bz2")
    import bz2
    name = bz2.decompress(names.read_bytes()).decode().split("\r\n")[k]
    return archive / "BigEarthNet-v1.0" / name


def _v2_row(archive: Path, k: int = 0) -> dict:
    return pq.read_table(archive / "metadata.parquet").to_pylist()[k]


def _v2_folder(archive: Path, pid: str) -> Path:
    return archive / "BigEarthNet-S2" / pid[:-6] / pid


def _rejected_once(report: dict, needle: str, problem: str) -> dict:
    hits = [r for r in report["rejected"] if needle in r["path"]]
    assert len(hits) == 1, report["rejected"]
    assert problem in hits[0]["problem"], hits[0]
    return hits[0]


def test_v1_missing_band_file(pristine, baseline, tmp_path: Path) -> None:
    archive = _copy(pristine, "v1", tmp_path)
    patch = _v1_patch(archive)
    (patch / f"{patch.name}_B8A.tif").unlink()
    report = ingest(archive, tmp_path / "out")
    _rejected_once(report, f"{patch.name}_B8A.tif", "missing band file(s) B8A")
    assert report["n_indexed"] == baseline["v1"] - 1


@pytest.mark.parametrize("content,problem", [
    ("{not json", "JSON does not parse"),
    ('{"coordinates": {}}', "lacks `labels`"),
    ('{"labels": ["Pastures", "Moon craters"]}', "unknown label name(s) ['Moon craters']"),
])
def test_v1_bad_json(pristine, baseline, tmp_path: Path, content: str, problem: str) -> None:
    archive = _copy(pristine, "v1", tmp_path)
    patch = _v1_patch(archive, 1)
    (patch / f"{patch.name}_labels_metadata.json").write_text(content)
    report = ingest(archive, tmp_path / "out")
    _rejected_once(report, f"{patch.name}_labels_metadata.json", problem)
    assert report["n_indexed"] == baseline["v1"] - 1


def test_v1_folder_named_unlike_the_format(pristine, baseline, tmp_path: Path) -> None:
    archive = _copy(pristine, "v1", tmp_path)
    patch = _v1_patch(archive, 2)
    bad = patch.with_name(patch.name.replace("MSIL2A", "MSIL1C"))
    patch.rename(bad)
    report = ingest(archive, tmp_path / "out")
    _rejected_once(report, bad.name, "folder name unlike the v1 format")
    assert report["n_indexed"] == baseline["v1"] - 1
    assert report["listed_not_in_archive"] == 1


def test_v1_name_in_two_split_lists(pristine, baseline, tmp_path: Path) -> None:
    import bz2
    archive = _copy(pristine, "v1", tmp_path)
    name = _v1_patch(archive, 0).name
    test_list = archive / "v1-lists" / "test.csv.bz2"
    text = bz2.decompress(test_list.read_bytes()).decode() + f"{name}\r\n"
    test_list.write_bytes(bz2.compress(text.encode()))
    report = ingest(archive, tmp_path / "out")
    hit = [r for r in report["rejected"] if r["patch_id"] == name]
    assert hit and "train.csv and test.csv" in hit[0]["problem"]
    assert report["n_indexed"] == baseline["v1"] - 1


def _rewrite_metadata(archive: Path, rows: list[dict]) -> None:
    schema = pq.read_schema(archive / "metadata.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), archive / "metadata.parquet")


def test_v2_missing_band_file(pristine, baseline, tmp_path: Path) -> None:
    archive = _copy(pristine, "v2", tmp_path)
    pid = _v2_row(archive)["patch_id"]
    (_v2_folder(archive, pid) / f"{pid}_B01.tif").unlink()
    report = ingest(archive, tmp_path / "out")
    _rejected_once(report, f"{pid}_B01.tif", "missing band file(s) B01")
    assert report["n_indexed"] == baseline["v2"] - 1


def test_v2_metadata_row_whose_folder_is_missing(pristine, baseline, tmp_path: Path) -> None:
    archive = _copy(pristine, "v2", tmp_path)
    pid = _v2_row(archive, 1)["patch_id"]
    shutil.rmtree(_v2_folder(archive, pid))
    report = ingest(archive, tmp_path / "out")
    _rejected_once(report, pid, "metadata row whose folder is missing")
    assert report["n_indexed"] == baseline["v2"] - 1


def test_v2_unknown_label_and_duplicate_and_bad_id(pristine, baseline, tmp_path: Path) -> None:
    archive = _copy(pristine, "v2", tmp_path)
    rows = pq.read_table(archive / "metadata.parquet").to_pylist()
    rows[0]["labels"] = ["Arable land", "Lunar regolith"]
    rows.append(dict(rows[1]))  # duplicate patch_id
    rows[2]["patch_id"] = rows[2]["patch_id"][:-6] + "_7_7"  # unpadded: unlike v2
    _rewrite_metadata(archive, rows)
    report = ingest(archive, tmp_path / "out")
    by_id = {r["patch_id"]: r for r in report["rejected"]}
    assert "unknown label name(s) ['Lunar regolith']" in by_id[rows[0]["patch_id"]]["problem"]
    assert "duplicate patch_id" in by_id[rows[1]["patch_id"]]["problem"]
    assert "unlike the v2 format" in by_id[rows[2]["patch_id"]]["problem"]
    assert all(r["path"].endswith("metadata.parquet") for r in by_id.values()
               if "metadata row" not in r["problem"])
    assert report["n_indexed"] == baseline["v2"] - 3


def test_v2_folder_named_unlike_the_format(pristine, baseline, tmp_path: Path) -> None:
    archive = _copy(pristine, "v2", tmp_path)
    pid = _v2_row(archive)["patch_id"]
    stray = _v2_folder(archive, pid).parent / "not_a_patch"
    stray.mkdir()
    report = ingest(archive, tmp_path / "out")
    _rejected_once(report, "not_a_patch", "folder name unlike the v2 format")
    assert report["n_indexed"] == baseline["v2"]


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
def test_truncated_archive_keeps_every_complete_patch(pristine, baseline, tmp_path: Path,
                                                      suffix: str) -> None:
    from test_ingest import release_tar
    tar = release_tar(pristine["v2"], tmp_path / f"BigEarthNet-S2{suffix}")
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    report = ingest(tar, tmp_path / "out")
    cut = [r for r in report["rejected"] if "archive truncated or corrupt here" in r["problem"]]
    assert len(cut) == 1 and cut[0]["path"].startswith(f"{tar}:BigEarthNet-S2/")
    missing = [r for r in report["rejected"] if r is not cut[0]]
    assert missing and all("metadata row whose folder is missing" in r["problem"]
                           or "missing band file" in r["problem"] for r in missing)
    # Every patch is accounted for: indexed, or rejected as lost to the cut.
    assert 0 < report["n_indexed"] < baseline["v2"]
    assert report["n_indexed"] + len(missing) == baseline["v2"]
    index = pd.read_parquet(tmp_path / "out" / "index.parquet")
    for path in index["path"]:  # what is indexed is complete on disk
        assert len(list(Path(path).glob("*.tif"))) == 12
    with pytest.raises(BadPatchError, match="archive truncated or corrupt here"):
        ingest(tar, tmp_path / "strict", strict=True)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
def test_unreadable_archive_is_an_immediate_error(pristine, tmp_path: Path,
                                                  suffix: str) -> None:
    from test_ingest import release_tar
    tar = release_tar(pristine["v2"], tmp_path / f"BigEarthNet-S2{suffix}")
    tar.write_bytes(tar.read_bytes()[:40])  # not even the first member's header survives
    with pytest.raises(ArchiveError, match=rf"S2{suffix}.*truncated or corrupt"):
        ingest(tar, tmp_path / "out")
    assert not (tmp_path / "out" / "unpacked").exists()


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes = b"") -> None:
    info.size = len(data) if info.type == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_tar_member_escaping_the_target(pristine, baseline, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(pristine["v2"].iterdir()):
            tar.add(child, arcname=child.name)
        if kind == "absolute":
            _add(tar, tarfile.TarInfo(str(outside)), b"pwned")
        elif kind == "dotdot":
            _add(tar, tarfile.TarInfo("BigEarthNet-S2/../../../outside.txt"), b"pwned")
        else:
            link = tarfile.TarInfo("BigEarthNet-S2/escape")
            link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
            _add(tar, link)
    report = ingest(archive, tmp_path / "out")
    hits = [r for r in report["rejected"] if "escapes the target" in r["problem"]]
    assert len(hits) == 1 and str(archive) in hits[0]["path"], report["rejected"]
    assert not outside.exists()
    assert not (tmp_path / "out" / "unpacked" / "BigEarthNet-S2" / "escape").exists()
    assert report["n_indexed"] == baseline["v2"]
    with pytest.raises(BadPatchError, match="escapes the target"):
        ingest(archive, tmp_path / "out2", strict=True)


def test_empty_and_unrecognisable_archives(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match=f"{empty}: the archive is empty"):
        ingest(empty, tmp_path / "out")
    (tmp_path / "empty-v1" / "BigEarthNet-v1.0").mkdir(parents=True)
    with pytest.raises(ArchiveError, match=r"BigEarthNet-v1\.0: the archive is empty"):
        ingest(tmp_path / "empty-v1", tmp_path / "out")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README.txt").write_text("hello")
    with pytest.raises(ArchiveError, match=f"{junk}: not a BigEarthNet archive"):
        ingest(junk, tmp_path / "out")
    empty_tar = tmp_path / "empty.tar"
    tarfile.open(empty_tar, "w").close()
    with pytest.raises(ArchiveError, match="the archive is empty"):
        ingest(empty_tar, tmp_path / "out")
    with pytest.raises(ArchiveError, match="no such file"):
        ingest(tmp_path / "nope", tmp_path / "out")


def test_strict_fails_naming_the_file(pristine, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    archive = _copy(pristine, "v1", tmp_path)
    patch = _v1_patch(archive)
    (patch / f"{patch.name}_B03.tif").unlink()
    assert main(["ingest", str(archive), "--out", str(tmp_path / "lax")]) == 0
    rc = main(["ingest", str(archive), "--out", str(tmp_path / "strict"), "--strict"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{patch.name}_B03.tif" in err and "--strict" in err
    assert not (tmp_path / "strict" / "index.parquet").exists()
    report = json.loads((tmp_path / "strict" / "ingest-report.json").read_text())
    assert report["n_rejected"] == 1
