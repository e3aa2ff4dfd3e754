"""Cell Tracking Challenge measures. SEG (Ulman et al. 2017): for every reference object of
every frame with a reference segmentation, the Jaccard index of the result object that covers
more than half of it (at most one can), 0 when none does; SEG is their mean over all reference
objects. Label images are ``(H, W)`` integers, 0 = background."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["seg_jaccards", "seg_measure"]


def seg_jaccards(reference: np.ndarray, result: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame -> ``(reference ids (R,), Jaccard index of each (R,))``: the result object
    that covers more than half of a reference object is its match (0 when none)."""
    if reference.shape != result.shape:
        raise ValueError(f"reference {reference.shape} and result {result.shape} differ in size")
    ref = reference.astype(np.int64).ravel()
    res = result.astype(np.int64).ravel()
    ids = np.unique(ref)
    ids = ids[ids != 0]
    jac = np.zeros(len(ids))
    if len(ids) == 0:
        return ids, jac
    area_ref = np.bincount(ref)
    area_res = np.bincount(res)
    both = (ref != 0) & (res != 0)
    pairs, inter = np.unique(np.stack([ref[both], res[both]]), axis=1, return_counts=True)
    covered = 2 * inter > area_ref[pairs[0]]  # more than half of the reference object
    r, s, n = pairs[0][covered], pairs[1][covered], inter[covered]
    jac[np.searchsorted(ids, r)] = n / (area_ref[r] + area_res[s] - n)
    return ids, jac


def seg_measure(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """SEG over ``(reference, result)`` label images of the frames that have a reference
    segmentation: the mean Jaccard index over all reference objects (0 without any)."""
    total, count = [], 0
    for reference, result in frames:
        ids, jac = seg_jaccards(reference, result)
        total.append(jac)
        count += len(ids)
    return float(np.sum(np.concatenate(total)) / max(count, 1)) if total else 0.0
