"""Loader: samples/s of benscale's training input pipeline against the memcpy floor.

Shards are written once by ``benscale extract`` from copies of the real v1 samples
(bench.archives) and stay in the page cache. Measured on the train split:

* the loader as ``benscale train`` builds it (``benscale.train.data.loader``: PatchDataset
  batches of uint16 patches as stored, with their augmentation draw, for the epoch's index
  batches), five epochs per timing, with 1 worker and with one per core (loader threads
  for the default uncompressed shards, started per epoch as in training);
* the whole input path on the CPU: that loader plus the conversion and normalisation on
  the "device" (``benscale.train.data.Normalisation``, here the CPU, batch by batch), against
  the loader it replaced, which converted and normalised each patch to float32 on the host
  inside the loader threads (rebuilt here as :class:`HostNormalisingDataset`); and the
  input path's ceiling on this device: the normalisation alone, on uint16 batches already
  in memory, and composed with the loader alone (each with all cores, one after the
  other: ``1 / (1/loader + 1/normalisation)``);
* raw shard reads (``ShardSet.read``: a copy out of the shard's memory map) in sequential
  and in random order;
* the floor: copying the same uint16 bytes in memory (NumPy copy of sample-sized blocks
  from a 64-sample ring into a batch buffer), single thread;
* per-epoch cost against torchgeo: a sample from the shards (``PatchDataset[i]``) vs
  torchgeo's ``BigEarthNet[i]``, which re-reads and resamples the 12 GeoTIFFs every epoch.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench.archives import patch_archive
from bench.common import BenchFigure, Context, measure_group, profile_top, rate_figure
from benscale.bigearthnet import BAND_NAMES, PATCH_PX

NAME = "loader"
KEYS = ("loader_1_worker_vs_memcpy", "loader_all_workers_vs_memcpy",
        "input_path_vs_host_normalising_loader",
        "device_normalisation_vs_host_normalising_loader",
        "input_path_ceiling_vs_host_normalising_loader",
        "shard_read_sequential_vs_memcpy", "shard_read_random_vs_memcpy",
        "shard_sample_vs_torchgeo_sample")
BATCH = 32
#: Epochs per timed run: one epoch of 1,600 patches is ~0.1 s, short enough for a VM's
#: noise to decide a single timing.
PASSES = 5


def shards(ctx: Context, n: int, workers: int = 1) -> Path:
    """Extract the benchmark archive of ``n`` patches once, with ``workers`` processes
    (cached beside it); returns the shards folder."""
    from benscale.cli import main
    from benscale.files.shards import DEFAULT_COMPRESSION

    root = patch_archive(ctx.work / f"patches-{n}", n)
    out = ctx.work / f"shards-{n}-{DEFAULT_COMPRESSION}"
    done = out / ".complete"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        rc = main(["extract", str(root / "index.parquet"), "--out", str(out),
                   "--workers", str(workers), "--shard-size", str(max(n // 4, 1))])
        if rc != 0:
            raise RuntimeError(f"benscale extract exited {rc}")
        done.write_text("ok")
    return out


def memcpy_floor(n: int, sample_bytes: int) -> Any:
    """A workload copying ``n`` samples of ``sample_bytes`` into a batch buffer."""
    ring = np.random.default_rng(0).integers(0, 255, (64, sample_bytes), dtype=np.uint8)
    batch = np.empty((BATCH, sample_bytes), dtype=np.uint8)

    def run() -> float:
        for i in range(n):
            np.copyto(batch[i % BATCH], ring[i % 64])
        return n

    return run


class HostNormalisingDataset:
    """The loader's dataset before the input path moved to the device: each patch converted
    to float32 and normalised on the host, in the loader threads (NumPy, per sample)."""

    def __init__(self, root: Path, seed: int) -> None:
        """The train split's shards and statistics, as the old PatchDataset read them."""
        import torch

        from benscale.files.shards import BandStats, ShardSet
        from benscale.train.data import orientations

        self.torch = torch
        self.shards = ShardSet(root, "train")
        mean, std = BandStats.read(root).normalisation(BAND_NAMES)
        self.scale = (1.0 / std).astype(np.float32)
        self.shift = (-mean / std).astype(np.float32)
        self.codes = orientations(seed, 0, len(self.shards))

    def __len__(self) -> int:
        """Patches in the split."""
        return len(self.shards)

    def empty_batch(self, n: int, pin_memory: bool = False) -> Any:
        """An uninitialised float32 batch (allocated by the consumer, as benscale's)."""
        return self.torch.empty((n, len(BAND_NAMES), PATCH_PX, PATCH_PX), pin_memory=pin_memory)

    def fill(self, indices: list[int], x: Any) -> tuple[Any, ...]:
        """A normalised float32 batch in ``x``, labels, indices and orientation codes."""
        torch = self.torch
        out = x.numpy()
        for j, i in enumerate(indices):
            np.copyto(out[j], self.shards.view(i), casting="unsafe")
            out[j] *= self.scale
            out[j] += self.shift
        y = torch.from_numpy(self.shards.labels[indices].astype(np.float32))
        return x, y, torch.as_tensor(indices), torch.from_numpy(self.codes[indices])


def run(ctx: Context) -> tuple[list[BenchFigure], dict[str, Any]]:
    """Measure the loader figures (module docstring)."""
    import torch

    from benscale.files.batches import BatchSplit
    from benscale.files.shards import ShardSet
    from benscale.train.data import (
        DatasetOptions,
        Normalisation,
        PatchDataset,
        ThreadedBatches,
        loader,
        train_batches,
    )

    n = ctx.size(12, 2000)
    data = shards(ctx, n)
    dataset = PatchDataset(data, "train", DatasetOptions(BAND_NAMES, 19, seed=0, augment=True))
    previous = HostNormalisingDataset(data, seed=0)
    normalise = Normalisation.of(data, BAND_NAMES, torch.device("cpu"))
    n_train = len(dataset)
    batch = min(BATCH, n_train)
    split = BatchSplit(global_batch=batch, per_rank=batch, grad_accumulation=1)
    order = train_batches(n_train, split, rank=0, world_size=1, seed=0, epoch=0)
    workers_all = os.cpu_count() or 1

    passes = ctx.size(1, PASSES)

    def epoch(workers: int, on_device: bool = False) -> Any:
        def run() -> float:
            count = 0
            for _ in range(passes):
                for x, *_ in loader(dataset, order, workers, pin_memory=False):
                    if on_device:
                        x = normalise(x)
                    count += x.shape[0]
            return count
        return run

    ring = [x.clone() for x, *_ in itertools.islice(loader(dataset, order, 1, False), 8)]

    def normalisation_alone() -> float:
        count = 0
        for _ in range(passes):
            for i in range(len(order)):
                count += normalise(ring[i % len(ring)]).shape[0]
        return count

    def previous_epoch() -> float:
        count = 0
        for _ in range(passes):
            for x, *_ in ThreadedBatches(previous, order, workers_all, pin_memory=False):
                count += x.shape[0]
        return count

    raw = ShardSet(data, "train")
    order_random = list(range(n_train))
    random.Random(0).shuffle(order_random)

    def reads(indices: list[int]) -> Any:
        def run() -> float:
            for _ in range(passes):
                for i in indices:
                    raw.read(i)
            return passes * len(indices)
        return run

    stored_bytes = len(BAND_NAMES) * PATCH_PX * PATCH_PX * 2
    floor_u16 = memcpy_floor(passes * n_train, stored_bytes)
    torchgeo = _torchgeo_dataset(ctx.work / f"patches-{n}")
    n_cmp = min(n_train, ctx.size(12, 200))

    def shard_samples() -> float:
        for i in range(n_cmp):
            dataset[i]
        return n_cmp

    def torchgeo_samples() -> float:
        for i in range(n_cmp):
            torchgeo[i]
        return n_cmp

    rates = measure_group({"epoch_1": epoch(1), "epoch_all": epoch(workers_all),
                           "input_path": epoch(workers_all, on_device=True),
                           "normalisation": normalisation_alone,
                           "previous": previous_epoch, "floor_u16": floor_u16,
                           "seq": reads(list(range(n_train))), "random": reads(order_random),
                           "shard_sample": shard_samples, "torchgeo_sample": torchgeo_samples},
                          ctx.repeats, ctx.warmup)
    unit, u16 = "samples/s", "memcpy of the same uint16 bytes"
    host_normalising = "host-normalising loader (float32 per sample in the loader threads)"
    ceiling = [1.0 / (1.0 / a + 1.0 / b)
               for a, b in zip(rates["epoch_all"], rates["normalisation"], strict=True)]
    figures = [
        rate_figure("loader_1_worker_vs_memcpy", "training loader (uint16 batches), 1 worker "
                    "vs memcpy", rates["epoch_1"], rates["floor_u16"], u16, unit),
        rate_figure("loader_all_workers_vs_memcpy",
                    f"training loader (uint16 batches), {workers_all} workers vs memcpy",
                    rates["epoch_all"], rates["floor_u16"], u16, unit, goal=0.6),
        rate_figure("input_path_vs_host_normalising_loader",
                    f"input path on the CPU (loader + normalisation on the device), "
                    f"{workers_all} workers vs the host-normalising loader it replaced",
                    rates["input_path"], rates["previous"], host_normalising, unit, goal=1.5),
        rate_figure("device_normalisation_vs_host_normalising_loader",
                    "normalisation on the device (the CPU, all cores) alone, uint16 batches "
                    "already in memory, vs the host-normalising loader",
                    rates["normalisation"], rates["previous"], host_normalising, unit,
                    note="the device half of the input path by itself, with no loader"),
        rate_figure("input_path_ceiling_vs_host_normalising_loader",
                    f"input path ceiling on the CPU: loader ({workers_all} workers) and "
                    "normalisation each alone, one after the other, vs the host-normalising "
                    "loader", ceiling, rates["previous"], host_normalising, unit,
                    note="1 / (1/loader + 1/normalisation) per repeat: both parts one after "
                         "the other, each with every core; running them at once gains only "
                         "what either leaves idle"),
        rate_figure("shard_read_sequential_vs_memcpy", "shard read, sequential vs memcpy",
                    rates["seq"], rates["floor_u16"], u16, unit),
        rate_figure("shard_read_random_vs_memcpy", "shard read, random order vs memcpy",
                    rates["random"], rates["floor_u16"], u16, unit),
        rate_figure("shard_sample_vs_torchgeo_sample",
                    "one training sample: shards (PatchDataset[i]) vs torchgeo dataset[i]",
                    rates["shard_sample"], rates["torchgeo_sample"], "torchgeo dataset[i]",
                    unit, note="the per-epoch read cost; both in-process, no workers"),
    ]
    details = {"train_patches": n_train, "batch": batch, "workers_all": workers_all,
               "stored_bytes_per_sample": stored_bytes,
               "torch_threads": torch.get_num_threads(),
               "notes": [f"{n_train} train patches (copies of the 3 real v1 samples) in "
                         f"{len(raw.paths)} shard(s), page cache warm; batch {batch}; "
                         "loader threads are started per epoch, as in training, and that "
                         "start-up is part of the loader's time; the normalisation on the "
                         "CPU runs with torch's intra-op threads."]}
    if not ctx.quick:
        details["profile_patchdataset_items"] = profile_top(shard_samples)
    raw.close()
    return figures, details


def _torchgeo_dataset(root: Path) -> Any:
    from bench.extract import torchgeo_dataset

    return torchgeo_dataset(root)
