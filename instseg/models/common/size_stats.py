"""Annotation statistics that the data-adaptive defaults read (no image decoding), and the
input-scale rule both families share.

Sizes are ``sqrt(area)`` in pixels; ``mask_size`` from the mask area, ``box_size`` from the
box (xywh on disk) area. Crowd annotations are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from instseg.data.dataset import InstanceDataset

__all__ = ["DatasetSizeStats", "cpu_input_cap", "nice", "upsampling"]

#: box IoU above which two objects of one image count as overlapping
OVERLAP_IOU = 0.3
MEDIAN_KEEP, SMALL_KEEP = 96.0, 32.0  # downsample only while objects stay this large
#: CPU training: the typical image (median long side) is downsampled to this long side, while
#: the median / 5th-percentile object stays this large (large photos of large objects)
CPU_LONG_SIDE, CPU_MEDIAN_KEEP, CPU_SMALL_KEEP = 640.0, 64.0, 16.0


@dataclass
class DatasetSizeStats:
    """Percentile summary of a dataset's image and object sizes (pixels)."""

    num_images: int
    num_instances: int
    image_short_p50: float
    image_long_p50: float
    image_long_max: float
    mask_size_p5: float
    mask_size_p25: float
    mask_size_p50: float
    mask_size_p95: float
    box_size_p5: float
    box_size_p50: float
    box_size_p95: float
    aspect_p10: float  # box height / width
    aspect_p50: float
    aspect_p90: float
    instances_per_image_p50: float
    instances_per_image_max: int
    #: std of log(per-image median object size): in pixels / relative to the short side
    abs_size_spread: float
    rel_size_spread: float
    #: fraction of instances whose box overlaps another's of the same image with IoU > 0.3
    #: (None when box positions are not given)
    overlap_fraction: float | None = None

    @classmethod
    def from_arrays(
        cls,
        image_sizes: Sequence[tuple[int, int]],
        objects: Sequence[Sequence[tuple[float, float, float]]],
        boxes: Sequence[np.ndarray] | None = None,
    ) -> DatasetSizeStats:
        """``image_sizes[i] = (H, W)``; ``objects[i]`` = ``(mask_area, box_w, box_h)`` per
        (non-crowd) instance of image ``i``; ``boxes[i]``: their ``(n, 4)`` xywh boxes."""
        if len(image_sizes) != len(objects):
            raise ValueError("image_sizes and objects must have the same length")
        hw = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
        short, long = hw.min(1), hw.max(1)
        rows = [np.asarray(o, dtype=np.float64).reshape(-1, 3) for o in objects]
        allo = np.concatenate(rows) if rows else np.zeros((0, 3))
        allo = allo[(allo[:, 0] > 0) & (allo[:, 1] > 0) & (allo[:, 2] > 0)]
        counts = np.array([len(r) for r in rows]) if rows else np.zeros(1)
        mask = np.sqrt(allo[:, 0])
        box = np.sqrt(allo[:, 1] * allo[:, 2])
        aspect = allo[:, 2] / np.maximum(allo[:, 1], 1e-6)
        per_abs, per_rel = [], []
        for r, s in zip(rows, short):
            r = r[r[:, 0] > 0]
            if len(r):
                med = float(np.median(np.sqrt(r[:, 0])))
                per_abs.append(math.log(med))
                per_rel.append(math.log(med / max(s, 1.0)))

        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if a.size else 0.0

        return cls(
            num_images=len(hw),
            num_instances=int(len(allo)),
            image_short_p50=pct(short, 50),
            image_long_p50=pct(long, 50),
            image_long_max=float(long.max()) if long.size else 0.0,
            mask_size_p5=pct(mask, 5),
            mask_size_p25=pct(mask, 25),
            mask_size_p50=pct(mask, 50),
            mask_size_p95=pct(mask, 95),
            box_size_p5=pct(box, 5),
            box_size_p50=pct(box, 50),
            box_size_p95=pct(box, 95),
            aspect_p10=pct(aspect, 10),
            aspect_p50=pct(aspect, 50),
            aspect_p90=pct(aspect, 90),
            instances_per_image_p50=pct(counts, 50),
            instances_per_image_max=int(counts.max()) if counts.size else 0,
            abs_size_spread=float(np.std(per_abs)) if per_abs else 0.0,
            rel_size_spread=float(np.std(per_rel)) if per_rel else 0.0,
            overlap_fraction=None if boxes is None else _overlap_fraction(boxes, OVERLAP_IOU),
        )

    @classmethod
    def from_dataset(cls, ds: InstanceDataset) -> DatasetSizeStats:
        """Statistics from the annotations' ``area`` and ``bbox`` and the records' sizes."""
        sizes = [(r.height, r.width) for r in ds.images]
        objects = [
            [(a.area, a.bbox[2], a.bbox[3]) for a in r.annotations if not a.iscrowd]
            for r in ds.images
        ]
        boxes = [
            np.asarray([a.bbox for a in r.annotations if not a.iscrowd], np.float64).reshape(-1, 4)
            for r in ds.images
        ]
        return cls.from_arrays(sizes, objects, boxes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _overlap_fraction(boxes: Sequence[np.ndarray], iou: float) -> float:
    """Fraction of all boxes (xywh, per image) whose IoU with another box of their image
    exceeds ``iou``."""
    hits = total = 0
    for b in boxes:
        b = np.asarray(b, np.float64).reshape(-1, 4)
        total += len(b)
        if len(b) < 2:
            continue
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
        ih = np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None)
        inter = iw * ih
        area = b[:, 2] * b[:, 3]
        ious = inter / np.maximum(area[:, None] + area - inter, 1e-9)
        np.fill_diagonal(ious, 0.0)
        hits += int((ious.max(1) > iou).sum())
    return hits / total if total else 0.0


def nice(x: float, step: float = 0.05) -> float:
    """``x`` rounded to a multiple of ``step`` (at least ``step``)."""
    return round(max(step, round(x / step) * step), 4)


def upsampling(stats: DatasetSizeStats, median_min: float, small_min: float) -> float:
    """Input scale that brings the median / 5th-percentile object to ``median_min`` /
    ``small_min`` px (large objects downsampled while >= ``MEDIAN_KEEP`` / ``SMALL_KEEP``)."""
    p5, p50 = max(stats.mask_size_p5, 1.0), stats.mask_size_p50
    scale = max(median_min / p50, small_min / p5)
    if scale < 1.0:
        scale = min(1.0, max(scale, MEDIAN_KEEP / p50, SMALL_KEEP / p5))
    return nice(min(scale, 4.0))


def cpu_input_cap(stats: DatasetSizeStats) -> float:
    """The largest input scale for CPU training: the typical image's long side down to
    ``CPU_LONG_SIDE``, but objects no smaller than ``CPU_MEDIAN_KEEP`` (median) /
    ``CPU_SMALL_KEEP`` (5th percentile) px. Large photos of large objects train (and infer) at
    this scale: a step costs about the input's area."""
    p5, p50 = max(stats.mask_size_p5, 1.0), max(stats.mask_size_p50, 1.0)
    floor = max(CPU_MEDIAN_KEEP / p50, CPU_SMALL_KEEP / p5)
    cap = max(CPU_LONG_SIDE / max(stats.image_long_p50, 1.0), floor)
    return round(max(0.05, math.floor(cap / 0.05) * 0.05), 4)  # a multiple of 0.05, rounded down
