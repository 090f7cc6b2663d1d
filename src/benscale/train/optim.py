"""The optimizer and the learning-rate schedule, the same for every engine.

Optimizers are built in plain torch (SGD, AdamW) or below (LAMB) rather than from
DeepSpeed's config: DeepSpeed's fused LAMB needs a CUDA build of its ops, and one code path
for every engine, CPU and GPU, keeps results comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from benscale.train.config import TrainConfig


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
