#!/usr/bin/env bash
# `python -m bench gpu` on a GPU node with no internet whose python3 already holds a CUDA
# PyTorch (a site module, NGC's container): installs the wheels written by
# tools/wheelhouse.py into a private folder (the node's own packages stay as they are),
# points the benchmark at the real sample patches, and runs it with the arguments given.
#
#   WHEELS  the wheel folder (default .whl)
#   SITE    where they are installed (default /tmp/benscale-site)
#   BENSCALE_SHARED  the folder holding bigearthnet/samples (default ../shared)
#
# Results land where `bench gpu` writes them: results/bench/gpu-<date>-<host>.json, its
# systems file beside it, and the table in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/benscale-site}
PYTHON=${PYTHON:-python3}

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "gpu-node: no wheels in $WHEELS (write them with tools/wheelhouse.py)" >&2
    exit 2
fi
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "${wheels[@]}"
export PYTHONPATH="$PWD/src:$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export BENSCALE_SHARED=${BENSCALE_SHARED:-$PWD/../shared}
export PYTHONUNBUFFERED=1
"$PYTHON" -c 'import benscale, deepspeed, netCDF4, rasterio, torch
print(f"gpu-node: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.device_count()} GPU(s), deepspeed {deepspeed.__version__}")'
exec "$PYTHON" -m bench gpu "$@"
