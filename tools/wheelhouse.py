"""Wheels for a GPU node with no internet whose Python already holds PyTorch.

HPC sites and containers (a site module, NGC's PyTorch image) bring their own CUDA build
of torch; what benscale adds on top must then come from a folder of wheels. This writes
that folder: benscale's runtime dependencies (no workflow or test extras) at the versions
installed in this checkout's venv (the pins of requirements.lock), built for the node's
Python, less every distribution the node already has. ``tools/gpu-node.sh`` installs them
there and runs ``python -m bench gpu``.

    .venv/bin/python tools/wheelhouse.py --python-version 3.12 --have node.txt --out .whl

``--have``: the node's ``python3 -m pip list --format freeze`` (or names alone, one per
line); those distributions are used as the node has them, whatever their version.
Distributions published only as source (DeepSpeed) are built here into wheels, without
their optional compiled ops (DeepSpeed compiles those just in time where it runs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: The manylinux tags pip matches for an x86-64 node (newest first).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def runtime_closure(root: str, python_version: str) -> dict[str, str]:
    """Every distribution ``root`` needs at run time (no extras), name -> installed version,
    with environment markers evaluated for ``python_version`` on Linux."""
    env = {**default_environment(), "python_version": python_version,
           "python_full_version": f"{python_version}.0", "sys_platform": "linux",
           "platform_system": "Linux", "extra": ""}
    found: dict[str, str] = {}
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist: Distribution = distribution(name)
        except PackageNotFoundError:
            sys.exit(f"wheelhouse: {name} is not installed in this venv: run `make venv` first")
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    found.pop(canonicalize_name(root))
    return found


def node_has(path: Path) -> set[str]:
    """Distribution names in a ``pip list --format freeze`` listing (or names alone)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(canonicalize_name(line.split("==")[0].split(" @ ")[0]))
    return names


def fetch(name: str, version: str, python_version: str, out: Path) -> str:
    """A wheel of ``name==version`` for the node in ``out``; returns how it came."""
    pip = [sys.executable, "-m", "pip"]
    download = [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--implementation", "cp", "--python-version", python_version,
                *(arg for p in PLATFORMS for arg in ("--platform", p)),
                "--dest", str(out), f"{name}=={version}"]
    if subprocess.run(download, capture_output=True, text=True).returncode == 0:
        return "downloaded"
    # Published as source only: build a wheel with this venv's build tools and torch.
    build = [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out), f"{name}=={version}"]
    proc = subprocess.run(build, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"wheelhouse: no wheel of {name}=={version} for Python {python_version} "
                 f"and none could be built:\n{proc.stderr[-2000:]}")
    return "built from source"


def main(argv: list[str] | None = None) -> int:
    """Write the wheel folder (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", required=True, help="the node's, e.g. 3.12")
    parser.add_argument("--have", type=Path, required=True,
                        help="the node's `pip list --format freeze` (names are enough)")
    parser.add_argument("--out", type=Path, default=Path(".whl"), help="wheel folder")
    args = parser.parse_args(argv)
    have = node_has(args.have)
    closure = runtime_closure("benscale", args.python_version)
    need = {n: v for n, v in closure.items() if n not in have}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, version in sorted(need.items()):
        how = fetch(name, version, args.python_version, args.out)
        print(f"wheelhouse: {name}=={version}: {how}")
    total = sum(p.stat().st_size for p in args.out.glob("*.whl"))
    print(f"wheelhouse: {len(need)} wheels for Python {args.python_version} in {args.out} "
          f"({total / 2**20:.1f} MiB); the node has the other "
          f"{len(closure) - len(need)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
