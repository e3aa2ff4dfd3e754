"""In-memory cache of decoded training samples (:class:`instseg.data.loader.TrainingDataset`).

Every training step otherwise reads the image file and decodes every RLE mask of the image
at full size (DSB nuclei, 2 cores, ``python bench/data_speed.py``: 57 ms per item without
this cache, 23 ms with it; a light SOLOv2 step takes ~440 ms). A cached sample keeps the
decoded image and each mask cropped to its tight box, so the whole training set usually
fits in little memory (the 87 DSB training images: 59 MB, against 1.4 GB as full-size
masks). Unpacking pastes the crops into ``np.zeros`` masks, whose untouched pages the OS
never materializes, so a random crop of a large crowded image costs only what it touches.

The cap (per process, per dataset) is 2 GiB, or ``INSTSEG_CACHE_MB`` MiB from the
environment (0: no cache, e.g. for a dataset larger than the memory to spare).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch

from instseg.errors import InstsegError
from instseg.masks import masks_to_boxes
from instseg.structures import Instances

__all__ = [
    "CACHE_MB_ENV",
    "DEFAULT_CACHE_BYTES",
    "PackedSample",
    "default_cache_bytes",
    "pack_sample",
    "unpack_sample",
]

#: per-process cap of :class:`~instseg.data.loader.TrainingDataset`'s cache
DEFAULT_CACHE_BYTES = 2 << 30
#: environment variable that overrides it, in MiB (0: no cache)
CACHE_MB_ENV = "INSTSEG_CACHE_MB"


def default_cache_bytes() -> int:
    """The cache cap: ``INSTSEG_CACHE_MB`` MiB when set, else :data:`DEFAULT_CACHE_BYTES`."""
    text = os.environ.get(CACHE_MB_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_BYTES
    try:
        mib = float(text)
    except ValueError:
        mib = -1.0
    if not 0 <= mib < float("inf"):
        raise InstsegError(f"{CACHE_MB_ENV} must be a number of MiB >= 0, got {text!r}")
    return int(mib * (1 << 20))


@dataclass(frozen=True)
class PackedSample:
    """One decoded sample: the image, its ground truth without masks, and each mask as the
    crop ``(y2 - y1, x2 - x1)`` of its tight box ``corners[i] = (x1, y1, x2, y2)``."""

    image: np.ndarray  # (H, W, 3) uint8
    target: Instances  # masks=None; boxes, labels, crowd flags, track ids as decoded
    corners: np.ndarray  # (N, 4) int64, x2/y2 exclusive; zeros for an empty mask
    crops: tuple[np.ndarray, ...]  # N bool arrays
    has_masks: bool

    @property
    def nbytes(self) -> int:
        """Bytes held (image + crops + boxes), what the cache cap counts."""
        return self.image.nbytes + sum(c.nbytes for c in self.crops) + self.corners.nbytes


def pack_sample(image: np.ndarray, target: Instances) -> PackedSample:
    """``(image (H, W, 3) uint8, Instances)`` -> :class:`PackedSample` (copies, so the
    cache never shares memory with what the caller goes on to modify)."""
    masks = None if target.masks is None else target.masks.numpy()
    if masks is None:
        corners = np.zeros((0, 4), np.int64)
        crops: tuple[np.ndarray, ...] = ()
    else:
        corners = masks_to_boxes(masks).astype(np.int64)
        crops = tuple(
            np.ascontiguousarray(m[y1:y2, x1:x2]) for m, (x1, y1, x2, y2) in zip(masks, corners)
        )
    return PackedSample(
        np.array(image, copy=True),
        dataclasses.replace(target, masks=None),
        corners,
        crops,
        masks is not None,
    )


def unpack_sample(packed: PackedSample) -> tuple[np.ndarray, Instances]:
    """:class:`PackedSample` -> ``(image, Instances)`` equal to what was packed (a fresh
    image array and fresh masks on every call)."""
    image = packed.image.copy()
    if not packed.has_masks:
        return image, dataclasses.replace(packed.target)
    h, w = packed.target.image_size
    masks = np.zeros((len(packed.crops), h, w), dtype=bool)  # lazily zeroed pages
    for m, crop, (x1, y1, x2, y2) in zip(masks, packed.crops, packed.corners):
        m[y1:y2, x1:x2] = crop
    return image, dataclasses.replace(packed.target, masks=torch.from_numpy(masks))
