"""Where the time of a training step goes: data, compute, communication, optimizer.

Every interval is read from ``time.perf_counter`` after synchronising the device, so GPU
work queued asynchronously is charged to the phase that queued it.

Communication is MEASURED, not inferred. :func:`time_gradient_reduction` wraps the
DeepSpeed methods that reduce gradients: ``engine.allreduce_gradients`` (ZeRO 0: the
backward epilogue; ZeRO 1: the reduce-scatter) and, for ZeRO 2, the ZeRO optimizer's
``reduce_ipg_grads`` that its gradient hooks call during backward (only the outermost of
nested calls is timed). ZeRO 1/2 run with ``overlap_comm: false``, so those calls contain
the whole reduction. At ZeRO 0 with several ranks the reduction is ours
(:mod:`benscale.train.overlap`): asynchronous all-reduces during backward, each recorded
from its launch to its completion, plus the wait in the epilogue. The communication time
is the UNION of all these intervals; what the training thread spent blocked inside them
(:attr:`CommTimer.blocked_s`) is what is taken out of compute and optimizer time, so with
overlap the phases add up to more than the step (docs/training.md).
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
    """Gradient-reduction intervals, and the time the training thread was blocked in them."""

    device: torch.device
    blocked_s: float = 0.0
    intervals: list[tuple[float, float]] = field(default_factory=list, repr=False)
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
                end = time.perf_counter()
                self.blocked_s += end - start
                self.record(start, end)

        return timed

    def record(self, start: float, end: float) -> None:
        """One interval during which gradients were being reduced (may run in background)."""
        self.intervals.append((start, end))

    def take(self) -> float:
        """Seconds covered by the intervals recorded since the last call (their union)."""
        intervals, self.intervals = self.intervals, []
        self.blocked_s = 0.0
        return union_seconds(intervals)


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: overlapping ones count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def time_gradient_reduction(engine: Any, timer: CommTimer) -> CommTimer:
    """Instrument ``engine`` so that its gradient reductions are timed (module docstring)."""
    engine.allreduce_gradients = timer.wrap(engine.allreduce_gradients)
    inner = getattr(engine, "optimizer", None)
    if inner is not None and hasattr(inner, "reduce_ipg_grads"):
        inner.reduce_ipg_grads = timer.wrap(inner.reduce_ipg_grads)
    return timer
