"""A point as ONE Slurm allocation: the Snakemake resources of its training job for
snakemake-executor-plugin-slurm (``nodes``, ``tasks_per_node``, GPUs per node through
``slurm_extra`` or ``gres``: never the plugin's ``gpu``, a per-job total).
"""

from __future__ import annotations

from typing import Any

from benscale.errors import ConfigError
from benscale.files.study import Point, SlurmSection
from benscale.study.launchers import GPU_REQUESTS


def slurm_resources(point: Point, slurm: SlurmSection) -> dict[str, Any]:
    """Snakemake resources making one point ONE Slurm allocation (plugin 2.x names).

    ``nodes`` -> ``--nodes``; ``tasks_per_node`` -> ``--ntasks-per-node`` (the plugin
    refuses 1 for MPI jobs, so a one-GPU-per-node point asks ``tasks`` = nodes instead);
    ``mpi="srun"`` makes the plugin run the rule's own ``srun`` instead of wrapping it in a
    one-task step; GPUs per node through ``slurm_extra`` (``--gpus-per-node``) or ``gres``
    (``--gres=gpu:G``): the plugin's ``gpu`` resource would be a per-JOB total.
    ``--mem`` is per node in Slurm, which is what ``mem_mb`` becomes.

    Args:
        point: the point.
        slurm: the ``slurm`` section of the study config.
    """
    res: dict[str, Any] = {
        "nodes": point.nodes,
        "cpus_per_task": slurm.cpus_per_task,
        "runtime": slurm.runtime_min,
    }
    if slurm.mem_mb_per_node:
        res["mem_mb"] = slurm.mem_mb_per_node
    if point.world_size > 1:
        res["mpi"] = "srun"
        if point.gpus_per_node > 1:
            res["tasks_per_node"] = point.gpus_per_node
        else:
            res["tasks"] = point.world_size
    request = slurm.gpu_request
    if request == "gpus-per-node":
        res["slurm_extra"] = f"'--gpus-per-node={point.gpus_per_node}'"
    elif request == "gres":
        res["gres"] = f"gpu:{point.gpus_per_node}"
        res["tasks_per_gpu"] = 1
    elif request != "none":
        raise ConfigError(f"slurm.gpu_request={request!r}: use one of {list(GPU_REQUESTS)}")
    return res
