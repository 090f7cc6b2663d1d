"""How a point's ranks are started: the argv prefix of its ``benscale train``.

``mpiexec`` or ``torchrun`` with ``BENSCALE_NODES`` on one machine (nodes *emulated* by
groups of local processes), ``srun`` inside a Slurm allocation. One place decides the
intra-op threads of a rank, for the workflow and for ``benscale reproduce`` alike.
"""

from __future__ import annotations

import shlex
import shutil

from benscale.errors import ConfigError
from benscale.files.study import DebugSection, Point, StudyConfig

#: Launchers that start all ranks on THIS machine (nodes are emulated).
LOCAL_LAUNCHERS: tuple[str, ...] = ("mpiexec", "torchrun")
#: Launchers that start ranks across the nodes of a Slurm allocation.
CLUSTER_LAUNCHERS: tuple[str, ...] = ("srun",)
#: How a Slurm job asks for its GPUs (see :func:`benscale.study.slurm.slurm_resources`).
GPU_REQUESTS: tuple[str, ...] = ("gpus-per-node", "gres", "none")


def threads_per_rank(config: StudyConfig, launcher: str | None = None) -> int:
    """Intra-op threads of one rank: the Slurm cores per task on a cluster, else
    ``launcher.threads_per_proc``."""
    kind = launcher or config.launcher.kind
    if kind in CLUSTER_LAUNCHERS:
        return config.slurm.cpus_per_task
    return config.launcher.threads_per_proc


def check_local_cap(points: tuple[Point, ...], launcher: str, max_local_procs: int) -> None:
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
    grouped into equal consecutive node blocks, see :mod:`benscale.train.world`). Under Slurm
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


def fault_argv(point: Point, debug: DebugSection) -> list[str]:
    """A ``timeout`` prefix for points the config kills on purpose (failure-handling tests).

    SIGTERM first (what Slurm sends at a time limit or preemption, and what ``srun`` and
    ``mpiexec`` forward to every rank), SIGKILL 10 s later.
    """
    if point.name not in debug.kill_points:
        return []
    return ["timeout", "--signal=TERM", "--kill-after=10", f"{debug.kill_after_s:g}s"]


def check_found(argv: list[str]) -> None:
    """Fail, naming the program and the fix, when a launcher of ``argv`` is not on PATH
    (rather than a subprocess's bare exit status 127)."""
    for program in argv:
        if program in (*LOCAL_LAUNCHERS, *CLUSTER_LAUNCHERS) and shutil.which(program) is None:
            raise ConfigError(
                f"{program}: not found on PATH; it starts the ranks of this study. Activate "
                "the environment benscale is installed in (e.g. `source .venv/bin/activate`, "
                "whose bin/ holds mpiexec and torchrun), load your site's MPI module, or pass "
                "--launcher torchrun")


def launch_command(point: Point, config: StudyConfig, launcher: str | None = None) -> str:
    """The shell-quoted prefix of a point's training command (fault, launcher)."""
    kind = launcher or config.launcher.kind
    argv = [*fault_argv(point, config.debug),
            *launcher_argv(kind, point.nodes, point.gpus_per_node,
                           threads_per_rank(config, kind), config.slurm.gpu_request)]
    return shlex.join(argv)
