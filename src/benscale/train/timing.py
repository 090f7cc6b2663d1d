"""Where the time of a training step goes: data, compute, communication, optimizer.

Every interval is read from ``time.perf_counter`` after synchronising the device, so GPU
work queued asynchronously is charged to the phase that queued it.

Communication is measured through the engines' public mechanisms only, never by replacing
a library's methods (docs/training.md, "How an epoch's time is split"):

* engine ``ddp``: a DDP communication hook that does exactly what DDP's default hook does
  (``default_hooks.allreduce_hook``: divide, all-reduce) and records each bucket's
  reduction as an interval: from the hook call to the completion of its future (gloo: the
  host clock in the future's callback; NCCL: CUDA events on the streams, since the host
  only sees the enqueueing). A post-accumulate-grad hook marks when backward produced the
  last gradient; the part of the reductions after it is what the training thread waited
  for (*exposed*), the rest ran hidden behind backward.
* engine ``deepspeed``: DeepSpeed's own communication logger (``comms_logger`` in the
  DeepSpeed config), which times every collective it issues and makes it blocking, so all
  of it is time the training thread waited for, attributed to backward or to the
  optimizer step by when it was logged.

:class:`CommMeter` is the common interface; ``comm_timing: false`` gives :class:`NoComm`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
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


@dataclass(frozen=True)
class StepComm:
    """One micro-step's communication: all of it, and what the training thread waited for
    in backward and in the optimizer step (exposed)."""

    comm_s: float
    exposed_in_backward_s: float
    exposed_in_step_s: float


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: overlapping ones count once."""
    return sum(end - start for start, end in _merged(intervals))


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def seconds_after(intervals: list[tuple[float, float]], moment: float) -> float:
    """Seconds of the union of ``intervals`` that lie after ``moment``."""
    return sum(max(0.0, end - max(start, moment)) for start, end in _merged(intervals))


class CommMeter:
    """How a step's communication is measured; one per run, driven by the step loop.

    ``begin`` before the forward pass, ``after_backward`` and ``after_step`` once the
    device is synchronised; ``after_step`` returns the micro-step's :class:`StepComm`.
    """

    #: What run.json records as ``timing.method``.
    method = "off"
    #: Whether comm_time_s is measured at all (False: it is NaN).
    measures = False

    def begin(self) -> None:
        """A micro-step starts."""

    def after_backward(self) -> None:
        """Backward has returned and the device is synchronised."""

    def after_step(self) -> StepComm:
        """The optimizer step has returned and the device is synchronised."""
        return StepComm(0.0, 0.0, 0.0)


class NoComm(CommMeter):
    """``comm_timing: false``, or a single rank: nothing measured, nothing taken out."""

    def __init__(self, reason: str) -> None:
        """``reason`` goes to run.json as the method."""
        self.method = reason


class _HostClock:
    """Moments on the host clock (gloo: a collective's future completes when it is done)."""

    def __init__(self) -> None:
        self.base = 0.0

    def reset(self) -> None:
        self.base = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter()

    def seconds(self, moment: Any) -> float:
        return float(moment) - self.base


class _CudaClock:
    """Moments on the device (NCCL runs on its own stream: the host sees only enqueueing).

    A moment is a CUDA event recorded on the current stream; after the step's
    synchronisation it is read relative to the event recorded at ``reset``.
    """

    def __init__(self) -> None:
        self.base: Any = None

    def reset(self) -> None:
        self.base = self.now()

    def now(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, moment: Any) -> float:
        return self.base.elapsed_time(moment) / 1e3


class DdpHookMeter(CommMeter):
    """Bucket reductions of a DDP model, timed from its communication hook."""

    measures = True

    def __init__(self, ddp: Any, device: torch.device) -> None:
        """Register the hook on ``ddp`` (a DistributedDataParallel) and the gradient marks."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        self._clock = _CudaClock() if device.type == "cuda" else _HostClock()
        self.method = ("ddp comm hook (default allreduce), "
                       + ("CUDA events" if device.type == "cuda" else "host clock"))
        self._allreduce = default_hooks.allreduce_hook
        self._intervals: list[tuple[Any, Any]] = []
        self._pending: list[list[Any]] = []
        self._last_grad: Any = None
        ddp.register_comm_hook(None, self._hook)
        for param in ddp.module.parameters():
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(self._grad_ready)

    # No annotations: DDP checks a hook's annotations against its own types, which the
    # postponed (string) annotations of this module would fail.
    def _hook(self, state, bucket):
        interval = [self._clock.now(), None]
        self._pending.append(interval)

        def done(fut):
            interval[1] = self._clock.now()
            return fut.value()

        return self._allreduce(state, bucket).then(done)

    def _grad_ready(self, _param: torch.Tensor) -> None:
        self._last_grad = self._clock.now()

    def begin(self) -> None:
        """Start the step's clock; forget the previous step's moments."""
        self._clock.reset()
        self._pending, self._last_grad = [], None

    def after_backward(self) -> None:
        """Mark the end of backward (DDP's reducer has waited for every bucket)."""
        self._end_backward = self._clock.now()

    def after_step(self) -> StepComm:
        """Union of the bucket reductions; the part after the last gradient was exposed."""
        seconds = self._clock.seconds
        intervals = [(seconds(a), seconds(b)) for a, b in self._pending if b is not None]
        if not intervals:  # no synchronisation this micro-step (accumulation)
            return StepComm(0.0, 0.0, 0.0)
        last_grad = seconds(self._last_grad) if self._last_grad is not None else 0.0
        return StepComm(union_seconds(intervals), seconds_after(intervals, last_grad), 0.0)


class DeepSpeedLogMeter(CommMeter):
    """Collectives of a DeepSpeed engine, timed by DeepSpeed's ``comms_logger``.

    DeepSpeed 0.19 logs, for every collective, the running total of the timer of its op
    name (``timed_op`` reads ``timers(name).elapsed(reset=False)``, which sums every
    interval since the start), not the op's own latency; so the time an op name has taken
    so far is the last value logged for it, and the logger's total is the sum of those
    over op names. tests/test_train_engines.py checks this reading against the wall time
    of the collectives' phases, so a DeepSpeed release that changes the logger's values
    fails a test instead of skewing comm_time_s.
    """

    measures = True
    method = "deepspeed comms_logger (every collective blocking)"

    def __init__(self) -> None:
        """Read the logger's state once, as the baseline."""
        from deepspeed.comm import comm as ds_comm

        self._logger = ds_comm.comms_logger
        self._last = self.total_s()

    def total_s(self) -> float:
        """Seconds DeepSpeed has spent in its logged collectives since the start."""
        total_ms = 0.0
        for sizes in self._logger.get_raw_data().values():
            # All message sizes of one op name share its timer: the latest value of any of
            # them is the op name's running total, and it is the largest.
            total_ms += max(record[1][-1] for record in sizes.values())
        return total_ms / 1e3

    def begin(self) -> None:
        """Take the logger's total at the start of the step."""
        self._last = self.total_s()

    def after_backward(self) -> None:
        """Collectives logged so far in the step belong to backward."""
        now = self.total_s()
        self._in_backward, self._last = now - self._last, now

    def after_step(self) -> StepComm:
        """The rest belong to the optimizer step (ZeRO's parameter all-gather...)."""
        now = self.total_s()
        in_step, self._last = now - self._last, now
        return StepComm(self._in_backward + in_step, self._in_backward, in_step)
