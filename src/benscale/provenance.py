"""Provenance: what a reviewer needs to know to re-run and compare a result.

Versions of what an HPC result depends on (CUDA runtime, cuDNN, NCCL, the GPU driver, the
MPI library), each host with its CPU and GPUs, and the full package set of the environment
that ran (importlib.metadata, the equivalent of ``pip freeze``), which a report's bundle
carries instead of the project's lock file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions decide the numbers a run produces.
TRACKED_PACKAGES: tuple[str, ...] = (
    "benscale", "torch", "torchvision", "deepspeed", "numpy", "mpi4py", "mpich", "xarray",
    "netCDF4", "rasterio", "pandas", "snakemake", "snakemake-executor-plugin-slurm",
)

#: Slurm variables worth keeping: job identity and allocation shape.
SLURM_KEYS: tuple[str, ...] = (
    "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES",
    "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_PARTITION", "SLURM_JOB_ACCOUNT",
    "SLURM_CLUSTER_NAME", "SLURM_STEP_ID", "SLURM_RESTART_COUNT",
)


@dataclass(frozen=True)
class GitState:
    """The commit of the benscale checkout, and whether it had local edits (None: unknown,
    e.g. an installed package outside a git checkout)."""

    commit: str | None
    dirty: bool | None


@dataclass(frozen=True)
class MachineInfo:
    """One host: name, OS, Python, CPU, cores, memory, visible GPUs."""

    hostname: str
    os: str
    python: str
    cpu_model: str
    cpu_count: int | None
    memory_gib: float | None
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class AcceleratorStack:
    """The GPU software a result depends on (all None on a machine without CUDA).

    Attributes:
        torch_cuda: the CUDA version torch was built with (``torch.version.cuda``).
        cuda_runtime: the CUDA runtime torch loaded (``cudaRuntimeGetVersion``).
        cudnn: cuDNN's version as torch reports it.
        nccl: NCCL's version (``torch.cuda.nccl.version()``).
        driver: the NVIDIA driver (``nvidia-smi``), where present.
    """

    torch_cuda: str | None = None
    cuda_runtime: str | None = None
    cudnn: str | None = None
    nccl: str | None = None
    driver: str | None = None


@dataclass(frozen=True)
class MpiLibrary:
    """The MPI library mpi4py uses, and the launcher on PATH.

    Attributes:
        library_version: ``MPI.Get_library_version()`` (vendor and version), or None.
        mpi4py_config: how mpi4py was built (``mpi4py.get_config()``).
        mpiexec: the ``mpiexec`` found on PATH, or None.
    """

    library_version: str | None
    mpi4py_config: dict[str, str]
    mpiexec: str | None


@dataclass(frozen=True)
class HostInfo:
    """One host of a run, as its ranks saw it: its CPU and the GPUs visible to it."""

    hostname: str
    cpu_model: str
    cpu_count: int | None
    gpus: tuple[str, ...]
    gpu_count: int
    driver: str | None


@dataclass(frozen=True)
class Provenance:
    """What a reviewer needs to know to re-run and compare a result (run.json
    ``provenance``)."""

    date_utc: str
    git: GitState
    packages: dict[str, str | None]
    machine: MachineInfo
    slurm: dict[str, str]
    config_hash: str | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    slurm_job_id: str | None = None
    accelerators: AcceleratorStack = field(default_factory=AcceleratorStack)
    mpi: MpiLibrary | None = None
    host_details: tuple[HostInfo, ...] = ()
    python: str = ""
    environment: dict[str, str] = field(default_factory=dict)


def git_commit(start: str | Path | None = None) -> GitState:
    """The commit of the benscale checkout (or ``start``), and whether it had local edits."""
    cwd = Path(start) if start else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=cwd, capture_output=True, text=True,
                                    timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return GitState(None, None)
    return GitState(commit, dirty)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None where not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_models() -> tuple[str, ...]:
    """Names of the visible CUDA devices (empty without CUDA; torch imported lazily)."""
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def config_hash(config: Any) -> str:
    """SHA-256 of the canonical JSON of a resolved configuration."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def slurm_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The Slurm job variables present in ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    return {k: env[k] for k in SLURM_KEYS if k in env}


def machine() -> MachineInfo:
    """A description of this host: name, OS, CPU, cores, memory, GPUs."""
    try:
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text()
                          .splitlines() if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = None
    return MachineInfo(hostname=socket.gethostname(), os=platform.platform(),
                       python=platform.python_version(), cpu_model=cpu_model(),
                       cpu_count=os.cpu_count(),
                       memory_gib=round(mem_kb / 2**20, 1) if mem_kb else None,
                       gpus=gpu_models())


def environment_packages() -> dict[str, str]:
    """Every distribution installed in this environment, name -> version (sorted)."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name, dist.version)
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (None where there is none)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def accelerator_stack() -> AcceleratorStack:
    """CUDA runtime, cuDNN, NCCL and driver versions, where CUDA is present."""
    try:
        import torch
    except ImportError:
        return AcceleratorStack()
    if not torch.cuda.is_available():
        return AcceleratorStack(torch_cuda=torch.version.cuda)
    runtime = torch.cuda.cudart().cudaRuntimeGetVersion() if hasattr(
        torch.cuda, "cudart") else None
    nccl = torch.cuda.nccl.version()
    return AcceleratorStack(
        torch_cuda=torch.version.cuda,
        cuda_runtime=f"{runtime // 1000}.{runtime % 1000 // 10}" if isinstance(runtime, int)
        else None,
        cudnn=str(torch.backends.cudnn.version()),
        nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
        driver=nvidia_driver())


def mpi_library() -> MpiLibrary | None:
    """The MPI library behind mpi4py, asked without initialising MPI when it is not yet
    (MPI allows ``MPI_Get_library_version`` before ``MPI_Init``); None without mpi4py."""
    try:
        import mpi4py
    except ImportError:
        return None
    config = {k: str(v) for k, v in mpi4py.get_config().items()}
    version = None
    try:
        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize = False
            mpi4py.rc.finalize = False
        from mpi4py import MPI

        version = MPI.Get_library_version().strip()
    except (ImportError, RuntimeError, OSError):
        version = None
    return MpiLibrary(version, config, shutil.which("mpiexec"))


def host_info() -> HostInfo:
    """This host as a rank sees it (gathered from every rank into run.json)."""
    gpus = gpu_models()
    return HostInfo(hostname=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                    cpu_model=cpu_model(), cpu_count=os.cpu_count(), gpus=gpus,
                    gpu_count=len(gpus), driver=nvidia_driver() if gpus else None)


def collect(config: Any | None = None, seeds: dict[str, int] | None = None,
            hosts: tuple[str, ...] = (),
            host_details: tuple[HostInfo, ...] = ()) -> Provenance:
    """Everything above in one record, stamped with the current UTC time."""
    slurm = slurm_environment()
    return Provenance(date_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                      git=git_commit(), packages=package_versions(), machine=machine(),
                      slurm=slurm,
                      config_hash=config_hash(config) if config is not None else None,
                      seeds=dict(seeds or {}), hosts=tuple(hosts),
                      slurm_job_id=slurm.get("SLURM_JOB_ID"),
                      accelerators=accelerator_stack(), mpi=mpi_library(),
                      host_details=host_details, python=sys.version.split()[0],
                      environment=environment_packages())
