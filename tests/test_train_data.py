"""The training input pipeline (benscale.train.data) on real extracted shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from benscale.bigearthnet import BAND_NAMES, BAND_SETS
from benscale.files.batches import BatchSplit
from benscale.files.shards import BandStats
from benscale.train.data import (
    ORIENTATIONS,
    BatchMemory,
    DatasetOptions,
    Normalisation,
    PatchDataset,
    device_batches,
    eval_batches,
    loader,
    orient_batch,
    orientations,
    train_batches,
)

CPU = torch.device("cpu")


def dataset(shards: Path, split: str, bands: tuple[str, ...] = BAND_NAMES, seed: int = 0,
            augment: bool = False) -> PatchDataset:
    return PatchDataset(shards, split, DatasetOptions(bands, 19, seed, augment))


def _split_arrays(shards: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance and labels of a split, read with xarray (independent of the reader)."""
    refl, labels = [], []
    for path in sorted((shards / split).glob("shard-*.nc")):
        with xr.open_dataset(path) as ds:
            refl.append(ds["reflectance"].values)
            labels.append(ds["labels"].values)
    return np.concatenate(refl), np.concatenate(labels)


def _normalised(raw: np.ndarray, shards: Path, bands: tuple[str, ...]) -> np.ndarray:
    stats = BandStats.read(shards)
    mean = np.array([stats.bands[b].mean for b in bands])[:, None, None]
    std = np.array([stats.bands[b].std for b in bands])[:, None, None]
    return (raw.astype(np.float64) - mean) / std


@pytest.mark.parametrize("bands", ["s2-12", "s2-10"])
def test_items_are_stored_patches_normalised_on_the_device(tiny_shards: Path,
                                                           bands: str) -> None:
    names = BAND_SETS[bands]
    refl, labels = _split_arrays(tiny_shards, "train")
    wanted = refl[:, [BAND_NAMES.index(b) for b in names]]
    data = dataset(tiny_shards, "train", names, seed=3, augment=True)
    x, y, index, codes = data.__getitems__([5, 0, 17])
    assert x.dtype == torch.uint16 and x.shape == (3, len(names), 120, 120)
    np.testing.assert_array_equal(x.numpy(), wanted[[5, 0, 17]])  # as stored
    normalised = Normalisation.of(tiny_shards, names, CPU)(x)
    assert normalised.dtype == torch.float32
    np.testing.assert_allclose(normalised.numpy(),
                               _normalised(wanted[[5, 0, 17]], tiny_shards, names),
                               rtol=0, atol=2e-5)
    np.testing.assert_array_equal(y.numpy(), labels[[5, 0, 17]].astype(np.float32))
    assert index.tolist() == [5, 0, 17]
    np.testing.assert_array_equal(codes.numpy(), orientations(3, 0, len(data))[[5, 0, 17]])


def test_device_normalisation_is_bit_identical_to_the_host_one(tiny_shards: Path) -> None:
    """The host-side normalisation this replaced (NumPy, per sample, in the loader) and the
    device-side one (torch, per batch) give the same bits: same float32 operations in the
    same order, multiply then add, no fused multiply-add."""
    data = dataset(tiny_shards, "train")
    x = data.__getitems__(list(range(16)))[0]
    mean, std = BandStats.read(tiny_shards).normalisation(BAND_NAMES)
    scale, shift = (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)
    host = np.empty(x.shape, dtype=np.float32)
    for j, sample in enumerate(x.numpy()):
        np.copyto(host[j], sample, casting="unsafe")
        host[j] *= scale
        host[j] += shift
    device = Normalisation.of(tiny_shards, BAND_NAMES, CPU)(x)
    assert np.array_equal(device.numpy(), host)


def test_zlib_shards_through_worker_processes(tmp_path: Path, tiny_shards: Path) -> None:
    """Compressed shards go through DataLoader worker processes (netCDF4 is not thread
    safe): the uint16 batches arrive through shared memory unchanged."""
    from conftest import run_cli

    index = tiny_shards.parent / "index" / "index.parquet"
    zlib = tmp_path / "zlib"
    run_cli("extract", index, "--out", zlib, "--shard-size", 64, "--compression", "zlib")
    plain, packed = dataset(tiny_shards, "train"), dataset(zlib, "train")
    assert not packed.shards.memory_mapped
    order = train_batches(len(packed), BatchSplit(8, 8, 1), rank=0, world_size=1, seed=0,
                          epoch=1, limit=3)
    via_workers = list(loader(packed, order, workers=2, pin_memory=False))
    assert len(via_workers) == 3
    for got, batch in zip(via_workers, order, strict=True):
        want = plain.__getitems__(batch)
        assert got[0].dtype == torch.uint16 and torch.equal(got[0], want[0])


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device: the pinned-memory, non-blocking copy path runs "
                           "only where CUDA is (the GPU acceptance run exercises it)")
def test_pinned_batches_reach_the_gpu_ahead_and_equal(tiny_shards: Path) -> None:
    device = torch.device("cuda", 0)
    data = dataset(tiny_shards, "train")
    order = train_batches(len(data), BatchSplit(8, 8, 1), rank=0, world_size=1, seed=0,
                          epoch=1, limit=3)
    host = [data.__getitems__(b) for b in order]
    norm = Normalisation.of(tiny_shards, BAND_NAMES, device)
    for got, want in zip(device_batches(loader(data, order, workers=2, pin_memory=True),
                                        device), host, strict=True):
        assert got[0].is_cuda and got[0].dtype == torch.uint16
        assert torch.equal(got[0].cpu(), want[0])
        cpu_norm = Normalisation.of(tiny_shards, BAND_NAMES, CPU)(want[0])
        torch.testing.assert_close(norm(got[0]).cpu(), cpu_norm, rtol=0, atol=1e-6)


def test_worker_batches_equal_in_process_batches(tiny_shards: Path) -> None:
    """Through a worker process (shared-memory batches) nothing changes but the route."""
    data = dataset(tiny_shards, "train", augment=True)
    data.set_epoch(2)
    batches = train_batches(len(data), BatchSplit(8, 8, 1), rank=0, world_size=1, seed=0,
                            epoch=2, limit=3)
    direct = [data.__getitems__(b) for b in batches]
    via_worker = list(loader(data, batches, workers=1, pin_memory=False))
    assert len(via_worker) == 3
    for got, want in zip(via_worker, direct, strict=True):
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)


def test_orientations_fixed_by_seed_and_epoch() -> None:
    a = orientations(0, 1, 1000)
    assert np.array_equal(a, orientations(0, 1, 1000))
    assert not np.array_equal(a, orientations(0, 2, 1000))
    assert not np.array_equal(a, orientations(1, 1, 1000))
    assert set(a.tolist()) == set(range(ORIENTATIONS))


def test_orient_batch_is_flip_then_quarter_turns() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    for code in range(ORIENTATIONS):
        codes = torch.tensor([code, 0], dtype=torch.int8)
        got = orient_batch(x, codes)
        ref = x[0].numpy()
        if code >= 4:
            ref = ref[:, :, ::-1]
        ref = np.rot90(ref, code % 4, axes=(1, 2))
        np.testing.assert_array_equal(got[0].numpy(), ref)
        assert torch.equal(got[1], x[1])
    assert len({orient_batch(x, torch.tensor([c, 0], dtype=torch.int8))[0].numpy().tobytes()
                for c in range(ORIENTATIONS)}) == ORIENTATIONS  # 8 distinct images


def test_evaluation_padding_keeps_every_patch_once(tiny_shards: Path) -> None:
    data = dataset(tiny_shards, "test")
    n, world = len(data), 3
    seen: list[int] = []
    for rank in range(world):
        for batch in eval_batches(n, rank, world, batch=4):
            x, _, index, _ = data.__getitems__(batch)
            for row, i in zip(x, index.tolist(), strict=True):
                if i < 0:  # padding: a real patch's values under a negative index
                    assert torch.equal(row, data[-1 - i][0])
                else:
                    seen.append(i)
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("holder", ["tensor", "view", "numpy", "clone"])
def test_batch_memory_reuses_a_batch_only_once_nothing_refers_to_it(holder: str) -> None:
    """A buffer comes back only after every tensor, view and NumPy view of its batch has
    died; until then the next batch gets other memory and the held one keeps its values."""
    memory = BatchMemory()
    shape = (2, 3, 4)
    first = memory.take(shape)
    first.fill_(7)
    address = first.data_ptr()
    views = {"tensor": first, "view": first[1:], "numpy": first.numpy(),
             "clone": first.clone()}
    kept = views.pop(holder)
    del first, views
    second = memory.take(shape)
    second.fill_(9)
    if holder == "clone":
        assert second.data_ptr() == address
    else:
        assert second.data_ptr() != address
        assert set(np.asarray(kept).ravel().tolist()) == {7}
    del kept, second
    assert memory.take(shape).data_ptr() == address
    assert len(memory.buffers) == (1 if holder == "clone" else 2)


def test_batch_memory_keeps_at_most_its_limit_and_starts_empty_elsewhere() -> None:
    import pickle

    memory = BatchMemory(limit=1)
    held = [memory.take((4,)), memory.take((4,)), memory.take((5,))]
    assert [tuple(t.shape) for t in held] == [(4,), (4,), (5,)]
    assert len({t.data_ptr() for t in held}) == 3 and len(memory.buffers) == 1
    copy = pickle.loads(pickle.dumps(memory))
    assert copy.limit == 1 and copy.buffers == []


def test_loader_reuses_the_memory_of_consumed_batches(tiny_shards: Path) -> None:
    """An epoch whose batches are dropped as they are consumed runs in a few reused
    buffers (at most the batches in flight and the one in hand), with the same contents
    as batches read one by one."""
    data, fresh = dataset(tiny_shards, "train", augment=True), dataset(tiny_shards, "train")
    order = train_batches(len(data), BatchSplit(4, 4, 1), rank=0, world_size=1, seed=0,
                          epoch=0)
    assert len(order) >= 8
    addresses = set()
    for _ in range(2):
        for (x, *_), batch in zip(loader(data, order, workers=2, pin_memory=False), order,
                                  strict=True):
            assert torch.equal(x, fresh.__getitems__(batch)[0].clone())
            addresses.add(x.data_ptr())
    assert len(addresses) == len(data.memory.buffers) <= 2 * 2 + 2
