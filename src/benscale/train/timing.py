"""Where the time of a training step goes: data, compute, communication, optimizer.

Every interval is read from ``time.perf_counter`` after synchronising the device, so GPU
work queued asynchronously is charged to the phase that queued it.

Communication is MEASURED, not inferred: :func:`time_gradient_reduction` wraps the
DeepSpeed methods that reduce gradients, ``engine.allreduce_gradients`` (ZeRO 0: the
bucketed all-reduce at the accumulation boundary; ZeRO 1: the reduce-scatter) and, for
ZeRO 2, the ZeRO optimizer's ``reduce_ipg_grads`` that its gradient hooks call during
backward. Only the outermost call is timed (they nest). We configure ZeRO with
``overlap_comm: false``, so the measured time is the whole gradient reduction, not only
the part left exposed after overlap (docs/training.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PhaseTimes:
    """Seconds spent per phase, accumulated over the steps of an epoch (one rank)."""

    data_time_s: float = 0.0
    compute_time_s: float = 0.0
    comm_time_s: float = 0.0
    optimizer_time_s: float = 0.0
    epoch_time_s: float = 0.0

    @classmethod
    def names(cls) -> list[str]:
        """Column names, in order."""
        return [f.name for f in fields(cls)]

    def values(self) -> list[float]:
        """Values in the order of :meth:`names`."""
        return [getattr(self, n) for n in self.names()]


@dataclass
class CommTimer:
    """Accumulates the wall time of (outermost) gradient-reduction calls."""

    device: torch.device
    total_s: float = 0.0
    _depth: int = field(default=0, repr=False)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` timed, with the device synchronised before and after the outermost call."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            synchronize(self.device)
            start = time.perf_counter()
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                synchronize(self.device)
                self.total_s += time.perf_counter() - start

        return timed

    def take(self) -> float:
        """Seconds accumulated since the last call."""
        value, self.total_s = self.total_s, 0.0
        return value


def time_gradient_reduction(engine: Any, device: torch.device) -> CommTimer:
    """Instrument ``engine`` so that its gradient reductions are timed (module docstring)."""
    timer = CommTimer(device)
    engine.allreduce_gradients = timer.wrap(engine.allreduce_gradients)
    inner = getattr(engine, "optimizer", None)
    if inner is not None and hasattr(inner, "reduce_ipg_grads"):
        inner.reduce_ipg_grads = timer.wrap(inner.reduce_ipg_grads)
    return timer
