"""LAMB against a maintained implementation (timm's), through DeepSpeed's ZeRO 0 engine, and
refused where DeepSpeed would partition it; the learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from benscale.errors import ConfigError
from benscale.train import config as config_mod
from benscale.train.optim import Lamb, build_optimizer, lamb_groups, lr_factor

STEPS = 5
HYPER = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.05}


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 5))


def _timm_lamb(model: nn.Module) -> torch.optim.Optimizer:
    """timm's Lamb as timm's own recipe builds it: no decay (and so no trust ratio) for
    one-dimensional parameters, no gradient clipping."""
    from timm.optim import Lamb as TimmLamb

    decay = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    return TimmLamb([{"params": decay, "weight_decay": HYPER["weight_decay"]},
                     {"params": plain, "weight_decay": 0.0}], lr=HYPER["lr"],
                    betas=HYPER["betas"], eps=HYPER["eps"], max_grad_norm=None)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 5, generator=gen))
            for _ in range(STEPS)]


def _train(model: nn.Module, step: object) -> None:
    for x, y in _batches():
        loss = (model(x) - y).square().mean()
        step(loss)


def test_lamb_groups_leave_batchnorm_and_bias_out() -> None:
    groups = lamb_groups(_net(), 0.05)
    assert [len(g["params"]) for g in groups] == [2, 3]  # conv + linear weight | BN w/b, bias
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["adapt"] is False
    assert all(p.ndim > 1 for p in groups[0]["params"])


def _deepspeed_worker(rank: int, port: int, out: str) -> None:
    """One process: our LAMB through DeepSpeed's stage-0 engine against timm's, alone."""
    import deepspeed

    from benscale.files.batches import BatchSplit
    from benscale.train.engine import ds_config, init_distributed
    from benscale.train.world import World

    init_distributed(World(0, 1, 0, 1, 1, 0, "127.0.0.1", port, "test"), 120)
    ours, theirs = _net(), _net()
    optimizer = Lamb(lamb_groups(ours, HYPER["weight_decay"]), lr=HYPER["lr"],
                     betas=HYPER["betas"], eps=HYPER["eps"],
                     weight_decay=HYPER["weight_decay"])
    # benscale's own DeepSpeed config (it sets gradient_clipping 0: DeepSpeed's default
    # clips the gradient norm to 1.0, which timm's loop here does not)
    cfg = config_mod.load(None, ["optimizer.name=lamb", "global_batch=4"])
    engine, *_ = deepspeed.initialize(model=ours, optimizer=optimizer,
                                      config=ds_config(cfg, BatchSplit(4, 4, 1)),
                                      dist_init_required=False)

    def ds_step(loss: torch.Tensor) -> None:
        engine.backward(loss)
        engine.step()

    _train(engine, ds_step)
    reference = _timm_lamb(theirs)

    def timm_step(loss: torch.Tensor) -> None:
        reference.zero_grad()
        loss.backward()
        reference.step()

    _train(theirs, timm_step)
    moved = 0
    for (name, a), b, start in zip(ours.named_parameters(), theirs.parameters(),
                                   _net().parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
        moved += not torch.equal(a, start)
    assert moved == 5
    Path(out).write_text("ok")


def test_lamb_at_zero_0_matches_timm_update(tmp_path: Path) -> None:
    """Five steps on the same batches: the parameters agree within float rounding (the two
    implementations order a few operations differently; measured differences ~1e-8)."""
    from benscale.train.world import free_port

    out = tmp_path / "ok"
    mp.spawn(_deepspeed_worker, args=(free_port(), str(out)), nprocs=1, join=True)
    assert out.read_text() == "ok"


def test_lamb_refused_at_zero_1_and_2() -> None:
    for stage in (1, 2):
        with pytest.raises(ConfigError, match=rf"optimizer lamb with zero_stage={stage}: "
                                              "DeepSpeed's ZeRO hands a client optimizer"):
            config_mod.load(None, ["optimizer.name=lamb", f"zero_stage={stage}"])
    # where the trust ratio stays layer-wise, LAMB runs
    config_mod.load(None, ["optimizer.name=lamb", "zero_stage=0"])
    config_mod.load(None, ["optimizer.name=lamb", "engine=ddp"])
    cfg = config_mod.load(None, ["optimizer.name=lamb"])
    lamb = build_optimizer(_net(), cfg, 0.1)
    assert isinstance(lamb, Lamb) and [g["adapt"] for g in lamb.param_groups] == [True, False]


def test_lr_factor_warms_up_then_decays() -> None:
    cfg = config_mod.load(None, ["epochs=4", "warmup_epochs=1", "schedule=cosine"])
    factor = lr_factor(cfg, steps_per_epoch=10)
    assert [factor(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert factor(10) == pytest.approx(1.0) and factor(39) == pytest.approx(0.0027390523)
    step = lr_factor(config_mod.load(None, ["schedule=step", "warmup_epochs=0",
                                            "step_decay.milestones=[2]"]), 10)
    assert (step(19), step(20)) == (1.0, pytest.approx(0.1))
