"""The shard format: the netCDF4 shards, their manifest, band statistics and receipts.

``benscale extract`` writes these files, the training stage reads them
(docs/architecture.md, section 3; docs/shards.md for the layout choices). A shard is one
netCDF4 file ``DIR/<split>/shard-NNNNN.nc`` holding up to ``shard_size`` patches:

* ``reflectance(patch, band, y, x)`` uint16, stored either uncompressed and contiguous
  (``--compression none``, the default: reading a patch is a plain read of 345,600
  bytes) or one zlib + shuffle chunk per patch (``--compression zlib``: smaller, dearer to
  read); never a whole shard per read either way;
* ``labels(patch, class)`` uint8 multi-hot in the ORIGINAL 19-class order;
* coordinates ``patch_id``, ``band`` (+ ``wavelength_nm``, ``resolution_m``), ``class``.

:func:`shard_dataset` + :func:`write_shard` define the file; :class:`ShardSet` reads it
back. ``DIR/manifest.json`` (:class:`Manifest`) lists the shards of each split in order;
a patch's global index in a split is its position in that concatenation.
``DIR/stats.json`` (:class:`BandStats`) holds the train split's per-band statistics, and
each shard has a receipt ``shard-NNNNN.json`` (:class:`ShardReceipt`) beside it.

The reader does not go through xarray: per-sample reads are on the hot path of training.
An uncompressed shard is memory-mapped at the byte offset HDF5 reports for
``reflectance`` (h5py), so a patch costs one copy out of the page cache; a compressed one
is read chunk by chunk through netCDF4.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import rasterio
import xarray as xr

from benscale import __version__
from benscale.atomic import atomic_path, write_json
from benscale.bigearthnet import BAND_NAMES, BANDS, PATCH_PX, label_tables
from benscale.errors import DataError
from benscale.typed import to_mapping

#: File names inside the extraction folder (docs/architecture.md, section 3).
MANIFEST_NAME = "manifest.json"
STATS_NAME = "stats.json"
REPORT_NAME = "extract-report.json"

#: The zlib layout: one HDF5 chunk per patch (random access decompresses one chunk only).
ZLIB_CHUNK: tuple[int, int, int, int] = (1, len(BAND_NAMES), PATCH_PX, PATCH_PX)
#: zlib level: higher levels gain little in size and write much slower (docs/shards.md).
ZLIB_LEVEL = 1
#: Byte shuffle before zlib: uint16 high bytes compress far better when grouped.
SHUFFLE = True


@dataclass(frozen=True)
class ShardLayout:
    """How ``reflectance`` is stored: its xarray/netCDF4 ``encoding``, and the ``record``
    of that choice the manifest keeps as ``layout``."""

    encoding: dict[str, Any]
    record: dict[str, Any]

    @property
    def memory_mappable(self) -> bool:
        """Whether a reader may map the raw bytes (uncompressed and contiguous)."""
        return self.record["compression"] == "none"


#: ``--compression`` -> its :class:`ShardLayout`, chosen by measurement (docs/shards.md,
#: bench/shard_layout.py): ``none`` is contiguous and uncompressed (fastest to write and to
#: read, sequentially or at random), ``zlib`` one zlib + shuffle chunk per patch. No
#: ``_FillValue``: 0 and 65535 are valid raw values and netCDF4-python would otherwise mask
#: 65535 on read.
SHARD_LAYOUTS: dict[str, ShardLayout] = {
    "none": ShardLayout(encoding={"contiguous": True, "_FillValue": None},
                        record={"compression": "none", "chunk": None}),
    "zlib": ShardLayout(encoding={"zlib": True, "complevel": ZLIB_LEVEL, "shuffle": SHUFFLE,
                                  "chunksizes": ZLIB_CHUNK, "_FillValue": None},
                        record={"compression": "zlib", "chunk": list(ZLIB_CHUNK),
                                "complevel": ZLIB_LEVEL, "shuffle": SHUFFLE}),
}
COMPRESSIONS: tuple[str, ...] = tuple(SHARD_LAYOUTS)
DEFAULT_COMPRESSION = "none"
#: num_classes -> (label variable of a shard, its class list in the manifest).
LABEL_SETS: dict[int, tuple[str, str]] = {19: ("labels", "classes"),
                                          43: ("labels43", "classes43")}
#: On-disk dtype of ``reflectance`` (little-endian uint16, as the GeoTIFFs).
REFLECTANCE_DTYPE = np.dtype("<u2")


def shard_name(number: int) -> str:
    """The file name of shard ``number`` of a split: ``shard-00042.nc``."""
    return f"shard-{number:05d}.nc"


def labels_encoding(n_patches: int, n_classes: int) -> dict[str, Any]:
    """Encoding of ``labels``: one chunk for the whole shard (read once, at start-up)."""
    return {"zlib": True, "complevel": ZLIB_LEVEL, "shuffle": False,
            "chunksizes": (max(n_patches, 1), n_classes), "_FillValue": None}


# --------------------------------------------------------------------------- shard files
@dataclass(frozen=True)
class ShardInfo:
    """Where a shard belongs and how it was made (its global attributes)."""

    split: str
    number: int
    resampling: str
    source_format: str


def shard_dataset(ids: list[str], reflectance: np.ndarray, labels: np.ndarray,
                  info: ShardInfo, labels43: np.ndarray | None = None) -> xr.Dataset:
    """The shard as an xarray Dataset with CF-style attributes.

    Args:
        ids: patch ids, one per row of ``reflectance`` and ``labels``.
        reflectance: uint16 (patch, 12, 120, 120), bands in BAND_NAMES order.
        labels: uint8 (patch, 19) multi-hot, original class order.
        info: where the shard belongs and how it was made.
        labels43: uint8 (patch, 43) multi-hot over the original CORINE labels (v1 only).
    """
    classes = label_tables().classes19
    coords = {
        "patch_id": ("patch", np.array(ids, dtype=object),
                     {"long_name": "BigEarthNet patch name (v1 folder name or v2 patch_id)"}),
        "band": ("band", np.array(BAND_NAMES, dtype=object),
                 {"long_name": "Sentinel-2 L2A band"}),
        "wavelength_nm": ("band", np.array([b.wavelength_nm for b in BANDS], dtype=np.int16),
                          {"long_name": "central wavelength", "units": "nm"}),
        "resolution_m": ("band", np.array([b.resolution_m for b in BANDS], dtype=np.int16),
                         {"long_name": "native ground sampling distance", "units": "m"}),
        "class": ("class", np.array(classes, dtype=object),
                  {"long_name": "BigEarthNet 19-class nomenclature, original order"}),
    }
    data_vars = {
        "reflectance": (("patch", "band", "y", "x"), reflectance, {
            "long_name": "Sentinel-2 L2A bottom-of-atmosphere reflectance x 10000",
            "standard_name": "surface_bidirectional_reflectance",
            "units": "1", "quantification_value": 10000,
            "comment": "raw digital numbers as in the GeoTIFFs; divide by "
                       "quantification_value for reflectance"}),
        "labels": (("patch", "class"), labels, _multi_hot_attrs("multi-hot 19-class labels")),
    }
    if labels43 is not None:
        coords["class43"] = ("class43", np.array(label_tables().labels43, dtype=object),
                             {"long_name": "BigEarthNet 43 CORINE level-3 labels (v1)"})
        data_vars["labels43"] = (("patch", "class43"), labels43,
                                 _multi_hot_attrs("multi-hot 43-class labels"))
    attrs = {
        "Conventions": "CF-1.10",
        "title": f"BigEarthNet Sentinel-2 patches, {info.split} split, shard {info.number}",
        "source": f"BigEarthNet Sentinel-2 L2A GeoTIFFs (format {info.source_format}), read "
                  f"with rasterio {rasterio.__version__} / GDAL {rasterio.__gdal_version__}",
        "resampling": f"{info.resampling}: 20 m and 60 m bands to {PATCH_PX}x{PATCH_PX} px "
                      "with rasterio out_shape; 10 m bands as stored",
        "benscale_version": __version__,
        "split": info.split,
        "shard_number": info.number,
        "references": "benscale docs/architecture.md section 3, docs/shards.md",
    }
    return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)


def _multi_hot_attrs(long_name: str) -> dict[str, Any]:
    return {"long_name": long_name, "units": "1", "flag_values": np.array([0, 1], dtype=np.uint8),
            "flag_meanings": "absent present"}


@dataclass(frozen=True)
class WrittenFile:
    """A file as written: its checksum and size."""

    sha256: str
    size_bytes: int


def write_shard(dataset: xr.Dataset, target: Path, compression: str) -> WrittenFile:
    """Write ``dataset`` to ``target`` via a temporary file; return its size and sha256."""
    encoding = {"reflectance": SHARD_LAYOUTS[compression].encoding,
                "labels": labels_encoding(dataset.sizes["patch"], dataset.sizes["class"])}
    if "labels43" in dataset:
        encoding["labels43"] = labels_encoding(dataset.sizes["patch"], dataset.sizes["class43"])
    with atomic_path(target) as tmp:
        dataset.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
        written = WrittenFile(sha256_file(tmp), tmp.stat().st_size)
    return written


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- receipts
@dataclass(frozen=True)
class Rejection:
    """A patch left out of a shard: which, the file at fault, and why."""

    patch_id: str
    split: str
    path: str
    problem: str


@dataclass(frozen=True)
class ShardReceipt:
    """What went into one shard (``shard-NNNNN.json`` beside it): the plan it fulfils, the
    patches kept and rejected, the file's checksum, and exact integer band sums.

    The band sums (Python ints, any size) let statistics be merged from any set of shards
    without rounding, so a resumed extraction gives the same stats.json as one pass.
    """

    split: str
    number: int
    path: str | None
    resampling: str
    compression: str
    labels43: bool
    planned: tuple[str, ...]
    patch_ids: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    n_patches: int
    sha256: str | None
    size_bytes: int
    band_sum: tuple[int, ...]
    band_sumsq: tuple[int, ...]
    pixels_per_band: int

    def to_json(self) -> dict[str, Any]:
        """The receipt as written to disk."""
        return to_mapping(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ShardReceipt:
        """A receipt read back (raises KeyError/TypeError on a foreign file)."""
        return cls(**{**doc, "planned": tuple(doc["planned"]),
                      "patch_ids": tuple(doc["patch_ids"]),
                      "rejected": tuple(Rejection(**r) for r in doc["rejected"]),
                      "band_sum": tuple(doc["band_sum"]),
                      "band_sumsq": tuple(doc["band_sumsq"])})

    def write(self, target: Path) -> None:
        """Write the receipt atomically."""
        write_json(target, self.to_json())

    @classmethod
    def read(cls, path: Path) -> ShardReceipt | None:
        """The receipt at ``path``, or None when it is missing or not a receipt."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None


# --------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class ShardEntry:
    """One shard of a split in the manifest."""

    path: str
    n_patches: int
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class SplitEntry:
    """The shards of one split, in order."""

    n_patches: int
    shards: tuple[ShardEntry, ...]


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what the shards hold and where they are.

    Attributes:
        benscale_version: the version that wrote them.
        bands: band names in storage order.
        classes: the 19 classes, original order.
        classes43: the 43 CORINE labels, for v1 archives only (else None: absent).
        resampling: ``bilinear`` or ``nearest``.
        shard_size: planned patches per shard.
        layout: the :class:`ShardLayout` record of ``reflectance``.
        splits: split name -> its shards.
    """

    benscale_version: str
    bands: tuple[str, ...]
    classes: tuple[str, ...]
    classes43: tuple[str, ...] | None
    resampling: str
    shard_size: int
    layout: dict[str, Any]
    splits: dict[str, SplitEntry]

    @property
    def memory_mappable(self) -> bool:
        """Whether the shards are stored uncompressed and contiguous."""
        return self.layout.get("compression") == "none"

    def class_names(self, num_classes: int) -> tuple[str, ...] | None:
        """The class list for ``num_classes`` (19 or 43), None when the shards lack it."""
        return self.classes if num_classes == 19 else self.classes43

    def n_patches(self, split: str) -> int:
        """Patches of ``split`` (0 when absent)."""
        entry = self.splits.get(split)
        return entry.n_patches if entry else 0

    def to_json(self) -> dict[str, Any]:
        """The manifest as written (``classes43`` only when present)."""
        doc = to_mapping(self)
        if self.classes43 is None:
            del doc["classes43"]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        """Parse a manifest document."""
        return cls(
            benscale_version=doc["benscale_version"], bands=tuple(doc["bands"]),
            classes=tuple(doc["classes"]),
            classes43=tuple(doc["classes43"]) if "classes43" in doc else None,
            resampling=doc["resampling"], shard_size=int(doc["shard_size"]),
            layout=dict(doc.get("layout") or {}),
            splits={name: SplitEntry(int(entry["n_patches"]),
                                     tuple(ShardEntry(**s) for s in entry["shards"]))
                    for name, entry in doc["splits"].items()})

    def write(self, root: Path) -> None:
        """Write ``root/manifest.json`` atomically."""
        write_json(Path(root) / MANIFEST_NAME, self.to_json())

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        """Read ``root/manifest.json``; a missing or malformed one is a DataError."""
        path = Path(root) / MANIFEST_NAME
        doc = _load_json(path, "run `benscale extract` first")
        try:
            return cls.from_json(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a benscale manifest ({exc!r} missing or wrong); "
                            "re-run `benscale extract`") from exc


# --------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class BandMoments:
    """Mean and population standard deviation of one band (None: no train patches)."""

    mean: float | None
    std: float | None


@dataclass(frozen=True)
class BandStats:
    """``stats.json``: per-band statistics of the train split (float64, ddof 0)."""

    split: str
    n_patches: int
    resampling: str
    ddof: int
    bands: dict[str, BandMoments] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The statistics as written."""
        return to_mapping(self)

    def write(self, root: Path) -> None:
        """Write ``root/stats.json`` atomically."""
        write_json(Path(root) / STATS_NAME, self.to_json())

    @classmethod
    def read(cls, root: str | Path) -> BandStats:
        """Read ``root/stats.json``; a missing or malformed one is a DataError."""
        path = Path(root) / STATS_NAME
        doc = _load_json(path, "run `benscale extract` first")
        try:
            return cls(split=doc["split"], n_patches=int(doc["n_patches"]),
                       resampling=doc["resampling"], ddof=int(doc.get("ddof", 0)),
                       bands={b: BandMoments(m["mean"], m["std"])
                              for b, m in doc["bands"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a benscale stats.json ({exc!r}); re-run "
                            "`benscale extract`") from exc

    def normalisation(self, bands: Sequence[str],
                      source: Path | str = STATS_NAME) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of ``bands`` as float32 arrays of shape (C, 1, 1).

        Raises:
            DataError: a band is unknown or has no statistics, naming ``source``.
        """
        _check_bands(bands, Path(source))
        absent = [b for b in bands if b not in self.bands]
        if absent:
            raise DataError(f"{source}: statistics are for another band set (no {absent}); "
                            "re-run `benscale extract` or choose a matching `bands`")
        if any(self.bands[b].mean is None for b in bands):
            raise DataError(f"{source}: no statistics (the train split was empty); "
                            "extract an index with train patches")
        mean = np.array([self.bands[b].mean for b in bands], dtype=np.float32)[:, None, None]
        std = np.array([self.bands[b].std for b in bands], dtype=np.float32)[:, None, None]
        return mean, std


class ShardSet:
    """Random access to the patches of one split, without loading whole shards.

    The labels and patch ids of every shard are read at construction (small); reflectance
    is read one patch at a time: from a memory map of the file for uncompressed shards,
    one HDF5 chunk through netCDF4 for compressed ones. Handles open lazily and are dropped
    on pickling, so a ShardSet can be handed to DataLoader worker processes: each process
    opens its own (HDF5 handles must not cross a fork).

    Example:
        >>> ds = ShardSet("results/demo/shards", "train", bands=("B02", "B03", "B04"))
        >>> x, y = ds.read(0)   # uint16 (3, 120, 120), uint8 (19,)
    """

    def __init__(self, root: str | Path, split: str, bands: Sequence[str] | None = None,
                 num_classes: int = 19) -> None:
        """Index the shards of ``split`` listed in ``root/manifest.json``.

        Args:
            root: the extraction folder (holding manifest.json).
            split: ``train``, ``validation`` or ``test``.
            bands: a subset of band names, in the order wanted (default: all 12).
            num_classes: 19 (``labels``) or 43 (``labels43``, v1 archives only).
        """
        self.root = Path(root)
        manifest = Manifest.read(self.root)
        if split not in manifest.splits:
            raise DataError(f"{self.root / MANIFEST_NAME}: no split {split!r} (has "
                            f"{sorted(manifest.splits)}); check the index's split column")
        self.split = split
        self._labels_var = LABEL_SETS[num_classes][0]
        classes = manifest.class_names(num_classes)
        if classes is None:
            raise DataError(f"{self.root / MANIFEST_NAME}: no {num_classes}-class labels (they "
                            "come from v1 archives only: reBEN/v2 publishes the 19 classes "
                            "alone); use num_classes: 19")
        self.classes: tuple[str, ...] = classes
        stored = manifest.bands
        self.bands: tuple[str, ...] = tuple(bands) if bands is not None else stored
        _check_bands(self.bands, self.root / MANIFEST_NAME)
        self._band_index = np.array([stored.index(b) for b in self.bands])
        self._all_bands = self.bands == stored
        self.paths = [self.root / s.path for s in manifest.splits[split].shards]
        # Only the uncompressed layout is memory-mapped; HDF5 (through h5py) is asked for
        # its offset only then, so a compressed shard is never opened by two HDF5 libraries.
        self._mapped = manifest.memory_mappable
        self.patch_ids, self.labels, self._starts = self._read_index()
        self._arrays: dict[int, Any] = {}
        self._handles: dict[int, netCDF4.Dataset] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        """Number of patches in the split."""
        return len(self.patch_ids)

    @property
    def memory_mapped(self) -> bool:
        """Whether reads come from memory maps (uncompressed shards), not from netCDF4."""
        return self._mapped

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``i`` of the split: (uint16 (C, 120, 120) reflectance, uint8 (19,) labels)."""
        patch = self.view(i)
        return (np.array(patch) if self._all_bands else patch[self._band_index]), self.labels[i]

    def view(self, i: int) -> np.ndarray:
        """Patch ``i`` with ALL stored bands, uint16 (12, 120, 120), possibly a view of a
        memory map: for readers that copy it anyway (see :meth:`select_bands`)."""
        if not 0 <= i < len(self):
            raise IndexError(f"patch {i} out of range for {len(self)} patches")
        shard = bisect.bisect_right(self._starts, i) - 1
        return self._array(shard)[i - self._starts[shard]]

    def select_bands(self, patch: np.ndarray) -> np.ndarray:
        """The wanted bands of a patch from :meth:`view` (a view when all are wanted)."""
        return patch if self._all_bands else patch[self._band_index]

    def close(self) -> None:
        """Close the open shard files (they reopen on the next read)."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._arrays.clear()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without file handles: each process opens its own."""
        state = self.__dict__.copy()
        state["_handles"], state["_arrays"] = {}, {}
        return state

    def _array(self, shard: int) -> Any:
        """``reflectance`` of a shard, indexable by patch: a memmap or a netCDF4 variable."""
        if self._pid != os.getpid():  # forked: inherited handles are not ours to use
            self._handles, self._arrays, self._pid = {}, {}, os.getpid()
        if shard in self._arrays:
            return self._arrays[shard]
        if self._mapped:
            self._arrays[shard] = memory_map(self.paths[shard])
            return self._arrays[shard]
        if shard not in self._handles:
            handle = netCDF4.Dataset(self.paths[shard], "r")
            handle.set_auto_mask(False)
            self._handles[shard] = handle
        # Looked up per read, not kept: a netCDF4 Variable must not outlive its Dataset.
        return self._handles[shard].variables["reflectance"]

    def _read_index(self) -> tuple[list[str], np.ndarray, list[int]]:
        ids: list[str] = []
        labels: list[np.ndarray] = []
        starts: list[int] = []
        for path in self.paths:
            starts.append(len(ids))
            try:
                with netCDF4.Dataset(path, "r") as nc:
                    nc.set_auto_mask(False)
                    ids.extend(str(p) for p in nc.variables["patch_id"][:])
                    labels.append(np.asarray(nc.variables[self._labels_var][:],
                                             dtype=np.uint8))
            except OSError as exc:
                raise DataError(f"{path}: cannot read shard ({exc}); re-run "
                                "`benscale extract` to rewrite it") from exc
        n_classes = len(self.classes)
        stacked = np.concatenate(labels) if labels else np.zeros((0, n_classes), np.uint8)
        return ids, stacked, starts


def memory_map(path: Path) -> np.ndarray:
    """``reflectance`` of an uncompressed, contiguous shard, mapped into memory.

    HDF5 stores such a dataset as one block of raw bytes at a fixed offset (h5py tells it),
    so the file can be mapped like a NumPy array: no HDF5 call per patch.
    """
    try:
        with h5py.File(path, "r") as h5:
            var = h5["reflectance"]
            offset = var.id.get_offset()
            # Contiguous (unchunked) HDF5 data cannot carry filters: raw bytes.
            plain = (var.chunks is None and offset is not None
                     and var.dtype == REFLECTANCE_DTYPE)
            shape = var.shape
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read shard ({exc}); re-run `benscale extract` to "
                        "rewrite it") from exc
    if not plain:
        raise DataError(f"{path}: reflectance is not stored uncompressed and contiguous, as "
                        f"{path.parent.parent / MANIFEST_NAME} says; re-run `benscale "
                        "extract` to rewrite the shards")
    # Copy-on-write ("c"): pages are read-only shared with the page cache as with "r", but
    # views are writable, so torch.from_numpy takes them without a warning; the file is
    # never written. A plain ndarray over the map (which it keeps alive): indexing an
    # np.memmap runs its Python __array_finalize__, ~2 us of a ~25 us patch copy.
    return np.asarray(np.memmap(path, dtype=REFLECTANCE_DTYPE, mode="c", offset=offset,
                                shape=shape))


def _check_bands(bands: Sequence[str], source: Path) -> None:
    unknown = [b for b in bands if b not in BAND_NAMES]
    if unknown or not bands:
        raise DataError(f"{source}: unknown band(s) {unknown or '(none given)'}; "
                        f"choose from {list(BAND_NAMES)}")


def _load_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found; {fix}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); {fix}") from exc
