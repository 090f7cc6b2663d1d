"""``benscale train``: ResNet-50 on extracted shards with DeepSpeed data parallelism.

The same command runs under ``torchrun --nproc_per_node=K``, ``mpiexec -n K`` and
``srun -n K`` (rank discovery: :mod:`benscale.train.world`); it resumes automatically from the
newest checkpoint in RUN_DIR. Outputs: docs/architecture.md, section 4; how timings are
measured: docs/training.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benscale.errors import ConfigError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``benscale train``."""
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML training config (default: packaged train-defaults.yaml)")
    parser.add_argument("--data", type=Path, required=True,
                        help="shards folder written by `benscale extract`")
    parser.add_argument("--out", type=Path, required=True,
                        help="run directory (resumed from its latest checkpoint if present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optimizer.lr=0.05 (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Load and check the config, then train; raises ConfigError/DataError on bad input."""
    from benscale.train import config as config_mod

    cfg = config_mod.load(args.config, args.overrides)
    if not args.data.is_dir():
        raise ConfigError(f"--data {args.data}: no such folder; point it at the output of "
                          "`benscale extract`")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from benscale.train.loop import train

    train(cfg, args.data, args.out)
    return 0
