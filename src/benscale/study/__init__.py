"""``benscale study``: plan a scaling study's points and write ``study.json``.

The study stage: :mod:`.plan` (points, their batches and ``benscale train`` overrides),
:mod:`.launchers` (the argv that starts a point's ranks), :mod:`.slurm` (a point as one
Slurm allocation) and :mod:`.reproduce` (``benscale reproduce``). Everything is a pure
function of the study's :class:`~benscale.files.study.StudyConfig`, so the Snakefile, this
CLI and the tests plan the same points. This package never imports snakemake: the workflow
imports it.

    benscale study points --config study.yaml        # the plan, as a table
    benscale study write --config-json '{...}' --out results/<study>/study.json
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benscale.errors import ConfigError
from benscale.files.study import StudyConfig, StudyDocument, StudyMachine, Variant
from benscale.provenance import cpu_model, git_commit, package_versions
from benscale.study.launchers import check_local_cap, launch_command
from benscale.study.plan import (
    find_point,
    grid_variants,
    plan_points,
    resolve_variants,
    set_args,
)
from benscale.study.slurm import slurm_resources

__all__ = ["StudyConfig", "check_local_cap", "configure_parser", "find_point",
           "launch_command", "plan_points", "run", "set_args", "slurm_resources",
           "study_document"]


def study_document(config: StudyConfig, snakefile: str | None = None) -> StudyDocument:
    """The content of ``results/<study>/study.json`` (paths relative to its folder).

    The report reads this and, per point, ``runs/<name>/run.json`` and ``epochs.csv``;
    a point without ``run.json`` failed, and ``log`` says where to look.
    """
    variants = tuple(Variant(v.name, v.engine, v.precision, v.zero_stage, v.grad_accumulation,
                             v.set) for v in resolve_variants(config))
    return StudyDocument(study=config.study.name, config=config,
                         machine=machine_record(config),
                         created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                         variants=variants, points=plan_points(config), snakefile=snakefile)


def machine_record(config: StudyConfig) -> StudyMachine:
    """The machine a study ran on, as far as the planning host knows it (no torch import)."""
    return StudyMachine(name=config.machine.name, description=config.machine.description,
                        launcher=config.launcher.kind, submit_host=socket.gethostname(),
                        submit_host_cpu=cpu_model(), git=git_commit(),
                        packages=package_versions())


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``benscale study {points,write}``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in (("points", "print the points of a study as a table"),
                            ("write", "write study.json for the report")):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        src = sp.add_mutually_exclusive_group(required=True)
        src.add_argument("--config", type=Path,
                         help="resolved workflow config (JSON or YAML, all keys present)")
        src.add_argument("--config-json", help="the same, inline (what the workflow passes)")
        if name == "write":
            sp.add_argument("--out", type=Path, required=True, help="study.json to write")
            sp.add_argument("--snakefile", default=None,
                            help="the workflow's Snakefile (recorded for `benscale "
                                 "reproduce --profile`)")


def _load(args: argparse.Namespace) -> dict[str, Any]:
    if args.config_json is not None:
        return json.loads(args.config_json)
    import yaml

    try:
        return yaml.safe_load(args.config.read_text())
    except OSError as exc:
        raise ConfigError(f"{args.config}: cannot read the study config ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    """Entry point of ``benscale study``."""
    where = str(args.config) if args.config else "--config-json"
    config = StudyConfig.from_dict(_load(args), where)
    points = plan_points(config)
    if args.action == "write":
        study_document(config, args.snakefile).write(args.out)
        print(f"{args.out}: {len(points)} points", file=sys.stderr)
        return 0
    width = max(len(p.name) for p in points) + 2
    print(f"{'point':<{width}} {'nodes':>5} {'gpn':>4} {'world':>5} {'global':>7} "
          f"{'per_gpu':>7}")
    for p in points:
        print(f"{p.name:<{width}} {p.nodes:>5} {p.gpus_per_node:>4} {p.world_size:>5} "
              f"{p.global_batch:>7} {p.batch_per_gpu:>7}")
    for skipped in grid_variants(config)[1]:
        print(f"variant_grid: left out {skipped}", file=sys.stderr)
    return 0
