"""The sequential tar reader of benscale.files.archive_tar against Python's tarfile, on real
tar files in every format, through every decompressor available here; cut streams; refusals."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from benscale.errors import ConfigError
from benscale.files.archive_tar import (
    TarCutError,
    TarReader,
    available,
    choose_decompressor,
    open_stream,
    refusal,
)

LONG = "BigEarthNet-S2/" + "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP" * 2 + "/x" * 30


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
         link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if data else None)


def build(path: Path, fmt: int) -> Path:
    """A tar with dirs, long names (GNU L, pax path, or a ustar prefix), a link, an empty
    file, a file larger than the reader's chunk, non-ASCII and ``./`` names."""
    rng = random.Random(fmt)
    with tarfile.open(path, "w", format=fmt) as tar:
        _add(tar, "top", kind=tarfile.DIRTYPE)
        long = LONG if fmt != tarfile.USTAR_FORMAT else "p" * 120 + "/" + "n" * 90
        _add(tar, long + ".tif", rng.randbytes(1000))
        _add(tar, "top/short.txt", b"hello")
        _add(tar, "top/empty")
        _add(tar, "top/big", rng.randbytes(300_000))
        _add(tar, "top/link", kind=tarfile.SYMTYPE, link="../" + "z" * 90)
        if fmt != tarfile.USTAR_FORMAT:
            _add(tar, "top/ünïcode.txt", b"u")
        _add(tar, "./dot/x", b"d")
    return path


def by_tarfile(path: Path) -> list[tuple]:
    with tarfile.open(path) as tar:
        return [(m.name, m.type if m.type != tarfile.AREGTYPE else tarfile.REGTYPE, m.size,
                 m.linkname, tar.extractfile(m).read() if m.isfile() else None) for m in tar]


def by_reader(path: Path, decompressor: str = "auto", chunk: int = 4096) -> list[tuple]:
    out = []
    with open_stream(path, decompressor, progress=False) as stream:
        reader = TarReader(stream, chunk=chunk)
        for e in reader:
            kind = e.type if e.type != tarfile.AREGTYPE else tarfile.REGTYPE
            out.append((e.name, kind, e.size, e.linkname, reader.read() if e.isfile else None))
        assert stream.finish() is None
    return out


def compressed(plain: Path, suffix: str, parts: int = 1) -> Path:
    """``plain`` compressed in ``parts`` frames (zstd) or members (gzip)."""
    raw = plain.read_bytes()
    cuts = [len(raw) * i // parts for i in range(parts + 1)]
    pieces = [raw[a:b] for a, b in itertools.pairwise(cuts)]
    pack = gzip.compress if suffix == ".gz" else zstandard.ZstdCompressor().compress
    out = plain.with_name(plain.name + suffix)
    out.write_bytes(b"".join(pack(p) for p in pieces))
    return out


def decompressors(suffix: str) -> list[str]:
    names = ["zstd", "python"] if suffix == ".zst" else ["isal", "pigz", "gzip", "python"]
    return ["auto", *(n for n in names if available(n))]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_members_and_data_equal_tarfiles(fmt: int, tmp_path: Path) -> None:
    plain = build(tmp_path / "a.tar", fmt)
    want = by_tarfile(plain)
    assert len(want) >= 7 and any(len(name) > 100 for name, *_ in want)
    assert by_reader(plain) == want
    assert by_reader(plain, chunk=1 << 22) == want
    for suffix in (".gz", ".zst"):
        for parts in (1, 3):  # several gzip members / zstd frames are one stream
            packed = compressed(plain, suffix, parts)
            for name in decompressors(suffix):
                assert by_reader(packed, name) == want, (suffix, parts, name)


@pytest.mark.parametrize("suffix", [".gz", ".zst", ""])
def test_a_cut_stream_names_the_member_cut(suffix: str, tmp_path: Path) -> None:
    plain = build(tmp_path / "a.tar", tarfile.GNU_FORMAT)
    whole = compressed(plain, suffix) if suffix else plain
    cut = tmp_path / f"cut.tar{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # inside top/big, the largest member
    for name in decompressors(suffix) if suffix else ["auto"]:
        seen = []
        with open_stream(cut, name, progress=False) as stream:
            reader = TarReader(stream)
            with pytest.raises(TarCutError) as err:
                for e in reader:
                    seen.append(e.name)
                    if e.isfile:
                        reader.read()
        assert (err.value.member, err.value.after) == ("top/big", "top/empty"), name
        assert "truncated" in err.value.cause or "premature" in err.value.cause, name
        assert seen[-1] == "top/big"


def test_a_stream_cut_between_members_is_a_cut(tmp_path: Path) -> None:
    plain = build(tmp_path / "a.tar", tarfile.GNU_FORMAT)
    with tarfile.open(plain) as tar:
        members = tar.getmembers()
    end = members[3].offset  # the header of the 4th member: nothing of it is left
    cut = tmp_path / "cut.tar"
    cut.write_bytes(plain.read_bytes()[:end])
    with open_stream(cut, progress=False) as stream:
        reader = TarReader(stream)
        with pytest.raises(TarCutError) as err:
            for _ in reader:
                pass
    assert err.value.member is None and err.value.after == members[2].name
    assert "end-of-archive marker" in err.value.cause


def test_refusals() -> None:
    from benscale.files.archive_tar import Entry

    assert refusal(Entry("BigEarthNet-S2/a/b.tif", tarfile.REGTYPE, 1)) is None
    assert refusal(Entry("BigEarthNet-S2/a/../b.tif", tarfile.REGTYPE, 1)) is None
    assert "absolute" in refusal(Entry("/etc/passwd", tarfile.REGTYPE, 1))
    assert "'..'" in refusal(Entry("BigEarthNet-S2/../../evil.tif", tarfile.REGTYPE, 1))
    assert "link" in refusal(Entry("a/b.tif", tarfile.SYMTYPE, 0, "/etc/passwd"))
    assert "link" in refusal(Entry("a/b.tif", tarfile.LNKTYPE, 0, "a/c.tif"))
    assert "device" in refusal(Entry("a/dev", tarfile.CHRTYPE, 0))


def test_decompressor_choice(tmp_path: Path) -> None:
    zst, gz, tar = tmp_path / "a.tar.zst", tmp_path / "a.tar.gz", tmp_path / "a.tar"
    for path in (zst, gz, tar):
        path.write_bytes(b"")
    assert choose_decompressor(tar, "auto") == "none"
    assert choose_decompressor(zst) == ("zstd" if available("zstd") else "python")
    assert choose_decompressor(gz, "python") == "python"
    with pytest.raises(ConfigError, match=r"not for a \.tar\.zst"):
        choose_decompressor(zst, "gzip")
    if not available("isal"):
        with pytest.raises(ConfigError, match="not installed"):
            choose_decompressor(gz, "isal")
    assert os.path.getsize(zst) == 0


def test_a_corrupt_header_is_a_cut_after_the_last_good_member(tmp_path: Path) -> None:
    plain = build(tmp_path / "a.tar", tarfile.PAX_FORMAT)
    with tarfile.open(plain) as tar:
        members = tar.getmembers()
    data = bytearray(plain.read_bytes())
    data[members[2].offset + 10] ^= 0x55  # a byte of the 3rd member's (pax) header name
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with open_stream(bad, progress=False) as stream:
        reader = TarReader(stream)
        with pytest.raises(TarCutError) as err:
            for e in reader:
                if e.isfile:
                    reader.read()
    assert err.value.member is None and err.value.after == members[1].name
    assert "corrupt" in err.value.cause
