"""The optimizer and the learning-rate schedule, the same for every engine.

Optimizers are built in plain torch (SGD, AdamW) or below (LAMB) rather than from
DeepSpeed's config: DeepSpeed's fused LAMB needs a CUDA build of its ops, and one code path
for every engine, CPU and GPU, keeps results comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

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
    and weight decay added to the update before the trust ratio, as in the paper's
    Algorithm 2 and in timm's ``Lamb`` (tests/test_optim.py compares the two). Per
    parameter group, ``adapt`` switches the trust ratio: :func:`lamb_groups` leaves it and
    the weight decay out for BatchNorm parameters and biases, as timm's and NVIDIA's LAMB
    recipes do (a norm of a bias vector says nothing about a layer's scale).

    Not for DeepSpeed's ZeRO stages 1 and 2, which hand a client optimizer one flat
    partition of the parameters per rank: the "layer" of the trust ratio would then be a
    partition whose extent depends on the world size (the config refuses it).
    """

    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float],
                 eps: float, weight_decay: float, adapt: bool = True) -> None:
        """See torch.optim.AdamW for the arguments; ``adapt``: the trust ratio."""
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "adapt": adapt})

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
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** state["step"])).add_(group["eps"])
                update = (m / (1 - beta1 ** state["step"])).div_(denom)
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                if group["adapt"]:
                    w_norm, u_norm = p.norm(), update.norm()
                    one = torch.ones_like(w_norm)
                    update.mul_(torch.where(w_norm > 0, torch.where(u_norm > 0,
                                                                    w_norm / u_norm, one), one))
                p.add_(update, alpha=-group["lr"])
        return loss


def lamb_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups for LAMB: weights of convolutions and linear layers with weight
    decay and the trust ratio; BatchNorm parameters and biases (one-dimensional) without
    either."""
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else plain).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "adapt": True},
            {"params": plain, "weight_decay": 0.0, "adapt": False}]


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
    return Lamb(lamb_groups(model, opt.weight_decay), lr=lr, betas=betas, eps=opt.eps,
                weight_decay=opt.weight_decay)


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
