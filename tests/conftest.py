"""Shared fixtures: the ../shared folder beside the checkout (real BigEarthNet files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("BENSCALE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    """The root of the benscale checkout."""
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder with the real BigEarthNet samples and official lists."""
    path = _shared_dir()
    if not (path / "bigearthnet").is_dir():
        pytest.skip(f"no shared BigEarthNet files at {path} (set BENSCALE_SHARED)")
    return path


@pytest.fixture(scope="session")
def real_v1_samples(shared_dir: Path) -> Path:
    """The folder holding BigEarthNet-v1.0/ with three REAL v1 patches."""
    return shared_dir / "bigearthnet" / "samples" / "v1"
