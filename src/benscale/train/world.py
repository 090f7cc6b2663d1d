"""Rank, world and master discovery from the launcher's environment.

One ``benscale train`` command runs unchanged under ``torchrun``, ``srun`` and
``mpiexec``/``mpirun``. Each launcher describes the job in its own environment variables;
the functions here turn that environment into one :class:`World`. They are pure
(environment in, dataclass out) so that every launcher is unit-tested without a cluster;
the only side effect of this module lives in :func:`export_for_torch`, the ONE place that
writes ``os.environ`` for ``torch.distributed``.

Discovery order (the first that matches wins, and the choice is logged as ``launcher``):

1. torchrun / torch elastic: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
   ``MASTER_PORT`` (``LOCAL_WORLD_SIZE``, ``GROUP_RANK`` when present);
2. Slurm (``srun``): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; master = first
   host of ``SLURM_JOB_NODELIST`` (expanded by :func:`expand_hostlist`), port derived from
   ``SLURM_JOB_ID`` so all tasks agree without talking;
3. MPI (``mpiexec``; detected by PMI/PMIx/Open MPI variables): rank and size from mpi4py,
   local rank from a shared-memory split, master address and a free port chosen by rank 0
   and broadcast over MPI (never ``hostname -I``, which DeepSpeed's own discovery uses and
   which may name the wrong network on HPC nodes);
4. otherwise a single process.

Slurm is tried before MPI, except when an MPI process manager reports a world size that
differs from the Slurm step's (``mpirun`` inside an allocation starts ranks through srun
proxies whose Slurm variables describe the proxies): see :func:`detect_launcher`.

``BENSCALE_NODES=N`` (set by the local profile) EMULATES N nodes on one machine: ranks are
grouped into N equal "nodes" for the layout that results are reported against.
"""

from __future__ import annotations

import os
import re
import socket
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from benscale.errors import ConfigError

#: Port range for ports derived from a Slurm job id (unprivileged, below the ephemeral range).
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 10000
#: Default torchrun-style port when a launcher gives none and only one host is involved.
DEFAULT_PORT = 29500
#: Variables that show a process was started by an MPI process manager.
MPI_MARKERS: tuple[str, ...] = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_RANK",
                                "MV2_COMM_WORLD_RANK", "MPI_LOCALRANKID")


@dataclass(frozen=True)
class World:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size-1.
        world_size: number of processes (one per GPU, or per CPU slot).
        local_rank: rank among the processes of this host; picks the CUDA device.
        local_world_size: processes per node (per emulated node under BENSCALE_NODES).
        nodes: number of nodes (emulated or real distinct hosts).
        node_rank: this process's node, 0 .. nodes-1.
        master_addr: host of rank 0, reachable by every rank.
        master_port: TCP port of the rendezvous store on ``master_addr``.
        launcher: ``torchrun``, ``slurm``, ``mpi`` or ``single``.
        emulated_nodes: True when ``nodes`` comes from BENSCALE_NODES.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    nodes: int
    node_rank: int
    master_addr: str
    master_port: int
    launcher: str
    emulated_nodes: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for run.json)."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------- hostlists
_BRACKET = re.compile(r"\[([^\]]*)\]")


def _split_top_level(text: str) -> list[str]:
    """Split a Slurm hostlist on the commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str, hostlist: str) -> list[str]:
    """``1-3,05`` -> ``["1", "2", "3", "05"]``, keeping zero padding of the lower bound."""
    out: list[str] = []
    for item in spec.split(","):
        lo, sep, hi = item.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ConfigError(f"SLURM_JOB_NODELIST={hostlist!r}: bad range {item!r}; "
                              "expected forms like node[1-3,5]")
        if not sep:
            out.append(lo)
            continue
        width = len(lo) if lo.startswith("0") else 0
        out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return out


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm hostlist as ``scontrol show hostnames`` does, in pure Python.

    Handles several bracket groups per name (``r[1-2]n[01-02]`` gives 4 hosts, the last
    group varying fastest) and zero padding (``gpu[08-10]``).

    Args:
        hostlist: e.g. ``node[1-3,5],gpu01``.

    Returns:
        Host names in order, e.g. ``["node1", "node2", "node3", "node5", "gpu01"]``.
    """
    hosts: list[str] = []
    for part in _split_top_level(hostlist):
        names = [""]
        pos = 0
        for match in _BRACKET.finditer(part):
            prefix = part[pos:match.start()]
            names = [n + prefix + v for n in names
                     for v in _expand_range(match.group(1), hostlist)]
            pos = match.end()
        if "[" in part[pos:] or "]" in part[pos:]:
            raise ConfigError(f"SLURM_JOB_NODELIST={hostlist!r}: unbalanced brackets in {part!r}")
        hosts.extend(n + part[pos:] for n in names)
    return hosts


def slurm_port(job_id: str | None) -> int:
    """A port every task of a Slurm job derives alike from the job id (no communication)."""
    if not job_id:
        return DEFAULT_PORT
    digits = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return SLURM_PORT_BASE + digits % SLURM_PORT_SPAN


# --------------------------------------------------------------------------- launchers
def _int(env: Mapping[str, str], key: str, launcher: str) -> int:
    try:
        return int(env[key])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{launcher} environment: {key}={env.get(key)!r} is not an "
                          "integer; is the job started by the launcher it claims?") from exc


def from_torchrun(env: Mapping[str, str]) -> World:
    """World of a process started by torchrun (or anything exporting its variables)."""
    rank, size = _int(env, "RANK", "torchrun"), _int(env, "WORLD_SIZE", "torchrun")
    local_rank = _int(env, "LOCAL_RANK", "torchrun") if "LOCAL_RANK" in env else 0
    local_size = int(env.get("LOCAL_WORLD_SIZE", size))
    nodes = max(size // max(local_size, 1), 1)
    node_rank = int(env.get("GROUP_RANK", rank // max(local_size, 1)))
    return World(rank, size, local_rank, local_size, nodes, node_rank,
                 env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", DEFAULT_PORT)),
                 "torchrun")


def from_slurm(env: Mapping[str, str]) -> World:
    """World of a task started by ``srun`` (one task per GPU)."""
    size_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    rank, size = _int(env, "SLURM_PROCID", "Slurm"), _int(env, size_key, "Slurm")
    local_rank = _int(env, "SLURM_LOCALID", "Slurm") if "SLURM_LOCALID" in env else 0
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    hosts = expand_hostlist(nodelist) if nodelist else [socket.gethostname()]
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or len(hosts))
    nodes = max(min(nodes, size), 1)
    local_size = max(size // nodes, 1)
    node_rank = int(env.get("SLURM_NODEID", rank // local_size))
    return World(rank, size, local_rank, local_size, nodes, node_rank, hosts[0],
                 slurm_port(env.get("SLURM_JOB_ID")), "slurm")


def from_mpi(comm: Any) -> World:
    """World of an MPI process; ``comm`` is an mpi4py communicator (usually COMM_WORLD).

    Collective: every rank must call it. Rank 0 chooses the master address (its host name)
    and a free port and broadcasts both; host names are gathered to count nodes.
    """
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = node_comm.Get_rank(), node_comm.Get_size()
    node_comm.Free()
    hosts = comm.allgather(socket.gethostname())
    distinct = list(dict.fromkeys(hosts))
    master = comm.bcast((hosts[0], free_port()) if rank == 0 else None, root=0)
    return World(rank, size, local_rank, local_size, len(distinct),
                 distinct.index(hosts[rank]), master[0], master[1], "mpi")


def check_mpi_world(world: World, env: Mapping[str, str]) -> None:
    """Refuse an MPI world whose size disagrees with what the launcher says it started.

    An mpi4py built against one MPI (e.g. the pip ``mpich`` wheel) and started by another
    MPI's ``mpirun`` (a site's Open MPI) does not see its peers: every process is rank 0
    of a world of 1, and N processes would write one run directory. The launcher's own
    variables give the size it started.

    Raises:
        ConfigError: naming both sizes and the likely cause.
    """
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE",
                "SLURM_STEP_NUM_TASKS"):
        raw = env.get(key, "")
        if raw.isdigit() and int(raw) != world.world_size:
            raise ConfigError(
                f"mpi4py sees a world of {world.world_size} process(es), but the launcher "
                f"started {raw} ({key}={raw}): mpi4py is most likely built against another "
                "MPI than the mpiexec/mpirun that started it (e.g. the pip mpich wheel under "
                "a site's Open MPI). Start with the MPI mpi4py uses (`python -c \"from "
                "mpi4py import MPI; print(MPI.Get_library_version())\"`), or install mpi4py "
                "against the site's MPI (`pip install --no-binary mpi4py mpi4py` with its "
                "mpicc on PATH; docs/training.md, \"MPI\")")


def single() -> World:
    """World of a plain ``benscale train`` without a launcher."""
    return World(0, 1, 0, 1, 1, 0, "127.0.0.1", free_port(), "single")


def free_port() -> int:
    """A TCP port that is free on this host right now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _mpi_size(env: Mapping[str, str]) -> int | None:
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return None


def detect_launcher(env: Mapping[str, str]) -> str:
    """Which launcher started this process: ``torchrun``, ``slurm``, ``mpi`` or ``single``.

    Slurm counts only inside a job step (``srun`` sets ``SLURM_STEP_ID``): a batch script's
    own process is a single process. ``mpirun`` inside an allocation starts its ranks
    through ``srun`` proxies, which leaves Slurm variables that describe the proxies, not
    the ranks; so when an MPI process manager reports a world size different from the
    Slurm step's, MPI wins.
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    in_step = all(k in env for k in ("SLURM_PROCID", "SLURM_STEP_ID")) and (
        "SLURM_NTASKS" in env or "SLURM_STEP_NUM_TASKS" in env)
    mpi = any(k in env for k in MPI_MARKERS)
    if in_step:
        step_size = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
        mpi_size = _mpi_size(env)
        if not mpi or mpi_size is None or str(mpi_size) == step_size:
            return "slurm"
    return "mpi" if mpi else "single"


def emulate_nodes(world: World, env: Mapping[str, str]) -> World:
    """Apply ``BENSCALE_NODES=N``: N equal nodes of consecutive ranks.

    ``local_rank`` keeps the launcher's value: it still picks the device on the real host.
    """
    raw = env.get("BENSCALE_NODES")
    if not raw:
        return world
    try:
        nodes = int(raw)
    except ValueError as exc:
        raise ConfigError(f"BENSCALE_NODES={raw!r} is not an integer") from exc
    if nodes < 1 or world.world_size % nodes:
        raise ConfigError(f"BENSCALE_NODES={nodes} does not divide the world size "
                          f"{world.world_size}; start a multiple of {nodes} processes")
    per_node = world.world_size // nodes
    return replace(world, nodes=nodes, local_world_size=per_node,
                   node_rank=world.rank // per_node, emulated_nodes=True)


def discover(env: Mapping[str, str] | None = None, mpi_comm: Any = None) -> World:
    """The World of this process, following the discovery order of the module docstring.

    Args:
        env: the environment (default ``os.environ``).
        mpi_comm: the communicator for MPI discovery (default ``MPI.COMM_WORLD``, imported
            only when MPI variables are present: importing mpi4py initialises MPI).
    """
    env = os.environ if env is None else env
    launcher = detect_launcher(env)
    if launcher == "torchrun":
        world = from_torchrun(env)
    elif launcher == "slurm":
        world = from_slurm(env)
    elif launcher == "mpi":
        if mpi_comm is None:
            from mpi4py import MPI
            mpi_comm = MPI.COMM_WORLD
        world = from_mpi(mpi_comm)
        check_mpi_world(world, env)
    else:
        world = single()
    return emulate_nodes(world, env)


def torch_env(world: World) -> dict[str, str]:
    """The variables torch.distributed's ``env://`` rendezvous reads, for ``world``."""
    return {
        "RANK": str(world.rank),
        "WORLD_SIZE": str(world.world_size),
        "LOCAL_RANK": str(world.local_rank),
        "LOCAL_WORLD_SIZE": str(world.local_world_size),
        "MASTER_ADDR": world.master_addr,
        "MASTER_PORT": str(world.master_port),
    }


def export_for_torch(world: World) -> None:
    """Write :func:`torch_env` into ``os.environ``: the ONE place this package does so.

    Needed before ``deepspeed.init_distributed``: with any of these variables missing it
    runs its own MPI discovery, which takes MASTER_ADDR from ``hostname -I``.
    """
    os.environ.update(torch_env(world))
