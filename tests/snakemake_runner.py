"""Running the benscale workflow from tests: a real `snakemake` in its own working folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
TINY = REPO / "config" / "tiny.yaml"


def venv_env() -> dict[str, str]:
    """The environment of a rule: the venv's bin (benscale, mpiexec, torchrun) first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """A config file with ``config`` (merged by Snakemake over the defaults)."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str | Path, configfiles: tuple[Path, ...] = (),
              timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``snakemake -s Snakefile --directory WORKDIR ARGS`` and capture its output.

    ``--directory`` keeps .snakemake/ and results/ of every test apart (and apart from the
    checkout's own, which `make demo` may be using).
    """
    argv = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
            str(workdir), *map(str, args)]
    if configfiles:
        argv += ["--configfile", *map(str, configfiles)]
    return subprocess.run(argv, cwd=workdir, env=venv_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr
