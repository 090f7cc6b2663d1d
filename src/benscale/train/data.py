"""Training data: shards -> batches as stored, normalised on the training device, and which
rank reads which patch when.

The loader delivers uint16 reflectance as the shards store it (pinned host memory when
CUDA is there); :class:`Normalisation` converts and normalises a batch on the training
device, and :func:`orient_batch` applies its flips and rotations there: the work DALI and
FFCV move off the host. One ``Normalisation`` serves training, evaluation and the
benchmarks; :func:`device_batches` copies the next batch to a GPU while the current one
trains.

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

import itertools
import math
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from benscale.bigearthnet import BAND_SETS, PATCH_PX, SPLITS
from benscale.errors import ConfigError, DataError
from benscale.files.batches import BatchSplit
from benscale.files.shards import MANIFEST_NAME, STATS_NAME, BandStats, Manifest, ShardSet


def check_data(root: Path, bands: str, num_classes: int) -> None:
    """Fail early, naming the file, when the shards cannot serve this configuration."""
    manifest = Manifest.read(root)
    wanted = BAND_SETS[bands]
    missing = [b for b in wanted if b not in manifest.bands]
    if missing:
        raise DataError(f"{root / MANIFEST_NAME}: shards lack band(s) {missing} of band set "
                        f"{bands!r}; re-extract with all bands or set bands: s2-10")
    BandStats.read(root).normalisation(wanted, root / STATS_NAME)
    if manifest.class_names(num_classes) is None:
        raise ConfigError(f"num_classes=43 but {root / MANIFEST_NAME} holds 19-class labels "
                          "only (43-class labels come from v1 archives; reBEN/v2 publishes "
                          "the 19 classes alone); set num_classes: 19")
    for split in SPLITS:
        if manifest.n_patches(split) == 0:
            raise DataError(f"{root / MANIFEST_NAME}: split {split!r} is empty; training "
                            "needs train, validation and test patches")
        for shard in manifest.splits[split].shards:
            if not (root / shard.path).is_file():
                raise DataError(f"{root / shard.path}: shard listed in the manifest is "
                                "missing; re-run `benscale extract`")


#: The 8 orientations of a nadir image (land cover has no up or left): code ``c`` means a
#: left-right flip if ``c >= 4``, then ``c % 4`` quarter turns from x towards y.
ORIENTATIONS = 8


def orientations(seed: int, epoch: int, n: int) -> np.ndarray:
    """Orientation code of every patch of a split for ``epoch``: fixed by (seed, epoch).

    One draw per epoch for the whole split, so a sample costs a table lookup, not a
    generator of its own; any process computes the same table.
    """
    return np.random.default_rng((seed, epoch)).integers(ORIENTATIONS, size=n, dtype=np.int8)


def orient_batch(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with sample ``b`` in orientation ``codes[b]``, on x's device.

    Applied where the batch already is (the GPU on GPU nodes: free there) rather than in
    the loader, where a rotated copy costs several plain ones (docs/benchmarks.md, "Loader").
    """
    codes = codes.cpu()
    if not bool(codes.any()):
        return x
    out = torch.empty_like(x)
    for code in codes.unique().tolist():
        sel = (codes == code).nonzero().squeeze(1).to(x.device)
        part = x[sel]
        if code >= 4:
            part = part.flip(-1)
        out[sel] = part.rot90(code % 4, dims=(-2, -1))
    return out


class BatchMemory:
    """Host memory for unpinned uint16 batches, each buffer handed out again once nothing
    refers to the batch made of it.

    A new batch per step (11 MB at batch 32) is what glibc serves from memory it has just
    handed back to the OS, faulted in and written cold every time; FFCV and DALI keep their
    batch buffers instead, and so does this (docs/benchmarks.md, "Loader"). Reuse asks
    nothing of the consumer: a batch is ``torch.from_numpy`` of a fresh NumPy view of its
    buffer, which every tensor, view or ``.numpy()`` of the batch keeps alive; the buffer
    is free again when that view has died (a weak reference). The pool grows to the most
    batches alive at once, at most ``limit`` buffers kept; pinned batches come from torch's
    caching host allocator, which reuses its blocks the same way.
    """

    def __init__(self, limit: int = 32) -> None:
        """Keep at most ``limit`` buffers (beyond it a batch is allocated and let go)."""
        self.limit = limit
        self.buffers: list[tuple[np.ndarray, weakref.ref[np.ndarray]]] = []
        self.lock = threading.Lock()

    def __reduce__(self) -> tuple[type[BatchMemory], tuple[int]]:
        """A copy in another process (a DataLoader worker started by spawn) starts empty."""
        return BatchMemory, (self.limit,)

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised uint16 tensor of ``shape`` in a buffer no batch uses now."""
        with self.lock:
            for k, (buffer, handed) in enumerate(self.buffers):
                if buffer.shape == shape and handed() is None:
                    return self._hand_out(k, buffer)
            buffer = np.empty(shape, dtype=np.uint16)
            if len(self.buffers) == self.limit:
                return torch.from_numpy(buffer)
            return self._hand_out(len(self.buffers), buffer)

    def _hand_out(self, k: int, buffer: np.ndarray) -> torch.Tensor:
        """``buffer``, slot ``k`` of the pool (a new slot at the end), as a batch tensor whose
        liveness is watched through a fresh view."""
        view = buffer.view()
        slot = (buffer, weakref.ref(view))
        if k == len(self.buffers):
            self.buffers.append(slot)
        else:
            self.buffers[k] = slot
        return torch.from_numpy(view)


@dataclass(frozen=True)
class DatasetOptions:
    """What a split's dataset serves: which bands and labels, and its augmentation draw."""

    bands: tuple[str, ...]
    num_classes: int
    seed: int
    augment: bool


class Normalisation:
    """``(x - mean) / std`` per band with the train split's statistics, where the batch is.

    In float32 as an in-place multiply by ``1/std`` and add of ``-mean/std`` (two
    roundings, no fused multiply-add): the same operations, in the same order, as the
    host-side normalisation this replaced, so CPU results are bit-identical to it
    (tests/test_train_data.py).
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, device: torch.device) -> None:
        """``mean``, ``std``: float32 arrays of shape (C, 1, 1) (BandStats.normalisation)."""
        self.device = device
        self.scale = torch.from_numpy((1.0 / std).astype(np.float32)).to(device)
        self.shift = torch.from_numpy((-mean / std).astype(np.float32)).to(device)

    @classmethod
    def of(cls, root: Path, bands: Sequence[str], device: torch.device) -> Normalisation:
        """The normalisation of ``bands`` from ``root/stats.json``."""
        mean, std = BandStats.read(root).normalisation(tuple(bands), root / STATS_NAME)
        return cls(mean, std, device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A uint16 batch (B, C, H, W), anywhere, as normalised float32 on the device."""
        x = x.to(self.device, non_blocking=True).to(torch.float32)
        return x.mul_(self.scale).add_(self.shift)


class PatchDataset(Dataset):
    """Patches of one split as stored (uint16), batch by batch, with their augmentation draw.

    An item is ``(uint16 (C,120,120), float32 (classes,), index, orientation code)``.
    Built for throughput (docs/benchmarks.md, "Loader"): the DataLoader asks for a whole
    batch at once (``__getitems__``); each patch is copied straight from its shard (a
    memory map for uncompressed shards) into the batch tensor, which comes from the
    dataset's :class:`BatchMemory` (a worker process allocates it in shared memory instead);
    conversion and normalisation happen on the training device
    (:class:`Normalisation`). Flips and rotations are drawn here (fixed by seed, epoch and
    index; ``set_epoch`` changes the draw) and applied on the device too
    (:func:`orient_batch`). A negative index ``-1 - i`` means patch ``i`` used as padding
    (evaluation): the item is patch ``i`` but keeps its negative index.
    """

    def __init__(self, root: Path, split: str, options: DatasetOptions) -> None:
        """Open the split's shards."""
        self.shards = ShardSet(root, split, bands=options.bands,
                               num_classes=options.num_classes)
        self.augment = options.augment
        self.seed, self.epoch = options.seed, 0
        self._codes: np.ndarray | None = None
        self.memory = BatchMemory()

    def __len__(self) -> int:
        """Patches in the split."""
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draw of ``epoch`` (workers are re-created each epoch)."""
        self.epoch, self._codes = epoch, None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Patch ``i``: reflectance as stored, multi-hot target, index, orientation code."""
        x, y, _, codes = self.__getitems__([i])
        return x[0], y[0], i, int(codes[0])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """A batch: uint16 (B, C, 120, 120), float32 (B, classes), int64 (B,) indices,
        int8 (B,) orientation codes (all 0 without augmentation)."""
        if get_worker_info() is None:
            return self.fill(indices, self.empty_batch(len(indices)))
        return self.fill(indices, _shared_batch_tensor(self._batch_shape(len(indices))))

    def _batch_shape(self, n: int) -> tuple[int, int, int, int]:
        return (n, len(self.shards.bands), PATCH_PX, PATCH_PX)

    def empty_batch(self, n: int, pin_memory: bool = False) -> torch.Tensor:
        """An uninitialised uint16 batch of ``n`` patches for :meth:`fill` (pinned: from torch's
        caching host allocator; otherwise from the dataset's :class:`BatchMemory`)."""
        if pin_memory:
            return torch.empty(self._batch_shape(n), dtype=torch.uint16, pin_memory=True)
        return self.memory.take(self._batch_shape(n))

    def fill(self, indices: Sequence[int], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The batch of ``indices`` (as :meth:`__getitems__`), its patches copied into ``x``."""
        real = [i if i >= 0 else -1 - i for i in indices]
        out = x.numpy()
        for j, i in enumerate(real):
            # NumPy, not torch: single-threaded and GIL-free in loader threads (a torch op
            # there would start an OpenMP team per thread); a plain copy per sample.
            np.copyto(out[j], self.shards.select_bands(self.shards.view(i)))
        y = torch.from_numpy(self.shards.labels[real].astype(np.float32))
        codes = (torch.from_numpy(self._orientation_codes()[real]) if self.augment
                 else torch.zeros(len(real), dtype=torch.int8))
        return x, y, torch.as_tensor(indices, dtype=torch.int64), codes

    def _orientation_codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = orientations(self.seed, self.epoch, len(self))
        return self._codes


def _shared_batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty uint16 tensor in shared memory, for a DataLoader worker's batch.

    A worker's batch travels to the trainer through shared memory; allocating it there
    directly (as torch's default_collate does, with the same calls) saves one copy of every
    batch.
    """
    storage = torch.empty(0, dtype=torch.uint16)._typed_storage()._new_shared(
        math.prod(shape))
    return torch.empty(0, dtype=torch.uint16).new(storage).view(shape)


def device_batches(batches: Iterable[tuple[torch.Tensor, ...]],
                   device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """The batches of a loader with the next one already on its way to a GPU.

    On CUDA the copy of batch k+1 (from pinned memory, without blocking) is issued on a
    side stream before batch k is handed out, so it overlaps batch k's step; the consumer's
    stream waits for it before using it. Elsewhere the batches pass through unchanged (the
    step moves each one itself).
    """
    if device.type != "cuda":
        yield from batches
        return
    stream = torch.cuda.Stream(device)

    def issue(batch: tuple[torch.Tensor, ...]) -> tuple[Any, ...]:
        x, y, *rest = batch
        with torch.cuda.stream(stream):
            return (x.to(device, non_blocking=True), y.to(device, non_blocking=True), *rest)

    ahead = None
    for batch in batches:
        following = issue(batch)
        if ahead is not None:
            yield _ready(ahead, stream)
        ahead = following
    if ahead is not None:
        yield _ready(ahead, stream)


def _ready(batch: tuple[Any, ...], stream: Any) -> tuple[Any, ...]:
    """Make the current stream wait for ``batch``'s copy, and keep its memory alive for it."""
    current = torch.cuda.current_stream(stream.device)
    current.wait_stream(stream)
    for item in batch[:2]:
        item.record_stream(current)
    return batch


def steps_per_epoch(n: int, batches: BatchSplit, limit: int | None) -> int:
    """Full global batches in ``n`` patches, capped at ``limit``."""
    steps = n // batches.global_batch
    return min(steps, limit) if limit else steps


def train_batches(n: int, batches: BatchSplit, rank: int, world_size: int, seed: int,
                  epoch: int, limit: int | None = None) -> list[list[int]]:
    """This rank's micro-batches (index lists) for ``epoch``, in order (module docstring)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    b, w = batches.per_rank, world_size
    out = []
    for step in range(steps_per_epoch(n, batches, limit)):
        base = step * batches.global_batch
        for acc in range(batches.grad_accumulation):
            start = base + (acc * w + rank) * b
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


def _as_batch(batch: Any) -> Any:
    """collate_fn for datasets whose ``__getitems__`` already returns whole batches."""
    return batch


class ThreadedBatches:
    """The batches of ``dataset`` for ``batches``, in order, made by ``workers`` threads.

    For memory-mapped shards: a batch is memory copies and NumPy arithmetic, which release
    the GIL, so threads overlap with training without the cost of worker processes, whose
    batches travel through freshly allocated shared memory, paid in page faults
    (docs/benchmarks.md, "Loader"). A consumer may keep batches as long as it likes: a
    batch's memory is reused only once nothing refers to it (:class:`BatchMemory`). At most
    ``2 * workers`` batches are in flight.
    """

    def __init__(self, dataset: PatchDataset, batches: list[list[int]], workers: int,
                 pin_memory: bool) -> None:
        """See :func:`loader`."""
        self.dataset, self.batches = dataset, batches
        self.workers, self.pin_memory = workers, pin_memory

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield the batches in order, ``2 * workers`` of them prepared ahead."""
        pending: deque[Future[tuple[torch.Tensor, ...]]] = deque()
        todo = iter(self.batches)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="benscale-loader") as pool:
            try:
                for batch in itertools.islice(todo, 2 * self.workers):
                    pending.append(self._submit(pool, batch))
                while pending:
                    ready = pending.popleft().result()
                    following = next(todo, None)
                    if following is not None:
                        pending.append(self._submit(pool, following))
                    yield ready
            finally:
                for future in pending:
                    future.cancel()

    def _submit(self, pool: ThreadPoolExecutor, batch: list[int]
                ) -> Future[tuple[torch.Tensor, ...]]:
        # The batch tensor is taken here and only filled by the loader thread: unpinned
        # from the dataset's BatchMemory, pinned straight from torch's caching host
        # allocator (no second copy into pinned memory).
        x = self.dataset.empty_batch(len(batch), self.pin_memory)
        return pool.submit(self.dataset.fill, batch, x)


def loader(dataset: PatchDataset, batches: list[list[int]], workers: int,
           pin_memory: bool) -> Iterable[tuple[torch.Tensor, ...]]:
    """The batches of one epoch or evaluation pass (index lists precomputed above).

    ``workers`` 0: made in the training loop itself. Otherwise ``workers`` loader threads
    for memory-mapped (uncompressed) shards, or DataLoader worker processes for compressed
    ones (netCDF4/HDF5 must not be called from several threads, and decompression is the
    work worth spreading over processes).
    """
    if workers > 0 and dataset.shards.memory_mapped:
        return ThreadedBatches(dataset, batches, workers, pin_memory)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=_as_batch,
                      num_workers=workers, pin_memory=pin_memory, persistent_workers=False)
