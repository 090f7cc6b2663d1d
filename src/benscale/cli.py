"""The ``benscale`` command: one subcommand per stage, each a module of the package.

Stage modules are imported only when their subcommand runs, so ``benscale --help`` stays fast
(torch and DeepSpeed take seconds to import). Each stage module provides
``configure_parser(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from benscale import __version__
from benscale.errors import BenscaleError

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("benscale.synth",
              "write a learnable synthetic archive in the exact published layout"),
    "ingest": ("benscale.ingest", "validate a BigEarthNet archive and write index.parquet"),
    "extract": ("benscale.extract", "resample, stack and write sharded netCDF4 + band statistics"),
    "train": ("benscale.train", "train ResNet-50 with DeepSpeed data parallelism"),
    "study": ("benscale.study", "plan the points of a scaling study and write study.json"),
    "report": ("benscale.report", "tables, figures and the HTML report of a study"),
    "compare": ("benscale.report.compare",
                "one page overlaying several studies' reports (machines, dates)"),
    "reproduce": ("benscale.study.reproduce",
                  "re-run a study bundle and compare with the original"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with ``only``, import just that stage's module."""
    parser = argparse.ArgumentParser(prog="benscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"benscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = importlib.import_module(module_name)
            module.configure_parser(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``benscale`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except BenscaleError as exc:
        print(f"benscale {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
