"""The threads and library settings a run's numbers depend on, set from its config.

The same config must give the same metrics whether the DAG, ``benscale reproduce`` or a
user in a plain shell starts it. The environment differs between those (Snakemake exports
``MKL_NUM_THREADS`` and friends = the rule's threads to its jobs, a shell exports nothing),
and a different thread count changes the order of floating-point reductions in BLAS and
oneDNN, so a run takes none of these from the environment: it sets torch's intra-op and
inter-op threads (torch's OpenMP, MKL and oneDNN follow them), the thread pools of every
BLAS/OpenMP library loaded in the process (threadpoolctl: NumPy's OpenBLAS, ...), the
variables a child process would read, deterministic algorithms, the fp32 matmul precision
and cuDNN autotuning, and records what it set and what the libraries report in run.json.

This module and :func:`benscale.train.world.export_for_torch` are the only places that
write ``os.environ``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from threadpoolctl import threadpool_info, threadpool_limits

from benscale.files.run import RuntimeRecord

#: Variables thread-pool libraries read at start-up; set for child processes (loader
#: workers) so that they follow the run's setting too.
THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                     "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
                                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
#: cuBLAS's workspace setting for deterministic results (CUDA's documentation).
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class RuntimeSettings:
    """What a run asks for (the training config's ``threads`` and library keys)."""

    threads: int | None
    interop_threads: int
    deterministic: bool
    matmul_precision: str
    cudnn_benchmark: bool


def default_threads(ranks_on_host: int) -> int:
    """The cores this process may run on, shared equally by the ranks on its host."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(ranks_on_host, 1))


def apply(settings: RuntimeSettings, ranks_on_host: int, cuda: bool) -> RuntimeRecord:
    """Set every thread pool and library setting of this process; return the record."""
    threads = settings.threads or default_threads(ranks_on_host)
    torch.set_num_threads(threads)
    _set_interop_threads(settings.interop_threads)
    threadpool_limits(limits=threads)
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    if settings.deterministic and cuda:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(settings.deterministic)
    torch.set_float32_matmul_precision(settings.matmul_precision)
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    torch.backends.cudnn.deterministic = settings.deterministic
    cudnn = None
    if cuda:
        cudnn = {"version": torch.backends.cudnn.version(),
                 "benchmark": torch.backends.cudnn.benchmark,
                 "deterministic": torch.backends.cudnn.deterministic,
                 "allow_tf32": torch.backends.cudnn.allow_tf32}
    return RuntimeRecord(
        threads=threads, interop_threads=torch.get_num_interop_threads(),
        torch_threads=torch.get_num_threads(),
        threadpools=[{k: v for k, v in pool.items() if k != "filepath"}
                     | {"filepath": os.path.basename(pool.get("filepath", ""))}
                     for pool in threadpool_info()],
        environment={k: os.environ[k] for k in THREAD_VARIABLES},
        deterministic=torch.are_deterministic_algorithms_enabled(),
        matmul_precision=torch.get_float32_matmul_precision(), cudnn=cudnn,
        parallel_info=torch.__config__.parallel_info())


def _set_interop_threads(n: int) -> None:
    """Inter-op threads can be set once, before any inter-op work; a second
    process-group run in the same process (tests, benchmarks) keeps the first value."""
    if torch.get_num_interop_threads() == n:
        return
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)
