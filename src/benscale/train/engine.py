"""DeepSpeed: its configuration (generated from ours), the process group, and the engine.

Pitfalls of DeepSpeed on this stack (docs/training.md) handled here:

* MASTER_ADDR and friends are exported from :mod:`benscale.train.world` before
  ``deepspeed.init_distributed``, whose own MPI discovery would use ``hostname -I``;
* the shared-memory comm op that DeepSpeed JIT-compiles at first init (~45 s, CPU only,
  unused by gloo data parallelism) is skipped;
* ZeRO with a client optimizer (SGD, our LAMB) needs ``zero_allow_untested_optimizer``;
* DeepSpeed's bf16 mode (our ``bf16-deepspeed``) keeps BatchNorm buffers in bf16
  (``data_types.buffer_dtype``) like the weights.

``precision: bf16`` is autocast mixed precision instead (:class:`benscale.train.steps.
StepContext`): fp32 weights, gradients and optimizer, bf16 matmuls and convolutions, what
``torch.autocast`` gives a bare PyTorch loop. DeepSpeed then runs its fp32 path: no master
copy of the weights to update, and stage 0's overlapped reduction (:mod:`.overlap`) applies.

Optimizers are built here in plain torch (SGD, AdamW) or below (LAMB) rather than from
DeepSpeed's config: DeepSpeed's fused LAMB needs a CUDA build of its ops, and one code
path for CPU and GPU keeps results comparable.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from benscale.files.batches import BatchSplit
from benscale.train import overlap
from benscale.train.config import TrainConfig
from benscale.train.world import World, export_for_torch


def backend_and_device(world: World) -> tuple[str, torch.device]:
    """NCCL on the local rank's GPU when CUDA is there, else gloo on the CPU."""
    if torch.cuda.is_available():
        index = world.local_rank % torch.cuda.device_count()
        return "nccl", torch.device("cuda", index)
    return "gloo", torch.device("cpu")


def init_distributed(world: World, timeout_s: float) -> tuple[str, torch.device]:
    """Start the process group for ``world``; returns (backend, device).

    ``timeout_s`` bounds every collective: a rank that died makes the others fail instead of
    waiting forever (gloo also fails at once when a peer's socket closes).
    """
    export_for_torch(world)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    import deepspeed

    backend, device = backend_and_device(world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        overlap.enable_device_timing()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                               timeout=timedelta(seconds=timeout_s), rank=world.rank,
                               world_size=world.world_size)
    return backend, device


def ds_config(config: TrainConfig, batches: BatchSplit) -> dict[str, Any]:
    """The DeepSpeed JSON configuration for our config (saved as RUN_DIR/ds_config.json)."""
    cfg: dict[str, Any] = {
        "train_batch_size": batches.global_batch,
        "train_micro_batch_size_per_gpu": batches.per_rank,
        "gradient_accumulation_steps": batches.grad_accumulation,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": config.zero_stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
        "seed": config.seed,
    }
    if config.zero_stage > 0:
        # Reduce in the backward epilogue, not in hooks overlapped with backward: the
        # measured comm_time_s is then the whole gradient reduction (docs/training.md).
        cfg["zero_optimization"].update({"overlap_comm": False, "contiguous_gradients": True})
    if config.precision == "bf16-deepspeed":
        cfg["bf16"] = {"enabled": True}
        cfg["data_types"] = {"buffer_dtype": "bf16"}
    return cfg


def peak_lr(config: TrainConfig, global_batch: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): lr x global batch / reference batch."""
    opt, scaling = config.optimizer, config.lr_scaling
    if scaling.rule == "none":
        return float(opt.lr)
    return float(opt.lr) * global_batch / scaling.reference_batch


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020): Adam moments with a layer-wise trust ratio ||w|| / ||update||.

    Plain torch (no fused kernel) so it runs the same on CPU and GPU; bias-corrected moments
    and decoupled weight decay as in the paper's Algorithm 2.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float],
                 eps: float, weight_decay: float) -> None:
        """See torch.optim.AdamW for the arguments."""
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One LAMB update of every parameter with a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = m / (1 - beta1 ** state["step"])
                v_hat = v / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                    torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD (+momentum), AdamW or LAMB at learning rate ``lr``."""
    opt = config.optimizer
    params = model.parameters()
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay)
    betas = (float(opt.betas[0]), float(opt.betas[1]))
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=opt.eps,
                                 weight_decay=opt.weight_decay)
    return Lamb(params, lr=lr, betas=betas, eps=opt.eps, weight_decay=opt.weight_decay)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``s``: linear warm-up, then cosine or step."""
    steps_per_epoch = max(steps_per_epoch, 1)
    total = config.epochs * steps_per_epoch
    warm = round(config.warmup_epochs * steps_per_epoch)
    milestones = config.step_decay.milestones
    gamma = config.step_decay.gamma
    cosine = config.schedule == "cosine"

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cosine:
            return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
        return gamma ** sum(step // steps_per_epoch >= m for m in milestones)

    return factor


def build_engine(model: nn.Module, config: TrainConfig, batches: BatchSplit,
                 steps_per_epoch: int) -> tuple[Any, dict[str, Any]]:
    """``deepspeed.initialize`` with our optimizer and per-step scheduler.

    Returns:
        (the DeepSpeed engine, the DeepSpeed config used).
    """
    import deepspeed

    cfg = ds_config(config, batches)
    optimizer = build_optimizer(model, config, peak_lr(config, batches.global_batch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=scheduler, config=cfg,
                                           dist_init_required=False)
    if config.zero_stage == 0 and engine.dp_world_size == 1:
        # Alone, the "all-reduce" is the identity, yet DeepSpeed would still flatten every
        # gradient into one buffer and copy it back (docs/benchmarks.md, "Training step").
        engine.enable_backward_allreduce = False
    return engine, cfg
