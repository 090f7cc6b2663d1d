"""The engines' communication meters on two real gloo processes, and the configs the
engines are built from (DeepSpeed's, DDP's), without a whole training run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from benscale.errors import ConfigError
from benscale.files.batches import BatchSplit
from benscale.train import config as config_mod
from benscale.train.engine import ZERO_OVERLAP, ddp_options, ds_config, init_distributed
from benscale.train.timing import DdpHookMeter, DeepSpeedLogMeter, seconds_after, union_seconds
from benscale.train.world import World, free_port

STEPS = 6


def test_union_and_exposed_part_of_intervals() -> None:
    assert union_seconds([]) == 0.0
    assert union_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 3.5)]) == pytest.approx(2.5)
    assert union_seconds([(3.0, 4.0), (0.0, 10.0), (2.0, 3.0)]) == pytest.approx(10.0)
    assert seconds_after([(0.0, 1.0), (0.5, 2.0), (3.0, 3.5)], 1.5) == pytest.approx(1.0)
    assert seconds_after([(0.0, 1.0)], 2.0) == 0.0


def test_deepspeed_config_per_stage_and_user_block() -> None:
    batches = BatchSplit(8, 4, 1)
    plain = ds_config(config_mod.load(None, ["precision=fp32"]), batches)
    assert plain["zero_optimization"] == {"stage": 0}  # DeepSpeed's own stage-0 reduction
    assert "zero_allow_untested_optimizer" not in plain and plain["comms_logger"]["prof_all"]
    z2 = ds_config(config_mod.load(None, ["zero_stage=2"]), batches)
    assert z2["zero_optimization"] == {"stage": 2, **ZERO_OVERLAP}
    assert z2["zero_allow_untested_optimizer"]  # SGD is not on DeepSpeed's ZeRO list
    native = ds_config(config_mod.load(None, ["precision=bf16-deepspeed"]), batches)
    assert native["bf16"] == {"enabled": True}
    assert native["data_types"] == {"buffer_dtype": "bf16"}
    merged = ds_config(config_mod.load(None, [
        "zero_stage=2", 'deepspeed={"zero_optimization": {"reduce_bucket_size": 1000}, '
        '"comms_logger": {"enabled": false}, "wall_clock_breakdown": true}']), batches)
    assert merged["zero_optimization"]["reduce_bucket_size"] == 1000
    assert merged["zero_optimization"]["overlap_comm"] is True  # the rest kept
    assert merged["comms_logger"]["enabled"] is False and merged["wall_clock_breakdown"]
    untimed = ds_config(config_mod.load(None, ["comm_timing=false"]), batches)
    assert "comms_logger" not in untimed


def test_engine_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"zero_stage=2 with engine ddp"):
        config_mod.load(None, ["engine=ddp", "zero_stage=2"])
    with pytest.raises(ConfigError, match=r"bf16-deepspeed is DeepSpeed's bf16 mode"):
        config_mod.load(None, ["engine=ddp", "precision=bf16-deepspeed"])
    with pytest.raises(ConfigError, match=r"deepspeed\.train_batch_size: benscale sets this"):
        config_mod.load(None, ['deepspeed={"train_batch_size": 64}'])
    with pytest.raises(ConfigError, match="bucket_cap"):
        config_mod.load(None, ["ddp.bucket_cap=10"])
    options = ddp_options(config_mod.load(None, ["engine=ddp", "ddp.bucket_cap_mb=5"]))
    assert options["bucket_cap_mb"] == 5 and options["gradient_as_bucket_view"] is False


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(8)])


def _deepspeed_worker(rank: int, port: int, out: str) -> None:
    import deepspeed

    init_distributed(World(rank, 2, rank, 2, 1, 0, "127.0.0.1", port, "test"), 120)
    model = _net()
    cfg = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 8,
           "zero_optimization": {"stage": 0}, "steps_per_print": 10**9,
           "comms_logger": {"enabled": True, "prof_all": True}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(
        model.parameters(), lr=0.01), config=cfg, dist_init_required=False)
    meter = DeepSpeedLogMeter()
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(rank))
    logged, walls = [], []
    for _ in range(STEPS):
        meter.begin()
        t0 = time.perf_counter()
        engine.backward(engine(x).square().mean())
        meter.after_backward()
        engine.step()
        t1 = time.perf_counter()
        comm = meter.after_step()
        logged.append(comm.comm_s)
        walls.append(t1 - t0)
    # Each step's logged communication lies inside the step and every step has some;
    # summing the logger's values (running totals) instead would outgrow the steps.
    assert all(0 < c < w for c, w in zip(logged, walls, strict=True)), (logged, walls)
    if rank == 0:
        Path(out).write_text("ok")
    dist.destroy_process_group()


def test_deepspeed_comms_logger_read_as_running_totals(tmp_path: Path) -> None:
    out = tmp_path / "ok"
    mp.spawn(_deepspeed_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    assert out.read_text() == "ok"


def _ddp_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    ddp = nn.parallel.DistributedDataParallel(_net(), bucket_cap_mb=0.25)
    meter = DdpHookMeter(ddp, torch.device("cpu"))
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(rank))
    reference = _net()
    for step in range(3):
        meter.begin()
        ddp.zero_grad()
        ddp(x).square().mean().backward()
        meter.after_backward()
        comm = meter.after_step()
        assert 0 < comm.exposed_in_backward_s <= comm.comm_s and comm.exposed_in_step_s == 0
        if step:  # DDP rebuilds its buckets after the first iteration
            assert len(meter._pending) == 8  # one per 256 KB layer, each timed by the hook
    # the hook changes nothing: gradients are the average over both ranks
    reference.zero_grad()
    reference(x).square().mean().backward()
    for p, q in zip(ddp.module.parameters(), reference.parameters(), strict=True):
        mine = q.grad.clone()
        dist.all_reduce(mine)
        torch.testing.assert_close(p.grad, mine / 2, rtol=1e-6, atol=1e-7)
    if rank == 0:
        Path(out).write_text("ok")
    dist.destroy_process_group()


def test_ddp_hook_meter_times_buckets_and_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ok"
    mp.spawn(_ddp_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    assert out.read_text() == "ok"


def _channels_last_worker(rank: int, port: int, out: str) -> None:
    import deepspeed

    init_distributed(World(0, 1, 0, 1, 1, 0, "127.0.0.1", port, "test"), 120)
    model = nn.Sequential(nn.Conv2d(3, 8, 3)).to(memory_format=torch.channels_last)
    try:
        deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                             config={"train_batch_size": 1, "steps_per_print": 10**9},
                             dist_init_required=False)
    except RuntimeError as exc:
        Path(out).write_text(str(exc))


def test_deepspeed_cannot_take_a_channels_last_model(tmp_path: Path) -> None:
    """Why the config refuses channels_last with engine deepspeed: DeepSpeed's engine
    views each parameter as bytes to broadcast it. If a DeepSpeed release lifts this, the
    test fails and the refusal can go."""
    out = tmp_path / "error"
    mp.spawn(_channels_last_worker, args=(free_port(), str(out)), nprocs=1, join=True)
    assert "must be 1 to view Float as Byte" in out.read_text()
