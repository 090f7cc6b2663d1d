"""``benscale synth``: a learnable synthetic archive in the exact published layout.

The embedded default of the benchmark: when the configuration names no archive, the
workflow runs the whole pipeline on what this writes. It must therefore look exactly like
the real thing to every later stage (names, folders, GeoTIFF sizes, CRS, geotransform,
JSON keys, parquet schema, official list format; docs/bigearthnet.md) and it must be
learnable, so that a training run measures something real (:mod:`.pixels`). The seed picks
the patches (:mod:`.plan`); same seed, same bytes. Writers: :mod:`.v1`, :mod:`.v2`, both
through GDAL-made GeoTIFF templates (:mod:`.tiff`).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benscale.bigearthnet import V1_LISTS_DIR
from benscale.errors import ConfigError
from benscale.synth.pixels import render_patch
from benscale.synth.plan import plan_patches
from benscale.synth.v1 import write_v1_lists, write_v1_patch
from benscale.synth.v2 import write_v2_metadata, write_v2_patch

#: Most patches one archive can hold: 8 products x a 100 x 100 grid of patch positions.
MAX_PATCHES = 80_000


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``benscale synth``."""
    parser.add_argument("--format", choices=("v1", "v2"), default="v2",
                        help="archive layout to write (default v2)")
    parser.add_argument("--patches", type=int, default=2000, help="number of patches")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--out", type=Path, required=True,
                        help="archive folder to create (must not exist or be empty)")


def run(args: argparse.Namespace) -> int:
    """Write the archive; see the module docstring."""
    synthesize(args.format, args.patches, args.seed, args.out)
    return 0


def synthesize(fmt: str, n_patches: int, seed: int, out: Path) -> Path:
    """Write an archive of ``n_patches`` in layout ``fmt`` to ``out``; return ``out``.

    The archive is built in a hidden sibling folder and renamed onto ``out`` when complete,
    so ``out`` never holds half an archive.
    """
    if fmt not in ("v1", "v2"):
        raise ConfigError(f"--format {fmt!r}: expected v1 or v2")
    if not 1 <= n_patches <= MAX_PATCHES:
        raise ConfigError(f"--patches {n_patches}: expected 1 to {MAX_PATCHES}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty folder; choose a new --out")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    patches = plan_patches(n_patches, fmt, rng)
    writer = write_v1_patch if fmt == "v1" else write_v2_patch
    for patch in tqdm(patches, desc=f"synth {fmt}", unit="patch", mininterval=2,
                      disable=n_patches < 500):
        writer(tmp, patch, render_patch(patch, rng))
    if fmt == "v1":
        write_v1_lists(tmp / V1_LISTS_DIR, patches)
    else:
        write_v2_metadata(tmp, patches)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out
