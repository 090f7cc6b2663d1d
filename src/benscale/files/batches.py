"""The batch rule, shared by the study (which plans each point's batch) and training (which
splits it over its ranks): global batch = per-rank micro-batch x world size x gradient
accumulation.

Strong scaling keeps the global batch fixed (so the world size times the accumulation must
divide it); weak scaling keeps the per-rank micro-batch fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from benscale.errors import ConfigError

#: Scaling modes and the batch quantity each keeps fixed as the world grows.
MODES: dict[str, str] = {"strong": "global_batch", "weak": "batch_per_gpu"}


@dataclass(frozen=True)
class BatchSplit:
    """How the global batch splits over ranks and micro-steps.

    Attributes:
        global_batch: samples per optimizer step over all ranks.
        per_rank: samples per rank per micro-step.
        grad_accumulation: micro-steps per optimizer step.
    """

    global_batch: int
    per_rank: int
    grad_accumulation: int

    @classmethod
    def strong(cls, global_batch: int, world_size: int, grad_accumulation: int,
               where: str = "global_batch") -> BatchSplit:
        """A fixed global batch divided over ``world_size`` ranks x accumulation.

        Raises:
            ConfigError: the division is not exact, naming ``where`` and a fix.
        """
        per_step = world_size * grad_accumulation
        if global_batch % per_step:
            raise ConfigError(
                f"{where}={global_batch} cannot be split over world size {world_size} x "
                f"grad_accumulation {grad_accumulation}; choose a multiple of {per_step} (e.g. "
                f"{per_step * max(global_batch // per_step, 1)}), or set batch_per_gpu (weak "
                "scaling)")
        return cls(global_batch, global_batch // per_step, grad_accumulation)

    @classmethod
    def weak(cls, per_rank: int, world_size: int, grad_accumulation: int) -> BatchSplit:
        """A fixed per-rank micro-batch, multiplied by the ranks and the accumulation."""
        return cls(per_rank * world_size * grad_accumulation, per_rank, grad_accumulation)

    @classmethod
    def of(cls, global_batch: int | None, batch_per_gpu: int | None, world_size: int,
           grad_accumulation: int, where: str = "global_batch") -> BatchSplit:
        """The split for exactly one of ``global_batch`` (strong) and ``batch_per_gpu``
        (weak), as a training config or a study point gives them."""
        if (global_batch is None) == (batch_per_gpu is None):
            raise ConfigError(f"set exactly one of global_batch (strong scaling) and "
                              f"batch_per_gpu (weak scaling); got global_batch={global_batch}, "
                              f"batch_per_gpu={batch_per_gpu}")
        if global_batch is None:
            return cls.weak(batch_per_gpu, world_size, grad_accumulation)
        return cls.strong(global_batch, world_size, grad_accumulation, where)

    def micro_steps(self, world_size: int) -> int:
        """Micro-batches of ``per_rank`` samples in one global batch (all ranks)."""
        return self.grad_accumulation * world_size
