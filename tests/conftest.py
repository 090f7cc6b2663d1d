"""Shared fixtures: the ../shared folder beside the checkout (real BigEarthNet files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("BENSCALE_SHARED", REPO.parent / "shared"))


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose system part (Slurm, chromium, shared/) is missing here; under CI
    (``CI=true``, which installs them all) that is a failure, so a proof cannot vanish."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    """The root of the benscale checkout."""
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder with the real BigEarthNet samples and official lists."""
    path = _shared_dir()
    if not (path / "bigearthnet").is_dir():
        skip_unless_ci(f"no shared BigEarthNet files at {path} (set BENSCALE_SHARED)")
    return path


@pytest.fixture(scope="session")
def real_v1_samples(shared_dir: Path) -> Path:
    """The folder holding BigEarthNet-v1.0/ with three REAL v1 patches."""
    return shared_dir / "bigearthnet" / "samples" / "v1"


#: Variables of an enclosing launcher that must not leak into the launchers tests start.
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "GROUP_RANK", "BENSCALE_NODES")


def launcher_env(**extra: str) -> dict[str, str]:
    """This environment without any enclosing launcher's variables, one thread per rank,
    and the venv's launchers (torchrun, mpiexec) first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCH_VARS and not k.startswith(("SLURM_", "PMI", "OMPI_"))}
    env.update(OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def run_cli(*argv: str) -> None:
    """Run ``benscale ARGV`` in-process and fail the test on a non-zero exit."""
    from benscale.cli import main

    rc = main([str(a) for a in argv])
    assert rc == 0, f"benscale {' '.join(map(str, argv))} exited {rc}"


def build_dataset(root: Path, fmt: str, patches: int, seed: int) -> Path:
    """synth -> ingest -> extract into ``root``; returns the shards folder (real files)."""
    archive, index, shards = root / "archive", root / "index", root / "shards"
    run_cli("synth", "--format", fmt, "--patches", patches, "--seed", seed, "--out", archive)
    ingest_args = ["ingest", archive, "--out", index]
    if fmt == "v1":
        ingest_args += ["--v1-lists", archive / "v1-lists"]
    run_cli(*ingest_args)
    run_cli("extract", index / "index.parquet", "--out", shards, "--shard-size", 64,
            "--workers", 1)
    return shards


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small extracted dataset (v1 synthetic archive, 160 patches) shared by the
    training, workflow and report tests. Treat it as read-only."""
    return build_dataset(tmp_path_factory.mktemp("tiny"), "v1", patches=160, seed=7)
