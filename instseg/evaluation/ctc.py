"""Cell Tracking Challenge detection test and SEG measure.

The detection test (:func:`match_frame`): a result object *matches* a reference object of the
same frame when it covers more than half of its pixels, so a reference object has at most one
match while a result object may match several. DET and TRA
(:mod:`~instseg.evaluation.ctc_tracking`), SEG and the py-ctcmetrics HOTA / IDF1 / MOTA
(:mod:`~instseg.evaluation.ctc_mot`) all build on it.

SEG (Ulman et al. 2017): for every reference object of every frame with a reference
segmentation, the Jaccard index of its match (0 when there is none); SEG is their mean over all
reference objects. Label images are ``(H, W)`` integers, 0 = background."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FrameMatch",
    "LabelOverlaps",
    "label_overlaps",
    "match_frame",
    "seg_jaccards",
    "seg_measure",
]

_BINCOUNT_MAX = 1 << 24  # larger label values are counted by sorting instead


@dataclass(frozen=True)
class FrameMatch:
    """Detection test of one frame: ``reference`` ids ``(R,)`` and ``result`` ids ``(C,)``
    (ascending, 0 excluded) and, per reference object, ``matched`` = the result id covering
    more than half of it (0 = none) and ``jaccard`` = their Jaccard index (0 = none; SEG's)."""

    reference: np.ndarray
    result: np.ndarray
    matched: np.ndarray
    jaccard: np.ndarray

    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The matched ``(reference ids (K,), result ids (K,))``, reference ids ascending."""
        hit = self.matched != 0
        return self.reference[hit], self.matched[hit]


def _ids_and_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero labels of a flat int64 array (ascending) and their pixel counts."""
    if labels.size and int(labels.min()) < 0:
        raise ValueError("label image has negative values")
    if labels.size and int(labels.max()) >= _BINCOUNT_MAX:
        ids, counts = np.unique(labels, return_counts=True)
    else:
        counts = np.bincount(labels)
        ids = np.flatnonzero(counts)
        counts = counts[ids]
    keep = ids != 0
    return ids[keep], counts[keep]


@dataclass(frozen=True)
class LabelOverlaps:
    """Pixel counts of two label images: ``reference`` ids ``(R,)`` with ``reference_area``,
    ``result`` ids ``(C,)`` with ``result_area`` (ascending, 0 excluded) and every overlapping
    pair ``k``: indices ``ref_index[k]``, ``res_index[k]`` and its ``intersection[k]``."""

    reference: np.ndarray
    reference_area: np.ndarray
    result: np.ndarray
    result_area: np.ndarray
    ref_index: np.ndarray
    res_index: np.ndarray
    intersection: np.ndarray

    def jaccard(self) -> np.ndarray:
        """Jaccard index (IoU) of each overlapping pair ``(K,)``."""
        inter = self.intersection
        return inter / (
            self.reference_area[self.ref_index] + self.result_area[self.res_index] - inter
        )

    def iou(self) -> np.ndarray:
        """IoU of every reference object with every result object ``(R, C)`` float64."""
        out = np.zeros((len(self.reference), len(self.result)))
        out[self.ref_index, self.res_index] = self.jaccard()
        return out


def label_overlaps(reference: np.ndarray, result: np.ndarray) -> LabelOverlaps:
    """:class:`LabelOverlaps` of ``(H, W)`` label images (0 = background). ValueError for
    images of different sizes or negative labels."""
    if reference.shape != result.shape:
        raise ValueError(f"reference {reference.shape} and result {result.shape} differ in size")
    ref = np.asarray(reference).astype(np.int64).ravel()
    res = np.asarray(result).astype(np.int64).ravel()
    ref_ids, ref_area = _ids_and_areas(ref)
    res_ids, res_area = _ids_and_areas(res)
    empty = np.zeros(0, np.int64)
    r, s, inter = empty, empty, empty
    both = (ref != 0) & (res != 0)
    if len(ref_ids) and len(res_ids) and both.any():
        stride = int(res_ids[-1]) + 1
        keys, inter = np.unique(ref[both] * stride + res[both], return_counts=True)
        r, s = np.divmod(keys, stride)
        r, s = np.searchsorted(ref_ids, r), np.searchsorted(res_ids, s)
    return LabelOverlaps(ref_ids, ref_area, res_ids, res_area, r, s, inter)


def match_frame(reference: np.ndarray, result: np.ndarray) -> FrameMatch:
    """The detection test of one frame of ``(H, W)`` label images (0 = background).
    ValueError for images of different sizes or negative labels."""
    o = label_overlaps(reference, result)
    covered = 2 * o.intersection > o.reference_area[o.ref_index]  # more than half of it
    where = o.ref_index[covered]
    matched = np.zeros(len(o.reference), np.int64)
    jaccard = np.zeros(len(o.reference))
    matched[where] = o.result[o.res_index[covered]]
    jaccard[where] = o.jaccard()[covered]
    return FrameMatch(o.reference, o.result, matched, jaccard)


def seg_jaccards(reference: np.ndarray, result: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame -> ``(reference ids (R,), Jaccard index of each (R,))``: the result object
    that covers more than half of a reference object is its match (0 when none)."""
    m = match_frame(reference, result)
    return m.reference, m.jaccard


def seg_measure(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """SEG over ``(reference, result)`` label images of the frames that have a reference
    segmentation: the mean Jaccard index over all reference objects (0 without any)."""
    total, count = [], 0
    for reference, result in frames:
        ids, jac = seg_jaccards(reference, result)
        total.append(jac)
        count += len(ids)
    return float(np.sum(np.concatenate(total)) / max(count, 1)) if total else 0.0
