"""Shared pieces of the folder/format readers: an incremental dataset builder and file helpers.

Image ids and annotation ids are assigned 1, 2, 3 ... in reading order (files are read in
sorted path order, so ids are deterministic).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from instseg import masks as mask_codec
from instseg.data.dataset import (
    Category,
    ImageRecord,
    InstanceDataset,
    Segmentation,
    make_annotation,
)
from instseg.data.io import image_size, is_image_file
from instseg.errors import DataError, ErrorPolicy, InvalidItemWarning

#: default name of the single class of a mask-based dataset (``class_name=`` overrides it)
DEFAULT_CLASS = "object"


class DatasetBuilder:
    """Collect images and annotations, then :meth:`finish` into an :class:`InstanceDataset`."""

    def __init__(self, source: Path, skip_invalid: bool = False) -> None:
        self.source = source
        self.policy = ErrorPolicy(skip_invalid)
        self.images: list[ImageRecord] = []
        self._next_ann = 1

    def add_image(self, path: Path, root: Path, height: int, width: int) -> ImageRecord:
        """A new image; ``file_name`` is ``path`` relative to ``root`` (posix separators)."""
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = str(path)
        rec = ImageRecord(len(self.images) + 1, name, path, int(height), int(width))
        self.images.append(rec)
        return rec

    def add_annotation(self, rec: ImageRecord, category_id: int, segmentation: Segmentation) -> None:
        """Append an annotation; bbox/area computed from the mask (pycocotools)."""
        ann = make_annotation(self._next_ann, rec.id, category_id, segmentation, rec.height, rec.width)
        self._next_ann += 1
        rec.annotations.append(ann)

    def fail(self, file: Path | str | None, item: str | None, message: str) -> None:
        """Raise a DataError, or (``skip_invalid``) warn and count it."""
        self.policy.fail(DataError(file, item, message))

    def finish(self, categories: list[Category]) -> InstanceDataset:
        return InstanceDataset(self.images, categories, self.source, self.policy.skipped)


def warn_orphan(file: Path, message: str) -> None:
    """Warn (not an error) about a file that belongs to no image, e.g. a label without image."""
    warnings.warn(str(DataError(file, None, message)), InvalidItemWarning, stacklevel=3)


def checked_size(path: Path, check_images: bool) -> tuple[int, int]:
    """``(H, W)`` from the header, or from a full decode with ``check_images`` (finds truncation)."""
    return image_size(path, verify=check_images)


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files of ``folder`` (hidden files skipped)."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def label_image_rles(labels: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs of the objects of a label image ``(H, W)`` (0 = background), ascending id.

    Each object is encoded from the columns it spans (``scipy.ndimage.find_objects``), so the
    cost is the objects' column strips, not (number of ids) x (image size).
    """
    from scipy import ndimage

    if labels.size == 0:
        return []
    dense = labels
    if labels.min() < 0 or labels.max() >= (1 << 24):  # relabel huge/negative ids to 1..K
        inverse = np.unique(labels, return_inverse=True)[1].reshape(labels.shape) + 1
        dense = np.where(labels == 0, 0, inverse)
    width = labels.shape[1]
    out = []
    for j, found in enumerate(ndimage.find_objects(dense)):
        if found is not None:
            cols = found[1]
            out.append(columns_rle(dense[:, cols] == j + 1, width, int(cols.start)))
    return out


def columns_rle(block: np.ndarray, width: int, x0: int) -> dict[str, Any]:
    """Compressed RLE of a mask that is all zeros outside columns ``x0 .. x0 + block.shape[1]``.

    ``block`` is the bool ``(H, w)`` strip of those columns; ``width`` the full image width.
    The result is identical to :func:`instseg.masks.encode` on the full mask.
    """
    h = block.shape[0]
    x1 = x0 + block.shape[1]
    flat = block.T.ravel()  # column-major, as pycocotools
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))  # RLE starts with a (possibly empty) zero run
    runs[0] += h * x0
    if not (flat.size and flat[-1]):
        runs[-1] += h * (width - x1)
    elif x1 < width:
        runs = np.append(runs, h * (width - x1))
    return mask_codec.segmentation_to_rle({"size": [h, width], "counts": runs.tolist()}, h, width)


def binary_mask_rle(mask: np.ndarray) -> dict[str, Any] | None:
    """Compressed RLE (counts: str) of a mask ``(H, W)`` (nonzero = foreground); None if empty.

    Identical to :func:`instseg.masks.encode`, but only the columns the object spans are
    scanned, which is ~5x faster for small objects in large images.
    """
    cols = np.flatnonzero(mask.any(axis=0))
    if len(cols) == 0:
        return None
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return columns_rle(mask[:, x0:x1] != 0, mask.shape[1], x0)
