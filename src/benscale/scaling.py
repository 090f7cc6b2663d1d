"""Planning a scaling study: its points, their batch sizes, launchers and Slurm resources.

A study is ``modes x nodes x repeats``; every combination is one *point*, one training run
with its own run directory, and (on a cluster) one Slurm allocation of ``nodes`` nodes with
``gpus_per_node`` tasks per node. Everything here is a pure function of the study's
resolved configuration (the dict Snakemake validated against
``workflow/schemas/config.schema.yaml``), so the Snakefile, the ``benscale scaling`` CLI
and the tests all plan the same points, batches and launch commands:

- :func:`plan_points` lists the points with their batch sizes (strong scaling keeps the
  global batch, weak scaling keeps the per-GPU batch);
- :func:`launcher_argv` is the argv prefix that starts ``world_size`` ranks: ``mpiexec`` or
  ``torchrun`` with ``BENSCALE_NODES`` on one machine (nodes *emulated* by groups of local
  processes), ``srun`` inside a Slurm allocation;
- :func:`slurm_resources` is the Snakemake resources of one point for
  snakemake-executor-plugin-slurm (``nodes``, ``tasks_per_node``, GPUs per node through
  ``slurm_extra`` or ``gres``: never the plugin's ``gpu``, a per-job total);
- :func:`study_document` is ``results/<study>/study.json``, what the report reads.

This module never imports snakemake: the workflow imports it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benscale.atomic import write_json
from benscale.errors import ConfigError

#: Scaling modes and the batch quantity each keeps fixed as the world grows.
MODES: dict[str, str] = {"strong": "global_batch", "weak": "batch_per_gpu"}
#: Launchers that start all ranks on THIS machine (nodes are emulated).
LOCAL_LAUNCHERS: tuple[str, ...] = ("mpiexec", "torchrun")
#: Launchers that start ranks across the nodes of a Slurm allocation.
CLUSTER_LAUNCHERS: tuple[str, ...] = ("srun",)
#: How a Slurm job asks for its GPUs (see :func:`slurm_resources`).
GPU_REQUESTS: tuple[str, ...] = ("gpus-per-node", "gres", "none")


@dataclass(frozen=True)
class Point:
    """One scaling point: one training run, one Slurm allocation.

    Attributes:
        name: ``<mode>-n<nodes>-r<repeat>``, the run directory's name.
        mode: ``strong`` or ``weak``.
        nodes: nodes of the allocation (emulated by process groups locally).
        gpus_per_node: ranks per node, one GPU each.
        repeat: 0-based repetition index (same seed: repeats measure time variance).
        world_size: ``nodes x gpus_per_node``.
        global_batch: samples per optimizer step over all ranks.
        batch_per_gpu: samples per rank per micro-step.
    """

    name: str
    mode: str
    nodes: int
    gpus_per_node: int
    repeat: int
    world_size: int
    global_batch: int
    batch_per_gpu: int


def point_name(mode: str, nodes: int, repeat: int) -> str:
    """The name (and run directory) of a point: ``strong-n2-r0``."""
    return f"{mode}-n{nodes}-r{repeat}"


def batches(mode: str, world_size: int, study: dict[str, Any], grad_accumulation: int = 1,
            name: str = "") -> tuple[int, int]:
    """``(global_batch, batch_per_gpu)`` of a point.

    Strong scaling divides the fixed global batch over the ranks (so it must divide
    evenly); weak scaling multiplies the fixed per-GPU batch by the ranks.

    Raises:
        ConfigError: the global batch cannot be split evenly over ``world_size`` ranks.
    """
    if mode not in MODES:
        raise ConfigError(f"study.modes: unknown mode {mode!r}; use one of {sorted(MODES)}")
    if mode == "weak":
        per_gpu = int(study["batch_per_gpu"])
        return per_gpu * world_size * grad_accumulation, per_gpu
    global_batch = int(study["global_batch"])
    per_step = world_size * grad_accumulation
    if global_batch % per_step:
        raise ConfigError(
            f"point {name or mode}: study.global_batch={global_batch} is not divisible by "
            f"world size {world_size} x train.grad_accumulation {grad_accumulation}; choose a "
            f"global batch that is a multiple of {per_step} (e.g. "
            f"{per_step * max(global_batch // per_step, 1)}) or drop this node count")
    return global_batch, global_batch // per_step


def plan_points(config: dict[str, Any]) -> list[Point]:
    """All points of a study, in the order modes x nodes x repeats.

    Args:
        config: the resolved workflow configuration (keys ``study`` and ``train``).

    Raises:
        ConfigError: duplicate node counts, or a batch that cannot be split.
    """
    study = config["study"]
    nodes_list = [int(n) for n in study["nodes"]]
    if len(set(nodes_list)) != len(nodes_list):
        raise ConfigError(f"study.nodes={nodes_list}: each node count may appear once "
                          "(use study.repeats to measure a point several times)")
    gpn = int(study["gpus_per_node"])
    accum = int(config["train"]["grad_accumulation"])
    points = []
    for mode in study["modes"]:
        for nodes in nodes_list:
            for repeat in range(int(study["repeats"])):
                name = point_name(mode, nodes, repeat)
                world = nodes * gpn
                global_batch, per_gpu = batches(mode, world, study, accum, name)
                points.append(Point(name, mode, nodes, gpn, repeat, world, global_batch,
                                    per_gpu))
    return points


def find_point(config: dict[str, Any], mode: str, nodes: int | str, repeat: int | str) -> Point:
    """The planned point for wildcard values (strings from a Snakemake wildcard are fine)."""
    name = point_name(mode, int(nodes), int(repeat))
    for point in plan_points(config):
        if point.name == name:
            return point
    raise ConfigError(f"point {name} is not part of study {config['study']['name']!r} "
                      f"(modes {config['study']['modes']}, nodes {config['study']['nodes']}, "
                      f"repeats {config['study']['repeats']})")


def check_local_cap(points: list[Point], launcher: str, max_local_procs: int) -> None:
    """Refuse a local study whose largest point would oversubscribe this machine blindly.

    Locally a point of N nodes x G GPUs is N*G processes, each holding a ResNet-50 and its
    optimizer state (about 0.3-1 GB) and its threads; the cap makes that a decision.

    Raises:
        ConfigError: naming the offending point and the three ways out.
    """
    if launcher not in LOCAL_LAUNCHERS:
        return
    too_big = [p for p in points if p.world_size > max_local_procs]
    if too_big:
        worst = max(too_big, key=lambda p: p.world_size)
        raise ConfigError(
            f"point {worst.name} needs {worst.world_size} local processes "
            f"({worst.nodes} nodes x {worst.gpus_per_node}), more than "
            f"launcher.max_local_procs={max_local_procs}: lower study.nodes or "
            "study.gpus_per_node, raise launcher.max_local_procs if this machine can take "
            "it, or run on a cluster with --profile profiles/slurm")


def launcher_argv(launcher: str, nodes: int, gpus_per_node: int, threads_per_proc: int,
                  gpu_request: str = "none") -> list[str]:
    """The argv prefix that starts ``nodes x gpus_per_node`` ranks of ``benscale train``.

    Locally, ``BENSCALE_NODES`` tells the ranks how many nodes they emulate (ranks are
    grouped into equal consecutive node blocks, see :mod:`benscale.launch`). Under Slurm
    every step option is explicit: the job-step executor of the Snakemake plugin strips
    the ``SLURM_*`` variables (all but the job id) before running the rule, so ``srun``
    cannot inherit the geometry, and since Slurm 22.05 it never inherits
    ``--cpus-per-task``. A single-rank Slurm point needs no ``srun``: the plugin already
    runs it as a one-task step.

    Args:
        launcher: ``mpiexec``, ``torchrun`` or ``srun``.
        nodes: nodes of the point.
        gpus_per_node: ranks per node.
        threads_per_proc: intra-op threads per rank (``OMP_NUM_THREADS``; under Slurm
            also ``--cpus-per-task``).
        gpu_request: for ``srun``: how the step asks for GPUs (``gpus-per-node``,
            ``gres`` or ``none``), matching :func:`slurm_resources`.

    Returns:
        The argv list; the training command follows it.

    Raises:
        ConfigError: unknown launcher or GPU request.
    """
    world = nodes * gpus_per_node
    env = ["env", f"OMP_NUM_THREADS={threads_per_proc}"]
    if launcher == "mpiexec":
        return [*env, f"BENSCALE_NODES={nodes}", "mpiexec", "-n", str(world)]
    if launcher == "torchrun":
        return [*env, f"BENSCALE_NODES={nodes}", "torchrun", "--standalone",
                f"--nproc-per-node={world}", "--no-python"]
    if launcher != "srun":
        raise ConfigError(f"launcher.kind={launcher!r}: use one of "
                          f"{[*LOCAL_LAUNCHERS, *CLUSTER_LAUNCHERS]}")
    if gpu_request not in GPU_REQUESTS:
        raise ConfigError(f"slurm.gpu_request={gpu_request!r}: use one of {list(GPU_REQUESTS)}")
    if world == 1:
        return env
    argv = [*env, "srun", f"--nodes={nodes}", f"--ntasks={world}",
            f"--ntasks-per-node={gpus_per_node}", f"--cpus-per-task={threads_per_proc}",
            "--kill-on-bad-exit=1"]
    if gpu_request == "gpus-per-node":
        argv.append(f"--gpus-per-node={gpus_per_node}")
    elif gpu_request == "gres":
        argv.append(f"--gres=gpu:{gpus_per_node}")
    return argv


def slurm_resources(point: Point, slurm: dict[str, Any]) -> dict[str, Any]:
    """Snakemake resources making one point ONE Slurm allocation (plugin 2.x names).

    ``nodes`` -> ``--nodes``; ``tasks_per_node`` -> ``--ntasks-per-node`` (the plugin
    refuses 1 for MPI jobs, so a one-GPU-per-node point asks ``tasks`` = nodes instead);
    ``mpi="srun"`` makes the plugin run the rule's own ``srun`` instead of wrapping it in a
    one-task step; GPUs per node through ``slurm_extra`` (``--gpus-per-node``) or ``gres``
    (``--gres=gpu:G``): the plugin's ``gpu`` resource would be a per-JOB total.
    ``--mem`` is per node in Slurm, which is what ``mem_mb`` becomes.

    Args:
        point: the point.
        slurm: the ``slurm`` section of the config (cpus_per_task, mem_mb_per_node,
            runtime_min, gpu_request).
    """
    res: dict[str, Any] = {
        "nodes": point.nodes,
        "cpus_per_task": int(slurm["cpus_per_task"]),
        "runtime": int(slurm["runtime_min"]),
    }
    if slurm.get("mem_mb_per_node"):
        res["mem_mb"] = int(slurm["mem_mb_per_node"])
    if point.world_size > 1:
        res["mpi"] = "srun"
        if point.gpus_per_node > 1:
            res["tasks_per_node"] = point.gpus_per_node
        else:
            res["tasks"] = point.world_size
    request = slurm["gpu_request"]
    if request == "gpus-per-node":
        res["slurm_extra"] = f"'--gpus-per-node={point.gpus_per_node}'"
    elif request == "gres":
        res["gres"] = f"gpu:{point.gpus_per_node}"
        res["tasks_per_gpu"] = 1
    elif request != "none":
        raise ConfigError(f"slurm.gpu_request={request!r}: use one of {list(GPU_REQUESTS)}")
    return res


def train_overrides(point: Point, config: dict[str, Any]) -> list[str]:
    """The ``--set KEY=VALUE`` items of a point's ``benscale train`` (values as YAML).

    Exactly one of ``global_batch`` / ``batch_per_gpu`` is non-null: the one the mode
    keeps fixed. The study's tags travel into run.json.
    """
    train = config["train"]
    fixed = MODES[point.mode]
    items = {
        "epochs": train["epochs"],
        "precision": train["precision"],
        "zero_stage": train["zero_stage"],
        "seed": train["seed"],
        "grad_accumulation": train["grad_accumulation"],
        "global_batch": point.global_batch if fixed == "global_batch" else None,
        "batch_per_gpu": point.batch_per_gpu if fixed == "batch_per_gpu" else None,
        **{str(k): v for k, v in (train.get("set") or {}).items()},
        "tags.study": config["study"]["name"],
        "tags.point": point.name,
        "tags.mode": point.mode,
        "tags.repeat": point.repeat,
        "tags.nodes": point.nodes,
        "tags.gpus_per_node": point.gpus_per_node,
    }
    return [f"{key}={_yaml_scalar(value)}" for key, value in items.items()]


def _yaml_scalar(value: Any) -> str:
    """A value as the YAML that ``--set`` parses back to it (JSON is valid YAML)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def set_args(point: Point, config: dict[str, Any]) -> list[str]:
    """``train_overrides`` as argv: ``["--set", "epochs=3", "--set", ...]``."""
    return [arg for item in train_overrides(point, config) for arg in ("--set", item)]


def fault_argv(point: Point, debug: dict[str, Any]) -> list[str]:
    """A ``timeout`` prefix for points the config kills on purpose (failure-handling tests).

    SIGTERM first (what Slurm sends at a time limit or preemption, and what ``srun`` and
    ``mpiexec`` forward to every rank), SIGKILL 10 s later.
    """
    if point.name not in (debug.get("kill_points") or []):
        return []
    return ["timeout", "--signal=TERM", "--kill-after=10", f"{debug['kill_after_s']}s"]


def launch_command(point: Point, config: dict[str, Any]) -> str:
    """The shell-quoted prefix of a point's training command (fault, launcher)."""
    launcher = config["launcher"]
    threads = (int(config["slurm"]["cpus_per_task"]) if launcher["kind"] in CLUSTER_LAUNCHERS
               else int(launcher["threads_per_proc"]))
    argv = [*fault_argv(point, config.get("debug") or {}),
            *launcher_argv(launcher["kind"], point.nodes, point.gpus_per_node, threads,
                           config["slurm"]["gpu_request"])]
    return shlex.join(argv)


def study_document(config: dict[str, Any]) -> dict[str, Any]:
    """The content of ``results/<study>/study.json`` (paths relative to its folder).

    The report reads this and, per point, ``runs/<name>/run.json`` and ``epochs.csv``;
    a point without ``run.json`` failed, and ``log`` says where to look.
    """
    points = plan_points(config)
    return {
        "study": config["study"]["name"],
        "config": config,
        "machine": machine_record(config),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "points": [
            {**asdict(p), "run_dir": f"runs/{p.name}", "log": f"logs/train/{p.name}.log"}
            for p in points
        ],
    }


def machine_record(config: dict[str, Any]) -> dict[str, Any]:
    """The machine a study ran on, as far as the planning host knows it (no torch import).

    Per-run hosts, CPU/GPU models and Slurm job ids are in each run.json.
    """
    from benscale.provenance import cpu_model, git_commit, package_versions

    return {
        "name": config["machine"]["name"],
        "description": config["machine"]["description"],
        "launcher": config["launcher"]["kind"],
        "submit_host": socket.gethostname(),
        "submit_host_cpu": cpu_model(),
        "git": git_commit(),
        "packages": package_versions(),
    }


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``benscale scaling {points,study}``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in (("points", "print the points of a study as a table"),
                            ("study", "write study.json for the report")):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        src = sp.add_mutually_exclusive_group(required=True)
        src.add_argument("--config", type=Path,
                         help="resolved workflow config (JSON or YAML, all keys present)")
        src.add_argument("--config-json", help="the same, inline (what the workflow passes)")
        if name == "study":
            sp.add_argument("--out", type=Path, required=True, help="study.json to write")


def _load(args: argparse.Namespace) -> dict[str, Any]:
    if args.config_json is not None:
        return json.loads(args.config_json)
    import yaml

    try:
        return yaml.safe_load(args.config.read_text())
    except OSError as exc:
        raise ConfigError(f"{args.config}: cannot read the study config ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    """Entry point of ``benscale scaling``."""
    config = _load(args)
    try:
        points = plan_points(config)
    except KeyError as exc:
        raise ConfigError(f"study config lacks key {exc}: pass the RESOLVED config (as "
                          "the workflow validated it, defaults filled in)") from exc
    if args.action == "study":
        write_json(args.out, study_document(config))
        print(f"{args.out}: {len(points)} points", file=sys.stderr)
        return 0
    print(f"{'point':<16} {'nodes':>5} {'gpn':>4} {'world':>5} {'global':>7} {'per_gpu':>7}")
    for p in points:
        print(f"{p.name:<16} {p.nodes:>5} {p.gpus_per_node:>4} {p.world_size:>5} "
              f"{p.global_batch:>7} {p.batch_per_gpu:>7}")
    return 0
