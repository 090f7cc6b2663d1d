"""Gradient averaging overlapped with backward, for DeepSpeed's ZeRO stage 0.

At stage 0 DeepSpeed averages gradients after backward, in one synchronous pass (flatten,
all-reduce, copy back): none of the communication overlaps the backward computation, and
torch DDP ran the same step 1.35x faster at world size 2 (docs/benchmarks.md). This does
what DDP's reducer does (Li et al., "PyTorch Distributed: Experiences on Accelerating Data
Parallel Training", VLDB 2020): gradients in fixed buckets (1 MB first, then 25 MB: DDP's
``bucket_cap_mb`` and first-bucket defaults) in reverse parameter order, the order backward
produces them; each bucket is all-reduced asynchronously once its last gradient has been
accumulated, strictly in bucket order so that every rank issues the same collectives in the
same order; the backward epilogue waits for them all, divides by the world size and copies
the averages back into ``.grad``.

Only the reduction is ours. DeepSpeed keeps the rest (accumulation, optimizer, scheduler,
checkpoints): :func:`install` puts :meth:`OverlappedAllReduce.finish` in the place of
``engine.allreduce_gradients``, which DeepSpeed's backward epilogue calls at each
accumulation boundary, and the hooks launch nothing between boundaries.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from benscale.train.timing import CommTimer

#: DDP's defaults (torch.nn.parallel.DistributedDataParallel: ``bucket_cap_mb=25``,
#: ``dist._DEFAULT_FIRST_BUCKET_BYTES``): a small first bucket starts communication early.
BUCKET_BYTES = 25 * 2**20
FIRST_BUCKET_BYTES = 2**20


@dataclass
class Bucket:
    """Parameters whose gradients travel together, and the flat buffer they travel in."""

    params: list[nn.Parameter]
    offsets: list[int]
    flat: torch.Tensor
    waiting_for: int
    work: Any = None
    launched_at: float = 0.0

    @classmethod
    def of(cls, params: list[nn.Parameter]) -> Bucket:
        """An empty bucket for ``params`` (one dtype and device), waiting for all of them."""
        offsets = [0]
        for p in params:
            offsets.append(offsets[-1] + p.numel())
        flat = torch.empty(offsets[-1], dtype=params[0].dtype, device=params[0].device)
        return cls(params, offsets, flat, len(params))

    def slots(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Each parameter with its slice of ``flat``, shaped like the parameter."""
        return [(p, self.flat[start:end].view(p.shape))
                for p, start, end in zip(self.params, self.offsets, self.offsets[1:],
                                         strict=False)]


def plan_buckets(params: list[nn.Parameter], bucket_bytes: int = BUCKET_BYTES,
                 first_bucket_bytes: int = FIRST_BUCKET_BYTES) -> list[list[nn.Parameter]]:
    """Parameters (in the order given) cut into buckets of at most the cap, one dtype each."""
    buckets: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        cap = first_bucket_bytes if len(buckets) == 1 else bucket_bytes
        nbytes = p.numel() * p.element_size()
        if not buckets or size + nbytes > cap or buckets[-1][0].dtype != p.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += nbytes
    return buckets


class OverlappedAllReduce:
    """Bucketed asynchronous all-reduce of gradients from post-accumulate-grad hooks."""

    def __init__(self, engine: Any, timer: CommTimer, group: Any = None,
                 bucket_bytes: int = BUCKET_BYTES,
                 first_bucket_bytes: int = FIRST_BUCKET_BYTES) -> None:
        """Buckets over ``engine.module``'s trainable parameters, hooks registered."""
        self.engine, self.timer, self.group = engine, timer, group
        self.world_size = dist.get_world_size(group)
        params = [p for p in engine.module.parameters() if p.requires_grad]
        self.buckets: list[Bucket] = []
        self.slot_of: dict[int, tuple[Bucket, int]] = {}
        for members in plan_buckets(list(reversed(params)), bucket_bytes, first_bucket_bytes):
            bucket = Bucket.of(members)
            self.slot_of.update({id(p): (bucket, slot) for slot, p in enumerate(members)})
            self.buckets.append(bucket)
        self.next_to_launch = 0
        # NCCL runs on its own stream: the host sees only its enqueueing, so the duration
        # comes from NCCL's CUDA events (TORCH_NCCL_ENABLE_TIMING, set before init).
        self.device_timing = self.buckets[0].flat.is_cuda if self.buckets else False
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _grad_ready(self, param: nn.Parameter) -> None:
        if not self.engine.is_gradient_accumulation_boundary():
            return
        bucket, slot = self.slot_of[id(param)]
        # Into the bucket as soon as it exists, as DDP's reducer does: the copies are spread
        # over backward instead of piling up when the bucket's last gradient arrives.
        bucket.flat[bucket.offsets[slot]:bucket.offsets[slot + 1]].view(param.shape).copy_(
            param.grad)
        bucket.waiting_for -= 1
        while (self.next_to_launch < len(self.buckets)
               and self.buckets[self.next_to_launch].waiting_for == 0):
            self._launch(self.buckets[self.next_to_launch])
            self.next_to_launch += 1

    def _launch(self, bucket: Bucket) -> None:
        if bucket.waiting_for:  # a parameter unused in this step's graph counts as zero (DDP)
            for p, view in bucket.slots():
                if p.grad is None:
                    view.zero_()
        bucket.launched_at = time.perf_counter()
        bucket.work = dist.all_reduce(bucket.flat, group=self.group, async_op=True)
        if not self.device_timing:
            bucket.work.get_future().then(self._done_callback(bucket.launched_at))

    def _done_callback(self, launched_at: float) -> Any:
        def done(fut: Any) -> Any:
            self.timer.record(launched_at, time.perf_counter())
            return fut.value()

        return done

    def finish(self, *_args: Any, **_kwargs: Any) -> None:
        """Wait for every bucket, average, copy back; DeepSpeed's backward epilogue calls it
        after every micro-step, so between accumulation boundaries it does nothing."""
        if not self.engine.is_gradient_accumulation_boundary():
            return
        while self.next_to_launch < len(self.buckets):  # buckets with an unused parameter
            self._launch(self.buckets[self.next_to_launch])
            self.next_to_launch += 1
        for bucket in self.buckets:
            bucket.work.wait()
            if self.device_timing:
                seconds = bucket.work._get_duration() / 1e3
                self.timer.record(bucket.launched_at, bucket.launched_at + seconds)
            bucket.flat.div_(self.world_size)
            for p, view in bucket.slots():
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)
            bucket.work = None
            bucket.waiting_for = len(bucket.params)
        self.next_to_launch = 0


def wanted(engine: Any, zero_stage: int) -> bool:
    """Stage 0 with more than one data-parallel rank and DeepSpeed's plain fp32 gradients."""
    return zero_stage == 0 and engine.dp_world_size > 1 and not engine.bfloat16_enabled()


def enable_device_timing() -> None:
    """Ask NCCL to time its collectives (read back by :meth:`OverlappedAllReduce.finish`)."""
    os.environ.setdefault("TORCH_NCCL_ENABLE_TIMING", "1")


def install(engine: Any, timer: CommTimer) -> OverlappedAllReduce:
    """Replace ``engine.allreduce_gradients`` by the overlapped reduction (module docstring)."""
    overlap = OverlappedAllReduce(engine, timer, group=engine.data_parallel_group)
    engine.allreduce_gradients = overlap.finish
    return overlap
