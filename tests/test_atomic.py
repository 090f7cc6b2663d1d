"""Atomic outputs: complete or absent, with ordinary permissions."""

import os

import pytest

from benscale.atomic import atomic_path, write_json


def test_written_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.json").read_text().strip().startswith("{")


def test_failure_leaves_no_file_and_no_temp(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.txt") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_never_replaces_what_is_not_a_regular_file(tmp_path):
    """An atomic rename onto a folder or a device (e.g. `--docs /dev/null`) would replace it."""
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="not a regular file"):
        write_json(tmp_path / "d", {"x": 1})
    with pytest.raises(IsADirectoryError, match="not a regular file"):
        write_json("/dev/null", {"x": 1})
    assert (tmp_path / "d").is_dir() and os.path.exists("/dev/null")
    assert not os.path.isfile("/dev/null")
