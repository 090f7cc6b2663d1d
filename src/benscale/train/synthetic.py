"""Benchmark entry: N training steps of the real engine on in-memory tensors, no files.

Start it under any launcher (or none) like ``benscale train``; bench/ scripts call
:func:`measure` and compare the result with a bare PyTorch loop on the same settings::

    from benscale.train.synthetic import measure
    result = measure(["precision=bf16", "global_batch=32"], steps=20, warmup_steps=3)
    result["samples_per_s"]   # global samples per second over the timed steps
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch.distributed as dist

from benscale import launch
from benscale.bigearthnet import BAND_SETS
from benscale.train import config as config_mod
from benscale.train import engine
from benscale.train.loop import build_context
from benscale.train.steps import reduce_over_ranks, synthetic_batch, synthetic_steps
from benscale.train.timing import PhaseTimes


def measure(overrides: list[str], steps: int, warmup_steps: int = 2) -> dict[str, Any]:
    """Time ``steps`` micro-steps after ``warmup_steps`` discarded ones.

    Args:
        overrides: ``KEY=VALUE`` config overrides (as ``--set``); checkpoints play no part.
        steps: timed micro-steps (use a multiple of grad_accumulation).
        warmup_steps: untimed micro-steps first (allocator, autotuning, first collectives).

    Returns:
        Phase times (max over ranks, and ``*_mean``), ``samples_per_s`` over the timed
        steps, the layout and the DeepSpeed config; identical on every rank.
    """
    cfg = config_mod.load(None, overrides)
    world = launch.discover()
    batches = config_mod.resolve_batches(cfg, world.world_size)
    if not dist.is_initialized():
        engine.init_distributed(world, cfg["timeout_s"])
    _, device = engine.backend_and_device(world)
    ctx, ds_cfg = build_context(cfg, batches, max(steps // batches.grad_accumulation, 1), device)
    channels = len(BAND_SETS[cfg["bands"]])
    if warmup_steps:
        synthetic_steps(ctx, synthetic_batch(batches.per_rank, channels, cfg["num_classes"]),
                        warmup_steps)
    times = synthetic_steps(
        ctx, synthetic_batch(batches.per_rank, channels, cfg["num_classes"], seed=1), steps)
    high, mean = reduce_over_ranks(times.values(), device)
    names = PhaseTimes.names()
    samples = steps * batches.per_rank * world.world_size
    return {**dict(zip(names, high, strict=True)),
            **{f"{n}_mean": v for n, v in zip(names, mean, strict=True)},
            "samples_per_s": samples / high[names.index("epoch_time_s")],
            "steps": steps, "world": world.as_dict(), "batches": asdict(batches),
            "deepspeed_config": ds_cfg}
