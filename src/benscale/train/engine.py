"""The process group and the two data-parallel engines: DeepSpeed and torch DDP.

Both are used as their libraries ship them: DeepSpeed's engine with its own gradient
reduction (ZeRO 0, 1 or 2, its documented overlap settings at stages 1/2), torch's
``DistributedDataParallel`` with its defaults; neither has a method replaced. A
``deepspeed:`` block of the training config is merged over the DeepSpeed configuration
benscale generates, a ``ddp:`` block goes to DDP's constructor. Both engines present the
same few methods to the step loop (DeepSpeed's: ``engine(x)``, ``backward``, ``step``,
``module``, ``get_lr``, ``save_checkpoint``, ``load_checkpoint``), so model, loss,
optimizer, schedule, data, seeds and checkpoints are shared.

Pitfalls of DeepSpeed on this stack handled here (docs/training.md):

* MASTER_ADDR and friends are exported from :mod:`benscale.train.world` before
  ``deepspeed.init_distributed``, whose own MPI discovery would use ``hostname -I``;
* the shared-memory comm op that DeepSpeed JIT-compiles at first init (CPU only, unused by
  gloo data parallelism) is skipped;
* ZeRO with a client optimizer DeepSpeed does not list (SGD) needs
  ``zero_allow_untested_optimizer``;
* DeepSpeed's bf16 mode (``bf16-deepspeed``) keeps BatchNorm buffers in bf16
  (``data_types.buffer_dtype``) like the weights.

``precision: bf16`` is autocast mixed precision for both engines
(:class:`benscale.train.steps.StepContext`): fp32 weights, gradients and optimizer, what
``torch.autocast`` gives a bare PyTorch loop.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from benscale.atomic import atomic_path, write_text
from benscale.files.batches import BatchSplit
from benscale.train.config import TrainConfig
from benscale.train.optim import build_optimizer, lr_factor, peak_lr
from benscale.train.timing import CommMeter, DdpHookMeter, DeepSpeedLogMeter, NoComm
from benscale.train.world import World, export_for_torch

#: DeepSpeed's documented ZeRO overlap settings (docs: "ZeRO optimizations"), on at
#: stages 1 and 2: gradient reduction overlapped with backward in contiguous buckets.
ZERO_OVERLAP: dict[str, Any] = {"overlap_comm": True, "contiguous_gradients": True,
                                "reduce_bucket_size": 500_000_000,
                                "allgather_bucket_size": 500_000_000}
#: DDP constructor options a ``ddp:`` block may set (train.schema.json).
DDP_OPTIONS: tuple[str, ...] = ("bucket_cap_mb", "broadcast_buffers",
                                "gradient_as_bucket_view", "static_graph",
                                "find_unused_parameters")
#: File a DDP checkpoint's model, optimizer and scheduler states go to, per tag.
DDP_STATE = "state.pt"
#: DeepSpeed's name for the pointer to the newest complete checkpoint (DDP uses it too).
LATEST = "latest"


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
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                               timeout=timedelta(seconds=timeout_s), rank=world.rank,
                               world_size=world.world_size)
    return backend, device


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``, nested dicts key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def ds_config(config: TrainConfig, batches: BatchSplit) -> dict[str, Any]:
    """The DeepSpeed JSON configuration for our config (saved as RUN_DIR/ds_config.json):
    benscale's batch rule, seed and precision, the user's ``deepspeed:`` block over it."""
    cfg: dict[str, Any] = {
        "train_batch_size": batches.global_batch,
        "train_micro_batch_size_per_gpu": batches.per_rank,
        "gradient_accumulation_steps": batches.grad_accumulation,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": config.zero_stage},
        "gradient_clipping": 0.0,
        "seed": config.seed,
    }
    if config.zero_stage > 0:
        cfg["zero_optimization"].update(ZERO_OVERLAP)
        if config.optimizer.name == "sgd":
            cfg["zero_allow_untested_optimizer"] = True
    if config.precision == "bf16-deepspeed":
        cfg["bf16"] = {"enabled": True}
        cfg["data_types"] = {"buffer_dtype": "bf16"}
    if config.comm_timing:
        cfg["comms_logger"] = {"enabled": True, "prof_all": True, "verbose": False,
                               "debug": False}
    return deep_merge(cfg, config.deepspeed)


def ddp_options(config: TrainConfig) -> dict[str, Any]:
    """DDP's constructor options: its own defaults (read from its signature), the
    ``ddp:`` block over them."""
    signature = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__)
    defaults = {name: signature.parameters[name].default for name in DDP_OPTIONS}
    return {**defaults, **config.ddp}


@dataclass
class Engine:
    """A built engine and what run.json records about it.

    Attributes:
        engine: the object the step loop drives (DeepSpeed's engine, or :class:`DdpEngine`).
        name: ``deepspeed`` or ``ddp``.
        library: the distribution that provides it (``deepspeed``, ``torch``).
        version: its installed version.
        config: the resolved engine configuration (ds_config.json, or DDP's options).
        comm: how its communication is measured.
    """

    engine: Any
    name: str
    library: str
    version: str
    config: dict[str, Any]
    comm: CommMeter


def build_engine(model: nn.Module, config: TrainConfig, batches: BatchSplit,
                 steps_per_epoch: int, device: torch.device) -> Engine:
    """The configured engine around ``model``, with our optimizer and per-step scheduler."""
    optimizer = build_optimizer(model, config, peak_lr(config, batches.global_batch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
    if config.engine == "ddp":
        options = ddp_options(config)
        engine = DdpEngine(model, optimizer, scheduler, batches.grad_accumulation, options,
                           device)
        comm: CommMeter = (DdpHookMeter(engine.ddp, device) if config.comm_timing
                           else NoComm("off (comm_timing: false)"))
        return Engine(engine, "ddp", "torch", torch.__version__, _json_ready(options), comm)
    import deepspeed

    cfg = ds_config(config, batches)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=scheduler, config=cfg,
                                           dist_init_required=False)
    comm = (DeepSpeedLogMeter() if config.comm_timing and cfg.get("comms_logger", {})
            .get("enabled") else NoComm("off (comm_timing: false)"))
    return Engine(engine, "deepspeed", "deepspeed", metadata.version("deepspeed"), cfg, comm)


def _json_ready(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, bool | int | float | str) or v is None else repr(v)
            for k, v in options.items()}


class DdpEngine:
    """torch ``DistributedDataParallel`` with the methods the step loop calls on an engine.

    Gradient accumulation as DeepSpeed does it: the loss of each micro-step is divided by
    the accumulation steps, gradients are reduced only at the accumulation boundary
    (``no_sync`` before), and the optimizer and scheduler step there. Gradients are cleared
    where a PyTorch loop clears them, before the first forward of an accumulation window,
    not right after the step: freed after the step, the 94 MB of gradients went back to the
    OS and were faulted in again by the next backward (~18,000 more page faults per step on
    the development VM, ~5 % of a bf16 step; docs/benchmarks.md).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, grad_accumulation: int,
                 options: dict[str, Any], device: torch.device) -> None:
        """Wrap ``model`` (already on ``device``) in DDP with ``options``."""
        self.module = model.to(device)
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.module, device_ids=ids,
                                                             **options)
        self.optimizer, self.lr_scheduler = optimizer, scheduler
        self.grad_accumulation = grad_accumulation
        self.micro_steps = 0
        self._no_sync: Any = None

    def _boundary(self) -> bool:
        return (self.micro_steps + 1) % self.grad_accumulation == 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Forward (gradients cleared first at a window's start); inside an accumulation,
        without the reduction DDP would prepare."""
        if torch.is_grad_enabled() and self.ddp.training:
            if self.micro_steps % self.grad_accumulation == 0:
                self.optimizer.zero_grad(set_to_none=True)
            if not self._boundary():
                self._no_sync = self.ddp.no_sync()
                self._no_sync.__enter__()
        return self.ddp(x)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the loss scaled by 1/accumulation (DeepSpeed's scale_wrt_gas)."""
        try:
            (loss / self.grad_accumulation).backward()
        finally:
            if self._no_sync is not None:
                self._no_sync.__exit__(None, None, None)
                self._no_sync = None

    def step(self) -> None:
        """At an accumulation boundary: optimizer and scheduler step."""
        boundary = self._boundary()
        self.micro_steps += 1
        if boundary:
            self.optimizer.step()
            self.lr_scheduler.step()

    def train(self) -> None:
        """Training mode."""
        self.ddp.train()

    def eval(self) -> None:
        """Evaluation mode."""
        self.ddp.eval()

    def get_lr(self) -> list[float]:
        """The current learning rate of each parameter group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def save_checkpoint(self, directory: str, tag: str,
                        client_state: dict[str, Any]) -> None:
        """Collective: rank 0 writes the (replicated) states, then the ``latest`` pointer,
        as DeepSpeed does (the pointer last, so a job killed while saving resumes from the
        previous complete checkpoint)."""
        folder = Path(directory) / tag
        if dist.get_rank() == 0:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / DDP_STATE) as tmp:
                torch.save({"module": self.module.state_dict(),
                            "optimizer": self.optimizer.state_dict(),
                            "lr_scheduler": self.lr_scheduler.state_dict(),
                            "micro_steps": self.micro_steps,
                            "client_state": client_state}, tmp)
        dist.barrier()
        if dist.get_rank() == 0:
            write_text(Path(directory) / LATEST, tag)
        dist.barrier()

    def load_checkpoint(self, directory: str, tag: str,
                        **_deepspeed_flags: Any) -> tuple[str, dict[str, Any]]:
        """Restore the states of ``tag`` on every rank; returns (path, client state)."""
        path = Path(directory) / tag / DDP_STATE
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.micro_steps = int(state["micro_steps"])
        return str(path), state["client_state"]
