"""Semantic view of instance predictions: per-class union maps, per-class IoU and mIoU.

Maps are ``(H, W)`` int64 with 0 = background and class ``c`` (contiguous 0..K-1) -> ``c + 1``;
``IGNORE`` (-1) marks pixels left out of the scores (crowd regions of the ground truth).
IoU is accumulated over a dataset as intersection and union *sums* per class, then divided,
so large images weigh more (the standard semantic-segmentation protocol).
mIoU is the mean over the object classes that occur (union > 0) in GT or prediction;
``mIoU_with_background`` also averages the background class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from instseg.masks import paint_label_image

if TYPE_CHECKING:
    from instseg.structures import Instances

IGNORE = -1

__all__ = ["IGNORE", "SemanticAccumulator", "instances_to_semantic", "semantic_iou"]


def instances_to_semantic(
    instances: Instances,
    num_classes: int,
    score_threshold: float = 0.0,
    ignore_crowd: bool = True,
) -> np.ndarray:
    """Semantic map ``(H, W)`` int64 of ``instances`` (0 = background, class c -> c + 1).

    Each class is the union of its masks with ``score >= score_threshold``; where masks of
    different classes overlap the higher score wins (masks are painted in ascending score
    order; equal scores keep the later instance). Crowd instances (ground truth) become
    ``IGNORE`` when ``ignore_crowd``.
    """
    h, w = instances.image_size
    out = np.zeros((h, w), dtype=np.int64)
    if len(instances) == 0:
        return out
    if instances.masks is None:
        raise ValueError("instances_to_semantic needs masks")
    masks = instances.masks.cpu().numpy()
    labels = instances.labels.cpu().numpy()
    scores = (
        instances.scores.cpu().numpy() if instances.scores is not None else np.ones(len(instances), np.float32)
    )
    crowd = (
        instances.iscrowd.cpu().numpy()
        if instances.iscrowd is not None
        else np.zeros(len(instances), dtype=bool)
    )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    keep = scores >= score_threshold
    shown = np.flatnonzero(keep & ~crowd if ignore_crowd else keep)
    out = paint_label_image(
        (h, w), [masks[i] for i in shown], labels[shown] + 1, scores[shown], dtype=np.int64
    )
    if ignore_crowd:
        for i in np.flatnonzero(crowd & keep):
            out[masks[i]] = IGNORE
    return out


class SemanticAccumulator:
    """Intersection and union sums per class over a dataset (``num_classes`` object classes
    plus background)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        n = num_classes + 1
        self.confusion = np.zeros((n, n), dtype=np.int64)  # rows: GT, cols: prediction

    def update(self, gt_map: np.ndarray, pred_map: np.ndarray) -> None:
        """Add one image: maps ``(H, W)`` with values in ``{IGNORE, 0..num_classes}``."""
        g, p = np.asarray(gt_map).reshape(-1), np.asarray(pred_map).reshape(-1)
        if g.shape != p.shape:
            raise ValueError(f"semantic maps differ in shape: {np.shape(gt_map)} vs {np.shape(pred_map)}")
        n = self.num_classes + 1
        keep = g != IGNORE
        g, p = g[keep].astype(np.int64), p[keep].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= n or p.min() < 0 or p.max() >= n):
            raise ValueError(f"semantic map values must be in 0..{n - 1} (or {IGNORE} in GT)")
        self.confusion += np.bincount(g * n + p, minlength=n * n).reshape(n, n)

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """``{"class_iou": {name: IoU or None}, "mIoU", "mIoU_with_background", "intersection",
        "union", "pixel_accuracy"}``; a class absent from GT and prediction has IoU None."""
        inter = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - np.diag(self.confusion)
        names = ["background", *(class_names or [str(c) for c in range(self.num_classes)])]
        if len(names) != self.num_classes + 1:
            raise ValueError(f"need {self.num_classes} class names, got {len(names) - 1}")
        ious: dict[str, float | None] = {}
        for k, name in enumerate(names):
            ious[name] = float(inter[k] / union[k]) if union[k] > 0 else None
        fg = [v for k, v in enumerate(ious.values()) if k > 0 and v is not None]
        allc = [v for v in ious.values() if v is not None]
        total = self.confusion.sum()
        return {
            "class_iou": ious,
            "mIoU": float(np.mean(fg)) if fg else 0.0,
            "mIoU_with_background": float(np.mean(allc)) if allc else 0.0,
            "pixel_accuracy": float(inter.sum() / total) if total else 0.0,
            "intersection": {n: int(v) for n, v in zip(names, inter)},
            "union": {n: int(v) for n, v in zip(names, union)},
        }


def semantic_iou(
    gt_maps: np.ndarray | Iterable[np.ndarray],
    pred_maps: np.ndarray | Iterable[np.ndarray],
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-class IoU and mIoU of semantic maps (one ``(H, W)`` array or an iterable of them),
    accumulated over all images as intersection / union sums. See :meth:`SemanticAccumulator.result`."""
    acc = SemanticAccumulator(num_classes)
    if isinstance(gt_maps, np.ndarray) and gt_maps.ndim == 2:
        gt_maps = [gt_maps]
    if isinstance(pred_maps, np.ndarray) and pred_maps.ndim == 2:
        pred_maps = [pred_maps]
    n = 0
    for g, p in zip(gt_maps, pred_maps, strict=True):
        acc.update(g, p)
        n += 1
    if n == 0:
        raise ValueError("semantic_iou needs at least one pair of maps")
    return acc.result(class_names)
