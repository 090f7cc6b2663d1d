"""Band statistics of the train split, exact whatever the shard order or a resume.

Each shard's receipt keeps exact integer band sums and sums of squares; stats.json merges
them with one correctly rounded division at the end, so statistics merged from any set of
shards equal a single pass over the concatenated data.
"""

from __future__ import annotations

from math import sqrt

import numpy as np

from benscale.bigearthnet import BAND_NAMES, BANDS, PATCH_PX, SPLITS
from benscale.files.shards import BandMoments, BandStats, ShardReceipt

#: The split whose statistics normalise every split (no information from the others).
STATS_SPLIT = SPLITS[0]


def band_moments(reflectance: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Exact per-band sums and sums of squares (Python ints), and pixels per band.

    Per patch the int64 partial sums cannot overflow (14,400 x 65,535^2 < 2^63); summing
    them as Python ints keeps the totals exact for any number of patches.
    """
    sums = [0] * len(BANDS)
    sumsq = [0] * len(BANDS)
    for patch in reflectance:
        wide = patch.astype(np.int64)
        for b, (s, q) in enumerate(zip(wide.sum(axis=(1, 2)), (wide * wide).sum(axis=(1, 2)),
                                       strict=True)):
            sums[b] += int(s)
            sumsq[b] += int(q)
    return tuple(sums), tuple(sumsq), len(reflectance) * PATCH_PX**2


def band_stats(receipts: list[ShardReceipt], resampling: str) -> BandStats:
    """Per-band mean and population std over the train split, from exact integer sums."""
    train = [r for r in receipts if r.split == STATS_SPLIT]
    n = sum(r.pixels_per_band for r in train)
    bands: dict[str, BandMoments] = {}
    for b, name in enumerate(BAND_NAMES):
        total = sum(r.band_sum[b] for r in train)
        total_sq = sum(r.band_sumsq[b] for r in train)
        if n == 0:
            bands[name] = BandMoments(None, None)
            continue
        # var = (n*Q - S^2) / n^2 in exact integers, one correctly rounded division.
        bands[name] = BandMoments(total / n, sqrt((n * total_sq - total * total) / (n * n)))
    return BandStats(split=STATS_SPLIT, n_patches=sum(r.n_patches for r in train),
                     resampling=resampling, ddof=0, bands=bands)
