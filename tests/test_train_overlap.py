"""Stage-0 gradient averaging overlapped with backward (benscale.train.overlap), the comm
timer's interval union, and the DeepSpeed config per precision.

The reducer runs here in two real gloo processes on a small convnet, checked against a
plain all-reduce; under DeepSpeed it is covered end to end by test_train_distributed
(world size 2 equal to one process that sees the same global batches).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from benscale.files.batches import BatchSplit
from benscale.train import config as config_mod
from benscale.train.engine import ds_config
from benscale.train.model import build_model
from benscale.train.overlap import (
    BUCKET_BYTES,
    FIRST_BUCKET_BYTES,
    OverlappedAllReduce,
    plan_buckets,
)
from benscale.train.timing import CommTimer, union_seconds
from benscale.train.world import free_port


def test_union_counts_overlapping_intervals_once() -> None:
    assert union_seconds([]) == 0.0
    assert union_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 3.5)]) == pytest.approx(2.5)
    assert union_seconds([(3.0, 4.0), (0.0, 10.0), (2.0, 3.0)]) == pytest.approx(10.0)


def test_buckets_of_resnet50_follow_ddp_caps_in_reverse_order() -> None:
    params = list(reversed(list(build_model(12, 19).parameters())))
    buckets = plan_buckets(params)
    assert [p for b in buckets for p in b] == params  # every parameter once, order kept
    sizes = [sum(p.numel() * p.element_size() for p in b) for b in buckets]
    assert sizes[0] <= FIRST_BUCKET_BYTES
    for bucket, size in zip(buckets[1:], sizes[1:], strict=True):
        assert size <= BUCKET_BYTES or len(bucket) == 1
    assert sum(sizes) == 4 * 23_575_187 and len(buckets) >= 4


def test_deepspeed_config_per_precision() -> None:
    batches = BatchSplit(8, 4, 1)
    fp32 = ds_config(config_mod.load(None, ["precision=fp32"]), batches)
    autocast = ds_config(config_mod.load(None, ["precision=bf16"]), batches)
    native = ds_config(config_mod.load(None, ["precision=bf16-deepspeed"]), batches)
    assert "bf16" not in fp32 and "bf16" not in autocast  # autocast: DeepSpeed stays fp32
    assert native["bf16"] == {"enabled": True}
    assert native["data_types"] == {"buffer_dtype": "bf16"}


class _Boundary:
    """The two things the reducer asks of a DeepSpeed engine."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.boundary = module, True

    def is_gradient_accumulation_boundary(self) -> bool:
        return self.boundary


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 300), nn.ReLU(), nn.Linear(300, 5),
                         nn.Linear(5, 5))  # the last one gets no gradient (see below)


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    net = _net()
    timer = CommTimer(torch.device("cpu"))
    engine = _Boundary(net)
    # Small caps: several buckets, so launches really interleave with backward.
    reducer = OverlappedAllReduce(engine, timer, bucket_bytes=40_000, first_bucket_bytes=4_000)
    assert len(reducer.buckets) >= 4
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(rank))

    def backward() -> None:
        net[:-1](x).square().mean().backward()  # skips `unused`: its grad stays None

    engine.boundary = False  # micro-step inside accumulation: nothing is sent
    backward()
    reducer.finish()
    assert not timer.intervals and all(b.work is None for b in reducer.buckets)
    local = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    engine.boundary = True
    backward()
    reducer.finish()
    for name, p in net.named_parameters():
        if name.startswith("8."):
            assert torch.equal(p.grad, torch.zeros_like(p)), name  # unused: averaged zeros
            continue
        total = local[name] * 2  # this rank's gradient, accumulated over two micro-steps
        dist.all_reduce(total)  # what averaging must give: the sum over ranks / 2
        torch.testing.assert_close(p.grad, total / 2, rtol=1e-6, atol=1e-7)
    assert len(timer.intervals) == len(reducer.buckets)
    assert all(end >= start for start, end in timer.intervals)
    if rank == 0:
        Path(out).write_text("ok")
    dist.destroy_process_group()


def test_overlapped_reduction_averages_over_two_real_processes(tmp_path: Path) -> None:
    out = tmp_path / "ok"
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    assert out.read_text() == "ok"
