"""Which patches go into which shard, and which shards are already done.

Shard ``k`` of a split always holds the same planned patches: the index sorted by split and
patch_id (:func:`benscale.files.index.read_index`), cut every ``shard_size`` rows. A shard
on disk whose receipt matches its plan is kept by a re-run; the others are redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import netCDF4
import pandas as pd

from benscale.bigearthnet import SPLITS
from benscale.files.shards import ShardReceipt, shard_name


@dataclass(frozen=True)
class ExtractOptions:
    """What ``benscale extract`` was asked to do."""

    index: Path
    out: Path
    shard_size: int
    workers: int
    resampling: str
    compression: str
    strict: bool


@dataclass(frozen=True)
class ShardPlan:
    """The patches planned for one shard: fixed by the sorted index and the shard size."""

    split: str
    number: int
    patch_ids: tuple[str, ...]
    folders: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    source_format: str
    #: The original 43-class labels per patch (v1 indexes), else None.
    labels43: tuple[tuple[str, ...], ...] | None = None

    @property
    def rel_path(self) -> str:
        """The shard's path relative to the output folder: ``train/shard-00000.nc``."""
        return f"{self.split}/{shard_name(self.number)}"

    def nc_path(self, out: Path) -> Path:
        """Where the shard file goes."""
        return out / self.rel_path

    def receipt_path(self, out: Path) -> Path:
        """Where the shard's receipt goes: beside it, ``shard-00000.json``."""
        return self.nc_path(out).with_suffix(".json")


def plan_shards(index: pd.DataFrame, shard_size: int) -> list[ShardPlan]:
    """Cut each split of the sorted index into consecutive shards of ``shard_size`` rows."""
    plans: list[ShardPlan] = []
    formats = index["format"] if "format" in index.columns else pd.Series("unknown",
                                                                          index=index.index)
    with43 = "labels43" in index.columns and bool(index["labels43"].notna().all())
    for split in SPLITS:
        rows = index[index["split"] == split]
        for number, start in enumerate(range(0, len(rows), shard_size)):
            chunk = rows.iloc[start:start + shard_size]
            fmt = ",".join(sorted(set(formats.loc[chunk.index].astype(str))))
            plans.append(ShardPlan(
                split=split, number=number,
                patch_ids=tuple(str(p) for p in chunk["patch_id"]),
                folders=tuple(str(p) for p in chunk["path"]),
                labels=_label_tuples(chunk["labels"]),
                labels43=_label_tuples(chunk["labels43"]) if with43 else None,
                source_format=fmt))
    return plans


def _label_tuples(column: pd.Series) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(c) for c in ([] if labels is None else labels)) for labels in column)


def remove_strays(out: Path, plans: list[ShardPlan]) -> list[str]:
    """Delete temporary files of a crashed run and shards no longer in the plan.

    Only files named like ours are touched: ``.shard-*.tmp`` and ``shard-*.nc/json``.
    """
    planned = {p.rel_path for p in plans} | {p.rel_path[:-3] + ".json" for p in plans}
    removed: list[str] = []
    for split in SPLITS:
        folder = out / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(".shard-*.tmp")) + sorted(folder.glob("shard-*.*")):
            rel = f"{split}/{path.name}"
            if path.name.startswith(".") or (path.suffix in (".nc", ".json")
                                             and rel not in planned):
                path.unlink()
                removed.append(rel)
    return removed


def partition_done(plans: list[ShardPlan],
                   opts: ExtractOptions) -> tuple[list[ShardReceipt], list[ShardPlan]]:
    """Split the plans into (receipts of shards already complete, plans still to do)."""
    done: list[ShardReceipt] = []
    todo: list[ShardPlan] = []
    for plan in plans:
        receipt = completed_receipt(plan, opts)
        if receipt is None:
            todo.append(plan)
        else:
            done.append(receipt)
    return done, todo


def completed_receipt(plan: ShardPlan, opts: ExtractOptions) -> ShardReceipt | None:
    """The shard's receipt if the shard on disk is complete and matches ``plan``, else None.

    Checks: receipt readable, same planned patch ids, resampling and compression, shard
    file of the recorded size holding exactly the recorded patch ids. (The checksum is not
    re-hashed: that would read every byte again; the manifest has it for ``sha256sum``.)
    """
    receipt = ShardReceipt.read(plan.receipt_path(opts.out))
    if receipt is None:
        return None
    if (receipt.planned != plan.patch_ids or receipt.resampling != opts.resampling
            or receipt.compression != opts.compression
            or receipt.labels43 != (plan.labels43 is not None)):
        return None
    if not receipt.patch_ids:
        return receipt  # every planned patch was rejected: no shard file by design
    nc_path = plan.nc_path(opts.out)
    try:
        if nc_path.stat().st_size != receipt.size_bytes:
            return None
        with netCDF4.Dataset(nc_path, "r") as nc:
            stored = tuple(str(p) for p in nc.variables["patch_id"][:])
    except (OSError, KeyError):
        return None
    return receipt if stored == receipt.patch_ids else None
