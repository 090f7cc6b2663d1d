"""`benscale extract ARCHIVE`: one pass over the published tar gives the shards, statistics,
manifest, index and ingest report of `benscale ingest` + `benscale extract` on the same
archive, on real files: synthetic v1 and v2 archives tarred every way, the REAL v1 samples,
a truncated .tar.zst, a corrupt member, members that must be refused, and the file count."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
import zstandard

from benscale.cli import main
from benscale.extract.stream import SPILL_NAME
from conftest import run_cli

N = 40
SHARD = 6


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    for fmt in ("v1", "v2"):
        run_cli("synth", "--format", fmt, "--patches", N, "--seed", 5, "--out", root / fmt)
    return {"v1": root / "v1", "v2": root / "v2"}


def tar_of(folder: Path, dest: Path, names: list[str] | None = None) -> Path:
    """``dest`` (.tar, .tar.gz or .tar.zst) holding ``names`` of ``folder`` (default: all),
    each added recursively in sorted order (tarfile sorts a folder's entries)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    zst = dest.name.endswith(".zst")
    plain = dest.with_name(dest.name.removesuffix(".zst")) if zst else dest
    with tarfile.open(plain, "w:gz" if dest.name.endswith(".gz") else "w") as tar:
        for name in sorted(names or [p.name for p in folder.iterdir()]):
            tar.add(folder / name, arcname=name)
    if zst:
        dest.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
        plain.unlink()
    return dest


def release(v2: Path, folder: Path, suffix: str = ".tar.zst") -> Path:
    """``folder/BigEarthNet-S2.tar*`` of BigEarthNet-S2/ only, the metadata beside it."""
    archive = tar_of(v2, folder / f"BigEarthNet-S2{suffix}", ["BigEarthNet-S2"])
    for parquet in v2.glob("*.parquet"):
        shutil.copy(parquet, folder / parquet.name)
    return archive


def stream(archive: Path, out: Path, *extra: object, workers: int = 1) -> None:
    run_cli("extract", archive, "--out", out, "--shard-size", SHARD, "--workers", workers,
            *extra)


def reference(archive: Path, root: Path, *ingest_extra: object) -> tuple[Path, Path]:
    """ingest (which unpacks the tar) + extract: the (index folder, shards folder)."""
    run_cli("ingest", archive, "--out", root / "index", *ingest_extra)
    run_cli("extract", root / "index" / "index.parquet", "--out", root / "shards",
            "--shard-size", SHARD, "--workers", 1)
    return root / "index", root / "shards"


def files_below(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_shards(got: Path, want: Path) -> None:
    shards = [p for p in files_below(want) if p.endswith(".nc")]
    assert shards and shards == [p for p in files_below(got) if p.endswith(".nc")]
    for rel in shards:
        with xr.open_dataset(got / rel) as a, xr.open_dataset(want / rel) as b:
            xr.testing.assert_identical(a.load(), b.load())
        assert sha(got / rel) == sha(want / rel), rel  # the very same bytes
    for name in ("manifest.json", "stats.json"):
        assert (got / name).read_text() == (want / name).read_text(), name


def _mapped(value: object, unpacked: str, archive: str) -> object:
    """Paths into ingest's unpacked tree, spelled as the stream spells them; the cause of a
    cut in the stream's words or tarfile's, left out."""
    if isinstance(value, str):
        value = re.sub(r"truncated or corrupt (here|after this member) \(.*\);",
                       r"truncated or corrupt \1 (...);", value)
        return value.replace(f"{unpacked}/", f"{archive}:")
    if isinstance(value, list):
        return sorted((_mapped(v, unpacked, archive) for v in value), key=json.dumps)
    if isinstance(value, dict):
        return {k: _mapped(v, unpacked, archive) for k, v in value.items()}
    return value


def assert_same_index(got: Path, want: Path, archive: Path) -> None:
    """index.parquet and ingest-report.json as ingest's, but for the folders' paths (the
    folder inside the archive, ``ARCHIVE:MEMBER``, where ingest names the unpacked one)."""
    unpacked = str(want / "unpacked")
    a = pd.read_parquet(got / "index.parquet")
    b = pd.read_parquet(want / "index.parquet")
    b["path"] = [_mapped(p, unpacked, str(archive)) for p in b["path"]]
    pd.testing.assert_frame_equal(a, b)
    ra = json.loads((got / "ingest-report.json").read_text())
    rb = json.loads((want / "ingest-report.json").read_text())
    for r in (ra, rb):
        r.pop("ingest_time_s")
    assert _mapped(ra, unpacked, str(archive)) == _mapped(rb, unpacked, str(archive))


def facts(out: Path) -> dict:
    return json.loads((out / "extract-report.json").read_text())["stream"]


# ---------------------------------------------------------------------- equal outputs


@pytest.mark.parametrize("suffix", [".tar.zst", ".tar.gz", ".tar"])
def test_v2_release_form_equals_ingest_extract(synth, tmp_path: Path, suffix: str) -> None:
    """BigEarthNet-S2.tar.* with metadata.parquet beside it, as the release ships it: the
    plan is known before the pass."""
    archive = release(synth["v2"], tmp_path, suffix)
    extra = {".tar.zst": [], ".tar.gz": ["--format", "v2"], ".tar": ["--index-out",
                                                                  tmp_path / "out"]}[suffix]
    stream(archive, tmp_path / "out", *extra, workers=2 if suffix == ".tar.gz" else 1)
    index, shards = reference(archive, tmp_path / "ref")
    assert_same_shards(tmp_path / "out", shards)
    assert_same_index(tmp_path / "out", index, archive)
    got = facts(tmp_path / "out")
    assert got["plan"] == "metadata.parquet beside the archive" and got["format"] == "v2"
    assert got["rejected"] == [] and got["cut"] is None and not got["spilled"]
    assert got["decompressor"] in ({"none"} if suffix == ".tar" else
                                   {"zstd", "python"} if suffix == ".tar.zst" else
                                   {"isal", "pigz", "gzip", "python"})


@pytest.mark.parametrize("form", ["lists given", "lists inside", "no lists"])
def test_v1_equals_ingest_extract(synth, tmp_path: Path, form: str) -> None:
    v1 = synth["v1"]
    names = ["BigEarthNet-v1.0", "v1-lists"] if form == "lists inside" else ["BigEarthNet-v1.0"]
    archive = tar_of(v1, tmp_path / "BigEarthNet-v1.0.tar.gz", names)
    extra = ["--v1-lists", v1 / "v1-lists"] if form == "lists given" else []
    stream(archive, tmp_path / "out", *extra)
    index, shards = reference(archive, tmp_path / "ref", *extra)
    assert_same_shards(tmp_path / "out", shards)
    assert_same_index(tmp_path / "out", index, archive)
    with xr.open_dataset(tmp_path / "out" / "train" / "shard-00000.nc") as ds:
        assert "labels43" in ds  # the original 43 labels, from each patch's JSON
    plan = facts(tmp_path / "out")["plan"]
    assert plan == {"lists given": "official lists (--v1-lists)",
                    "lists inside": "end of stream: official lists inside the archive",
                    "no lists": "end of stream: deterministic split (no lists)"}[form]


def test_v2_metadata_inside_the_tar(synth, tmp_path: Path) -> None:
    """The whole synth folder tarred: metadata.parquet comes after the patches, so every
    patch waits for the end of the stream (here: spilled, the buffer being 0 MB)."""
    archive = tar_of(synth["v2"], tmp_path / "v2.tar.zst")
    stream(archive, tmp_path / "out", "--stream-buffer-mb", 0, workers=2)
    index, shards = reference(archive, tmp_path / "ref")
    assert_same_shards(tmp_path / "out", shards)
    assert_same_index(tmp_path / "out", index, archive)
    got = facts(tmp_path / "out")
    assert got["plan"] == "end of stream: metadata.parquet inside the archive"
    assert got["spilled"] and got["spilled_mb"] > 0
    assert not (tmp_path / "out" / SPILL_NAME).exists()


def test_real_v1_samples(real_v1_samples: Path, shared_dir: Path, tmp_path: Path) -> None:
    """The three REAL patches, with the official lists (519,284 planned patches, 3 present)."""
    archive = tar_of(real_v1_samples, tmp_path / "BigEarthNet-v1.0.tar.zst",
                     ["BigEarthNet-v1.0"])
    lists = shared_dir / "bigearthnet" / "reference" / "v1"
    stream(archive, tmp_path / "out", "--v1-lists", lists)
    index, shards = reference(archive, tmp_path / "ref", "--v1-lists", lists)
    assert_same_shards(tmp_path / "out", shards)
    assert_same_index(tmp_path / "out", index, archive)
    report = json.loads((tmp_path / "out" / "ingest-report.json").read_text())
    assert report["n_indexed"] == 3 and report["listed_not_in_archive"] == 519_284 - 3


# ---------------------------------------------------------------------- bad input


def test_truncated_tar_zst_keeps_every_complete_patch(synth, tmp_path: Path) -> None:
    archive = release(synth["v2"], tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    stream(archive, tmp_path / "out")
    index, shards = reference(archive, tmp_path / "ref")
    assert_same_shards(tmp_path / "out", shards)  # the same complete patches, same shards
    assert_same_index(tmp_path / "out", index, archive)
    got = facts(tmp_path / "out")
    cut = got["cut"]
    assert cut["path"].startswith(f"{archive}:BigEarthNet-S2/")
    assert "truncated or corrupt" in cut["problem"]
    assert cut in got["rejected"]
    lost = [r for r in got["rejected"] if r is not cut and r != cut]
    assert lost and all("missing" in r["problem"] for r in lost)
    n = json.loads((tmp_path / "out" / "ingest-report.json").read_text())["n_indexed"]
    assert 0 < n < N
    assert sum(v["n_patches"] for v in json.loads(
        (tmp_path / "out" / "manifest.json").read_text())["splits"].values()) == n


def _rewrite(archive: Path, dest: Path, change) -> Path:
    """A copy of the tar.zst ``archive`` with its members passed through ``change(info,
    data) -> [(info, data)]``."""
    plain = zstandard.ZstdDecompressor().stream_reader(archive.open("rb"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="r|") as src, tarfile.open(fileobj=buf, mode="w",
                                                                      format=src.format) as out:
        for info in src:
            data = src.extractfile(info).read() if info.isfile() else None
            for new, payload in change(info, data):
                out.addfile(new, io.BytesIO(payload) if payload is not None else None)
    dest.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return dest


def test_corrupt_member_rejects_only_its_patch(synth, tmp_path: Path) -> None:
    archive = release(synth["v2"], tmp_path / "good")
    victim: list[str] = []

    def garble(info: tarfile.TarInfo, data: bytes | None):
        if info.name.endswith("_B05.tif") and not victim:
            victim.append(info.name)
            data = bytes(reversed(data))
        return [(info, data)]

    bad = tmp_path / "bad"
    bad.mkdir()
    for parquet in (tmp_path / "good").glob("*.parquet"):
        shutil.copy(parquet, bad / parquet.name)
    archive = _rewrite(archive, bad / "BigEarthNet-S2.tar.zst", garble)
    stream(archive, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "extract-report.json").read_text())
    [rejected] = report["rejected"]
    assert rejected["path"] == f"{archive}:{victim[0]}"
    assert "unreadable or corrupt GeoTIFF" in rejected["problem"]
    assert report["n_extracted"] == report["n_planned"] - 1
    _, shards = reference(archive, tmp_path / "ref")  # extract rejects it there too
    assert_same_shards(tmp_path / "out", shards)
    rc = main(["extract", str(archive), "--out", str(tmp_path / "strict"), "--strict",
               "--shard-size", str(SHARD)])
    assert rc == 2


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_members_that_escape_or_link_are_refused(synth, tmp_path: Path, kind: str) -> None:
    good = release(synth["v2"], tmp_path / "good")
    name = {"dotdot": "BigEarthNet-S2/../../evil.tif", "absolute": str(tmp_path / "evil.tif"),
            "symlink": "BigEarthNet-S2/escape", "hardlink": "BigEarthNet-S2/hard"}[kind]
    first = []

    def add_evil(info: tarfile.TarInfo, data: bytes | None):
        out = [(info, data)]
        if not first:
            first.append(True)
            evil = tarfile.TarInfo(name)
            if kind in ("symlink", "hardlink"):
                evil.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                evil.linkname = "/etc/passwd"
                out.append((evil, None))
            else:
                evil.size = 5
                out.append((evil, b"pwned"))
        return out

    bad = tmp_path / "bad"
    bad.mkdir()
    for parquet in (tmp_path / "good").glob("*.parquet"):
        shutil.copy(parquet, bad / parquet.name)
    archive = _rewrite(good, bad / "BigEarthNet-S2.tar.zst", add_evil)
    stream(archive, tmp_path / "out")
    got = facts(tmp_path / "out")
    [refused] = [r for r in got["rejected"] if "refused" in r["problem"]]
    assert refused["path"] == f"{archive}:{name}" and got["members_refused"] == 1
    assert not (tmp_path / "evil.tif").exists() and not (tmp_path.parent / "evil.tif").exists()
    ingest_report = json.loads((tmp_path / "out" / "ingest-report.json").read_text())
    assert refused in ingest_report["rejected"]
    clean = tmp_path / "clean"
    stream(good, clean)
    assert_same_shards(tmp_path / "out", clean)  # nothing else changed


# ---------------------------------------------------------------------- files, resume


def test_files_created_are_per_shard_not_per_patch(synth, tmp_path: Path) -> None:
    archive = release(synth["v2"], tmp_path)
    out = tmp_path / "out"
    stream(archive, out)
    files = files_below(out)
    shards = [f for f in files if f.endswith(".nc")]
    assert len(files) == 2 * len(shards) + 5  # shard + receipt each; stats, manifest,
    assert facts(out)["files_created"] == len(files)  # report, index, ingest report
    assert not any("unpacked" in f for f in files)
    assert not list(tmp_path.glob("**/*.tif"))
    reference(archive, tmp_path / "ref")
    assert len(files_below(tmp_path / "ref")) > 12 * N  # unpacking: a file per band


def test_a_rerun_keeps_the_shards(synth, tmp_path: Path) -> None:
    archive = release(synth["v2"], tmp_path)
    out = tmp_path / "out"
    stream(archive, out)
    manifest = (out / "manifest.json").read_text()
    stream(archive, out)
    report = json.loads((out / "extract-report.json").read_text())
    assert report["shards_written"] == [] and report["shards_kept"] > 0
    assert (out / "manifest.json").read_text() == manifest


def test_bad_arguments(synth, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = release(synth["v2"], tmp_path)
    assert main(["extract", str(synth["v2"]), "--out", str(tmp_path / "o")]) == 2
    assert "run `benscale ingest" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "missing.tar.zst"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    index = tmp_path / "index.parquet"
    index.write_bytes(b"")
    assert main(["extract", str(index), "--out", str(tmp_path / "o"), "--v1-lists",
                 str(tmp_path)]) == 2
    assert "apply to an ARCHIVE" in capsys.readouterr().err
    assert main(["extract", str(archive), "--out", str(tmp_path / "o"), "--decompressor",
                 "gzip"]) == 2
    assert "not for a .tar.zst" in capsys.readouterr().err
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    assert main(["extract", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "the archive is empty" in capsys.readouterr().err
