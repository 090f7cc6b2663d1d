"""Epoch-end DeepSpeed checkpoints, kept k at a time, and automatic resume.

A checkpoint ``RUN_DIR/checkpoints/epoch-NNNN/`` holds DeepSpeed's model, optimizer and
lr-scheduler states plus our client state (epoch done, best validation score) and one
``rng-rankR.pt`` per rank (Python, numpy and torch generators). DeepSpeed writes the
``latest`` pointer only after every file of a tag is written, so a job killed while saving
resumes from the previous complete checkpoint. Data order and augmentation depend only on
(seed, epoch), so the epoch number is the whole sampler state.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

TAG_PATTERN = re.compile(r"^epoch-(\d{4,})$")
LATEST = "latest"


def tag(epoch: int) -> str:
    """Checkpoint tag of the end of ``epoch`` (1-based)."""
    return f"epoch-{epoch:04d}"


def latest_tag(directory: Path) -> str | None:
    """The tag DeepSpeed's ``latest`` file names, if that checkpoint exists."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return name if (directory / name).is_dir() else None


def rng_state() -> dict[str, Any]:
    """Every random generator this process uses."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(engine: Any, directory: Path, epoch: int, client_state: dict[str, Any],
         rank: int) -> None:
    """Collective: every rank writes its RNG file, then DeepSpeed its shards + ``latest``."""
    name = tag(epoch)
    (directory / name).mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), directory / name / f"rng-rank{rank}.pt")
    dist.barrier()
    engine.save_checkpoint(str(directory), tag=name, client_state=client_state)


def load(engine: Any, directory: Path, rank: int, name: str | None = None) -> dict[str, Any] | None:
    """Collective: restore the checkpoint ``name`` (default: latest); None when there is none.

    Returns:
        The client state saved with it (``epoch``, ``best``, ...).
    """
    name = name or latest_tag(directory)
    if name is None:
        return None
    _, client = engine.load_checkpoint(str(directory), tag=name, load_optimizer_states=True,
                                       load_lr_scheduler_states=True)
    rng_file = directory / name / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return client


def prune(directory: Path, keep_last: int, protect: set[str]) -> list[str]:
    """Delete all but the newest ``keep_last`` epoch checkpoints (and ``protect``); rank 0 only."""
    tags = sorted((p.name for p in directory.iterdir() if TAG_PATTERN.match(p.name)),
                  key=lambda n: int(TAG_PATTERN.match(n).group(1)))
    doomed = [t for t in tags[:-keep_last] if t not in protect]
    for name in doomed:
        shutil.rmtree(directory / name, ignore_errors=True)
    return doomed
