"""Training data: shards -> normalised tensors, and which rank reads which patch when.

Order and augmentation are pure functions of (seed, epoch, index), so that every rank
agrees on the global batches without talking, a resumed run replays exactly the batches
an uninterrupted run would have seen, and DataLoader workers need no shared RNG state.

* Training: a permutation of the split per epoch; optimizer step ``k`` takes the global
  batch ``perm[k*G:(k+1)*G]``; within it, micro-step ``a`` of rank ``r`` takes the slice
  ``(a*W + r)*b`` .. ``+b`` (b per-rank micro-batch, W world size). A single process with
  ``grad_accumulation = W`` therefore sees the same micro-batches as W ranks. The last
  incomplete global batch is dropped (every step has the same size).
* Evaluation: the FULL split, index ``i`` on rank ``i % W``; ranks with one patch fewer pad
  with a copy and mark it invalid, so gathering drops it: no patch is lost or counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benscale.bigearthnet import BAND_SETS
from benscale.errors import ConfigError, DataError
from benscale.shards import (MANIFEST_NAME, STATS_NAME, ShardSet, load_manifest, load_stats,
                             stats_arrays)


def check_data(root: Path, bands: str, num_classes: int) -> None:
    """Fail early, naming the file, when the shards cannot serve this configuration."""
    manifest = load_manifest(root)
    wanted = BAND_SETS[bands]
    missing = [b for b in wanted if b not in manifest["bands"]]
    if missing:
        raise DataError(f"{root / MANIFEST_NAME}: shards lack band(s) {missing} of band set "
                        f"{bands!r}; re-extract with all bands or set bands: s2-10")
    stats = json.loads((root / STATS_NAME).read_text()) if (root / STATS_NAME).exists() else None
    if stats is None:
        raise DataError(f"{root / STATS_NAME}: not found; run `benscale extract` first")
    absent = [b for b in wanted if b not in stats.get("bands", {})]
    if absent:
        raise DataError(f"{root / STATS_NAME}: statistics are for another band set (no "
                        f"{absent}); re-run `benscale extract` or choose a matching `bands`")
    if len(manifest["classes"]) != num_classes:
        raise ConfigError(f"num_classes={num_classes} but {root / MANIFEST_NAME} holds "
                          f"{len(manifest['classes'])}-class labels; set num_classes: "
                          f"{len(manifest['classes'])}")
    for split in ("train", "validation", "test"):
        n = manifest["splits"].get(split, {}).get("n_patches", 0)
        if n == 0:
            raise DataError(f"{root / MANIFEST_NAME}: split {split!r} is empty; training "
                            "needs train, validation and test patches")
        for shard in manifest["splits"][split]["shards"]:
            if not (root / shard["path"]).is_file():
                raise DataError(f"{root / shard['path']}: shard listed in the manifest is "
                                "missing; re-run `benscale extract`")


def augment(x: np.ndarray, seed: int, epoch: int, index: int) -> np.ndarray:
    """A random flip and 90-degree rotation of a (C, H, W) patch, fixed by (seed, epoch, index).

    These are the symmetries of a nadir image: land cover has no up or left.
    """
    rng = np.random.default_rng((seed, epoch, index))
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    if flip:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(x, k, axes=(1, 2)))


class PatchDataset(Dataset):
    """Normalised patches of one split: ``(float32 (C,120,120), float32 (classes,), index)``.

    Reads one patch per item through :class:`benscale.shards.ShardSet` (one HDF5 chunk),
    never a whole shard. ``set_epoch`` changes the augmentation draw.
    """

    def __init__(self, root: Path, split: str, bands: Sequence[str], train: bool,
                 seed: int, augment: bool) -> None:
        """Open the split's shards and read the train-split band statistics."""
        self.shards = ShardSet(root, split, bands=bands)
        mean, std = stats_arrays(load_stats(root, bands))
        self.mean, self.inv_std = mean, (1.0 / std).astype(np.float32)
        self.augment = augment and train
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        """Patches in the split."""
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draw of ``epoch`` (workers are re-created each epoch)."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Patch ``i``: normalised reflectance, multi-hot target, and its index."""
        raw, labels = self.shards.read(i)
        x = (raw.astype(np.float32) - self.mean) * self.inv_std
        if self.augment:
            x = augment(x, self.seed, self.epoch, i)
        return torch.from_numpy(x), torch.from_numpy(labels.astype(np.float32)), i


@dataclass(frozen=True)
class Layout:
    """Who reads what: the rank, world size, per-rank micro-batch and accumulation."""

    rank: int
    world_size: int
    per_rank: int
    grad_accumulation: int

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step."""
        return self.per_rank * self.world_size * self.grad_accumulation


def steps_per_epoch(n: int, layout: Layout, limit: int | None) -> int:
    """Full global batches in ``n`` patches, capped at ``limit``."""
    steps = n // layout.global_batch
    return min(steps, limit) if limit else steps


def train_batches(n: int, layout: Layout, seed: int, epoch: int,
                  limit: int | None = None) -> list[list[int]]:
    """This rank's micro-batches (index lists) for ``epoch``, in order (module docstring)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    b, w = layout.per_rank, layout.world_size
    out = []
    for step in range(steps_per_epoch(n, layout, limit)):
        base = step * layout.global_batch
        for acc in range(layout.grad_accumulation):
            start = base + (acc * w + layout.rank) * b
            out.append(perm[start:start + b])
    return out


def eval_batches(n: int, rank: int, world_size: int, batch: int,
                 limit: int | None = None) -> list[list[int]]:
    """This rank's evaluation batches over the FULL split; padding marked by index -1-i.

    Every rank gets the same number of items (collectives need equal shapes); a padded
    item repeats a real patch but carries a negative index so the gather can drop it.
    """
    per_rank = -(-n // world_size)
    mine = [i if i < n else -1 - (i % n) for i in range(rank, per_rank * world_size, world_size)]
    batches = [mine[s:s + batch] for s in range(0, len(mine), batch)]
    return batches[:limit] if limit else batches


class _Padded(Dataset):
    """Maps negative (padding) indices to a real patch but keeps the negative index."""

    def __init__(self, inner: PatchDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y, _ = self.inner[i if i >= 0 else -1 - i]
        return x, y, i


def loader(dataset: Dataset, batches: list[list[int]], workers: int,
           pin_memory: bool) -> DataLoader:
    """A DataLoader over precomputed index batches (the sampler logic lives above)."""
    return DataLoader(_Padded(dataset) if isinstance(dataset, PatchDataset) else dataset,
                      batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False)
