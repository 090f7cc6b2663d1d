"""One training epoch and one evaluation pass through the data-parallel engine.

Kept apart from the run's bookkeeping so that a benchmark can drive the very same step on
in-memory tensors: :func:`build_step_context` then :func:`train_micro_batches` with batches
``(x, y, None, None)``: same engine, same timers, no files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from benscale.bigearthnet import BAND_SETS
from benscale.files.batches import BatchSplit
from benscale.train.config import TrainConfig
from benscale.train.data import Normalisation, orient_batch
from benscale.train.engine import Engine, build_engine
from benscale.train.model import batchnorm_buffers, build_model, loss_fn
from benscale.train.timing import CommMeter, PhaseTimes, synchronize

__all__ = ["Normalisation", "PhaseTimes", "StepContext", "build_step_context", "predict",
           "reduce_over_ranks", "train_micro_batches"]


@dataclass
class StepContext:
    """What every step needs: the engine, where tensors go, and the communication meter.

    ``autocast``: the dtype of ``torch.autocast`` around the forward pass (precision bf16),
    or None (fp32, and DeepSpeed's own bf16 mode, whose weights are bf16 already).
    ``normalisation`` turns the loader's uint16 batches into normalised float32 on the
    device (None: batches arrive as float already, e.g. a benchmark's random tensors).
    """

    engine: Any
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    comm: CommMeter
    loss_fn: nn.Module
    autocast: torch.dtype | None = None
    normalisation: Normalisation | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``x``, in fp32."""
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16,
                            enabled=self.autocast is not None):
            return self.engine(x).float()

    def inputs(self, x: torch.Tensor, orientations: torch.Tensor | None = None) -> torch.Tensor:
        """Move a batch to the device, normalise a stored (uint16) batch there, apply its
        flips/rotations (data.orient_batch), and give it the training dtype and memory
        format."""
        if x.dtype == torch.uint16:
            if self.normalisation is None:
                raise ValueError("a uint16 batch needs the step context's normalisation")
            x = self.normalisation(x)
        else:
            x = x.to(self.device, non_blocking=True)
        if orientations is not None:
            x = orient_batch(x, orientations)
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def build_step_context(config: TrainConfig, batches: BatchSplit, steps_per_epoch: int,
                       device: torch.device, normalisation: Normalisation | None = None
                       ) -> tuple[StepContext, Engine]:
    """Model + engine + communication meter, ready for :func:`train_micro_batches`.

    Needs an initialised process group (:func:`benscale.train.engine.init_distributed`).
    Returns the context and the built :class:`~benscale.train.engine.Engine` (what run.json
    records of it).
    """
    model = build_model(len(BAND_SETS[config.bands]), config.num_classes)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    built = build_engine(model, config, batches, steps_per_epoch, device)
    dtype = torch.bfloat16 if config.precision == "bf16-deepspeed" else torch.float32
    autocast = torch.bfloat16 if config.precision == "bf16" else None
    return StepContext(built.engine, device, dtype, config.channels_last, built.comm,
                       loss_fn(), autocast, normalisation), built


def train_micro_batches(ctx: StepContext, batches: Iterable[Any], times: PhaseTimes,
                        progress: Any = None) -> tuple[float, int]:
    """Forward, backward and (at accumulation boundaries) step over ``batches``.

    Phases per micro-step, each read after synchronising the device: data (waiting for the
    loader + host-to-device copy), compute (forward + backward minus the communication the
    training thread waited for inside backward), comm (all communication the meter saw,
    hidden behind backward or not; NaN when not measured), optimizer (``engine.step``
    minus the communication waited for inside it).

    Returns:
        (sum of per-sample training loss, number of samples) on this rank.
    """
    ctx.engine.train()
    loss_sum, samples = 0.0, 0
    if not ctx.comm.measures:
        times.comm_time_s = float("nan")
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            x, y, _index, orientations = next(iterator)
        except StopIteration:
            break
        x, y = ctx.inputs(x, orientations), y.to(ctx.device, non_blocking=True)
        synchronize(ctx.device)
        t1 = time.perf_counter()
        ctx.comm.begin()
        loss = ctx.loss_fn(ctx.forward(x), y)
        ctx.engine.backward(loss)
        synchronize(ctx.device)
        ctx.comm.after_backward()
        t2 = time.perf_counter()
        ctx.engine.step()
        synchronize(ctx.device)
        comm = ctx.comm.after_step()
        t3 = time.perf_counter()
        times.data_time_s += t1 - t0
        times.compute_time_s += (t2 - t1) - comm.exposed_in_backward_s
        times.optimizer_time_s += (t3 - t2) - comm.exposed_in_step_s
        times.comm_time_s += comm.comm_s
        loss_sum += float(loss.item()) * len(y)
        samples += len(y)
        if progress is not None:
            progress.update(1)
    times.epoch_time_s += time.perf_counter() - start
    return loss_sum, samples


@torch.no_grad()
def predict(ctx: StepContext, batches: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets of the FULL split, gathered from every rank in index order.

    Each rank holds equally many items (padding carries a negative index); all ranks
    all-gather, drop the padding and sort by patch index, so each patch counts once.
    """
    ctx.engine.eval()
    logits, targets, indices = [], [], []
    for x, y, idx, _orientations in batches:  # no augmentation at evaluation
        logits.append(ctx.forward(ctx.inputs(x)).cpu())
        targets.append(y.float().cpu())
        indices.append(torch.as_tensor(idx, dtype=torch.int64))
    local = [torch.cat(t) for t in (logits, targets)] + [torch.cat(indices).double()]
    gathered = [_all_gather(t, ctx.device) for t in local]
    idx = gathered[2].long()
    keep = idx >= 0
    order = torch.argsort(idx[keep])
    return gathered[0][keep][order].numpy(), gathered[1][keep][order].numpy()


def _all_gather(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    t = t.to(device)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts).cpu()


def sync_batchnorm_stats(model: nn.Module) -> None:
    """Average BatchNorm running statistics over ranks (they drift apart per rank's data).

    Done at every epoch end, so that evaluation, checkpoints (written from rank 0) and a
    resumed run all see the same statistics on every rank.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    for buf in batchnorm_buffers(model):
        wide = buf.detach().float()
        dist.all_reduce(wide)
        buf.copy_(wide / dist.get_world_size())


def reduce_over_ranks(values: list[float], device: torch.device) -> tuple[list[float], list[float]]:
    """(max, mean) over ranks of each value: timings are reported both ways."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values, values
    high, total = t.clone(), t.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return high.cpu().tolist(), (total / dist.get_world_size()).cpu().tolist()


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.cpu().tolist()
