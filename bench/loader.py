"""Loader: samples/s of benscale's training input pipeline against the memcpy floor.

Shards are written once by ``benscale extract`` from copies of the real v1 samples
(bench.archives) and stay in the page cache. Measured on the train split:

* the training pipeline as ``benscale train`` builds it (``benscale.train.data.loader``:
  PatchDataset batches of normalised float32 tensors with their augmentation draw, for the
  epoch's index batches), one epoch, with 1 worker and with one per core (loader threads
  for the default uncompressed shards, started per epoch as in training; the flips and
  rotations themselves are applied on the training device, outside the loader);
* raw shard reads (``ShardSet.read``: a copy out of the shard's memory map) in sequential
  and in random order;
* the floor: copying the same bytes in memory (NumPy copy of sample-sized blocks from a
  64-sample ring into a batch buffer; float32 bytes for the pipeline, uint16 bytes for raw
  reads), single thread;
* per-epoch cost against torchgeo: a sample from the shards (``PatchDataset[i]``) vs
  torchgeo's ``BigEarthNet[i]``, which re-reads and resamples the 12 GeoTIFFs every epoch.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench.archives import patch_archive
from bench.common import Context, Figure, measure_group, profile_top, rate_figure
from benscale.bigearthnet import BAND_NAMES, PATCH_PX

NAME = "loader"
KEYS = ("loader_1_worker_vs_memcpy", "loader_all_workers_vs_memcpy",
        "shard_read_sequential_vs_memcpy", "shard_read_random_vs_memcpy",
        "shard_sample_vs_torchgeo_sample")
BATCH = 32


def shards(ctx: Context, n: int) -> Path:
    """Extract the benchmark archive once (cached beside it); returns the shards folder."""
    from benscale.cli import main
    from benscale.files.shards import DEFAULT_COMPRESSION

    root = patch_archive(ctx.work / f"patches-{n}", n)
    out = ctx.work / f"shards-{n}-{DEFAULT_COMPRESSION}"
    done = out / ".complete"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        rc = main(["extract", str(root / "index.parquet"), "--out", str(out), "--workers", "1",
                   "--shard-size", str(max(n // 4, 1))])
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


def run(ctx: Context) -> tuple[list[Figure], dict[str, Any]]:
    """Measure the loader figures (module docstring)."""
    from benscale.files.batches import BatchSplit
    from benscale.files.shards import ShardSet
    from benscale.train.data import DatasetOptions, PatchDataset, loader, train_batches

    n = ctx.size(12, 2000)
    data = shards(ctx, n)
    dataset = PatchDataset(data, "train", DatasetOptions(BAND_NAMES, 19, seed=0, augment=True))
    n_train = len(dataset)
    batch = min(BATCH, n_train)
    split = BatchSplit(global_batch=batch, per_rank=batch, grad_accumulation=1)
    workers_all = os.cpu_count() or 1

    def epoch(workers: int) -> Any:
        def run() -> float:
            count = 0
            order = train_batches(n_train, split, rank=0, world_size=1, seed=0, epoch=0)
            for x, *_ in loader(dataset, order, workers, pin_memory=False):
                count += x.shape[0]
            return count
        return run

    raw = ShardSet(data, "train")
    order_random = list(range(n_train))
    random.Random(0).shuffle(order_random)

    def reads(order: list[int]) -> Any:
        def run() -> float:
            for i in order:
                raw.read(i)
            return len(order)
        return run

    tensor_bytes = len(BAND_NAMES) * PATCH_PX * PATCH_PX * 4
    stored_bytes = tensor_bytes // 2
    floor_f32 = memcpy_floor(n_train, tensor_bytes)
    floor_u16 = memcpy_floor(n_train, stored_bytes)
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
                           "floor_f32": floor_f32, "seq": reads(list(range(n_train))),
                           "random": reads(order_random), "floor_u16": floor_u16,
                           "shard_sample": shard_samples, "torchgeo_sample": torchgeo_samples},
                          ctx.repeats, ctx.warmup)
    unit, f32, u16 = "samples/s", "memcpy of the float32 tensors", "memcpy of the uint16 patches"
    figures = [
        rate_figure("loader_1_worker_vs_memcpy", "training loader, 1 worker vs memcpy",
                    rates["epoch_1"], rates["floor_f32"], f32, unit, goal=0.5),
        rate_figure("loader_all_workers_vs_memcpy",
                    f"training loader, {workers_all} workers vs memcpy",
                    rates["epoch_all"], rates["floor_f32"], f32, unit, goal=0.5),
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
               "tensor_bytes_per_sample": tensor_bytes, "stored_bytes_per_sample": stored_bytes,
               "notes": [f"{n_train} train patches (copies of the 3 real v1 samples) in "
                         f"{len(raw.paths)} shard(s), page cache warm; batch {batch}; "
                         "loader threads are started per epoch, as in training, and that "
                         "start-up is part of the loader's time."]}
    if not ctx.quick:
        details["profile_patchdataset_items"] = profile_top(shard_samples)
    raw.close()
    return figures, details


def _torchgeo_dataset(root: Path) -> Any:
    from bench.extract import torchgeo_dataset

    return torchgeo_dataset(root)
