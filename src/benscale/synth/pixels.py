"""The pixels of a synthetic patch: learnable, class-specific spectra and textures.

Each patch is a mosaic of Voronoi regions, one or more per 19-class label of the patch; a
region of class ``c`` carries the class's spectral signature (12 reflectances: a surface
prototype - water, forest, crops, soil, urban, sand, wetland - plus a fixed
class-specific offset) modulated by the class's texture (a sinusoid with a class-specific
frequency and orientation), times a per-patch illumination, plus noise. The signatures and
textures are fixed (independent of the seed), so every archive describes the same "world".
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from benscale.bigearthnet import BANDS, PATCH_PX
from benscale.synth.plan import Patch

PROTOTYPES: dict[str, tuple[int, ...]] = {
    "urban": (900, 1000, 1100, 1200, 1400, 1600, 1700, 1800, 1850, 1700, 2200, 1900),
    "crops": (400, 450, 750, 500, 1200, 2600, 3100, 3300, 3400, 3300, 2000, 1000),
    "soil": (700, 800, 1100, 1400, 1700, 2000, 2200, 2300, 2400, 2300, 3000, 2400),
    "forest": (250, 300, 500, 300, 800, 2000, 2400, 2600, 2700, 2600, 1300, 600),
    "water": (300, 400, 500, 300, 250, 200, 180, 150, 130, 100, 60, 40),
    "sand": (1500, 1800, 2200, 2600, 2800, 3000, 3100, 3200, 3300, 3200, 3800, 3200),
    "wetland": (350, 450, 650, 500, 900, 1500, 1700, 1800, 1850, 1800, 1100, 600),
    "snow": (7000, 7500, 7400, 7200, 7000, 6800, 6600, 6400, 6300, 5000, 800, 600),
    "cloud": (5000, 5200, 5300, 5400, 5500, 5600, 5600, 5700, 5700, 4000, 4500, 3500),
}

#: Each 19-class label as a mix of prototypes, in the original class order.
CLASS_MIX: tuple[dict[str, float], ...] = (
    {"urban": 1.0},                                  # Urban fabric
    {"urban": 1.2},                                  # Industrial or commercial units
    {"soil": 0.5, "crops": 0.5},                     # Arable land
    {"crops": 0.85, "soil": 0.15},                   # Permanent crops
    {"crops": 1.05},                                 # Pastures
    {"crops": 0.6, "soil": 0.4},                     # Complex cultivation patterns
    {"crops": 0.5, "forest": 0.5},                   # Agriculture with natural vegetation
    {"forest": 0.6, "soil": 0.4},                    # Agro-forestry areas
    {"forest": 1.1},                                 # Broad-leaved forest
    {"forest": 0.8},                                 # Coniferous forest
    {"forest": 0.95},                                # Mixed forest
    {"soil": 0.6, "crops": 0.4},                     # Natural grassland, sparse vegetation
    {"forest": 0.5, "soil": 0.5},                    # Moors, heathland
    {"forest": 0.6, "crops": 0.4},                   # Transitional woodland, shrub
    {"sand": 1.0},                                   # Beaches, dunes, sands
    {"wetland": 1.0},                                # Inland wetlands
    {"wetland": 0.5, "water": 0.5},                  # Coastal wetlands
    {"water": 1.1},                                  # Inland waters
    {"water": 0.8},                                  # Marine waters
)

#: Co-occurrence groups (indices into the 19 classes): labels of a patch are drawn mostly
#: from the group of its first label, as farmland, forest and coast cluster in reality.

#: Relative amplitude of the class texture, and of the pixel noise.
TEXTURE_AMPLITUDE = 0.18
NOISE_LEVEL = 0.04


@cache
def class_signatures() -> np.ndarray:
    """(19, 12) float32 reflectance of each class: prototype mix + a fixed class offset.

    The offset (up to +-15 % per band, from a fixed generator) keeps classes with the same
    prototype mix apart; it does not depend on ``--seed``.
    """
    fixed = np.random.default_rng(19)
    sig = np.zeros((19, len(BANDS)), dtype=np.float64)
    for c, mix in enumerate(CLASS_MIX):
        for proto, weight in mix.items():
            sig[c] += weight * np.asarray(PROTOTYPES[proto], dtype=np.float64)
    sig *= 1.0 + fixed.uniform(-0.15, 0.15, size=sig.shape)
    return sig.astype(np.float32)


@cache
def class_textures() -> tuple[np.ndarray, np.ndarray]:
    """Per class: spatial frequency (cycles per patch, 2..16) and orientation (radians)."""
    fixed = np.random.default_rng(43)
    freq = np.linspace(2.0, 16.0, 19)[fixed.permutation(19)]
    theta = np.pi * ((np.arange(19) * 7) % 19) / 19
    return freq.astype(np.float32), theta.astype(np.float32)


@cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:PATCH_PX, 0:PATCH_PX].astype(np.float32)
    return y, x


def render_patch(patch: Patch, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The 12 bands of a patch as uint16 arrays at their native sizes."""
    classes = patch.classes or (0,)  # a patch without 19-class label looks urban-ish
    region = _voronoi(len(classes), rng)
    cls = np.asarray(classes)[region]  # (120, 120) class index per pixel
    y, x = _grid()
    freq, theta = class_textures()
    phase = rng.uniform(0, 2 * np.pi, size=19).astype(np.float32)
    wave = (x * np.cos(theta[cls]) + y * np.sin(theta[cls])) * (2 * np.pi / PATCH_PX)
    texture = 1.0 + TEXTURE_AMPLITUDE * np.sin(freq[cls] * wave + phase[cls])
    illumination = np.float32(rng.uniform(0.85, 1.15))
    sig = class_signatures()[cls]  # (120, 120, 12)
    value = sig * (texture * illumination)[..., None]
    value += NOISE_LEVEL * sig * _noise(value.shape, rng)
    if patch.condition in ("seasonal snow", "cloud or shadow"):
        _overlay(value, patch.condition, rng)
    cube = np.clip(np.rint(value), 1, 20000).astype(np.uint16).transpose(2, 0, 1)
    return {band.name: _block_mean(cube[i], band.native_px) for i, band in enumerate(BANDS)}


@cache
def _noise_bank() -> np.ndarray:
    """4 Mi standard normals drawn once; patches take windows of it (cheaper than drawing)."""
    return np.random.default_rng(4).standard_normal(1 << 22, dtype=np.float32)


def _noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard-normal noise of ``shape``: a window of the bank at a random offset."""
    bank, size = _noise_bank(), math.prod(shape)
    start = int(rng.integers(0, bank.size - size))
    return bank[start:start + size].reshape(shape)


def _voronoi(n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Region map (120, 120) of indices into the patch's classes; every class present."""
    n_seeds = n_classes + int(rng.integers(0, 4))
    owner = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_seeds - n_classes)])
    seeds = rng.uniform(0, PATCH_PX, size=(n_seeds, 2)).astype(np.float32)
    y, x = _grid()
    dist = (y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2
    return owner[np.argmin(dist, axis=0)]


def _overlay(value: np.ndarray, condition: str, rng: np.random.Generator) -> None:
    """Paint snow (a bright band of the patch) or a cloud with its shadow, in place."""
    y, x = _grid()
    cy, cx = rng.uniform(20, 100, size=2)
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 25.0 ** 2))[..., None]
    if condition == "seasonal snow":
        value[:] = value * (1 - blob) + np.asarray(PROTOTYPES["snow"], np.float32) * blob
    else:
        shadow = np.exp(-((y - cy - 15) ** 2 + (x - cx - 15) ** 2) / (2 * 25.0 ** 2))[..., None]
        value *= 1 - 0.6 * shadow
        value[:] = value * (1 - blob) + np.asarray(PROTOTYPES["cloud"], np.float32) * blob


def _block_mean(band: np.ndarray, size: int) -> np.ndarray:
    """Aggregate a 120 px band to its native ``size`` (60 or 20 px) by block mean."""
    if size == PATCH_PX:
        return np.ascontiguousarray(band)
    f = PATCH_PX // size
    return np.rint(band.reshape(size, f, size, f).mean(axis=(1, 3))).astype(np.uint16)
