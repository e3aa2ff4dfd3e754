"""IoU and greedy matching of COCOeval.evaluateImg, batched over images, categories,
IoU thresholds and area ranges.

pycocotools' rule, for one (image, category, threshold t, area range): detections in score
order (stable), each takes among the still-free ground truths (crowd ones are never used up)
with IoU >= min(t, 1 - 1e-10) the best *regular* one (highest IoU, last one on ties), or,
when there is none, the best *ignored* one (crowd or outside the area range). Only pairs
with IoU >= the lowest threshold can ever match, so we keep those sparse "candidate" pairs
and walk detection ranks (<= maxDets) instead of detections: every detection of rank r in
every (image, category) is decided at once for all T x A settings with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


@dataclass
class Sorted:
    """Index arrays after pycocotools' per-(image, category) ordering and maxDets truncation."""

    gt: np.ndarray  # (G,) ground-truth rows, grouped by (image, category), list order
    dt: np.ndarray  # (D,) detection rows, grouped by (image, category), score order
    dt_rank: np.ndarray  # (D,) rank of each detection inside its (image, category)


def _group_starts(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys of a sorted array, their start offsets and counts."""
    if len(key) == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    return key[starts], starts, counts


def sort_and_truncate(
    gt_img: np.ndarray,
    gt_cat: np.ndarray,
    gt_order: np.ndarray,
    dt_img: np.ndarray,
    dt_cat: np.ndarray,
    dt_order: np.ndarray,
    dt_score: np.ndarray,
    max_det: int,
) -> Sorted:
    """Order rows like pycocotools' ``_gts``/``_dts`` lists and keep the top ``max_det`` dts."""
    g = np.lexsort((gt_order, gt_cat, gt_img))
    d = np.lexsort((dt_order, -dt_score, dt_cat, dt_img))
    ncat = int(max(gt_cat.max(initial=0), dt_cat.max(initial=0))) + 1
    dkey = dt_img[d] * ncat + dt_cat[d]
    _, starts, counts = _group_starts(dkey)
    rank = np.arange(len(d)) - np.repeat(starts, counts)
    keep = rank < max_det
    return Sorted(gt=g, dt=d[keep], dt_rank=rank[keep])


def candidate_pairs(
    gt_key: np.ndarray,
    dt_key: np.ndarray,
    gt_geom: Any,
    dt_geom: Any,
    gt_crowd: np.ndarray,
    min_iou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (dt, gt, IoU) with IoU >= ``min_iou`` inside the same (image, category) key.

    ``*_key`` are sorted group keys; geometries are RLE lists or ``(N, 4)`` xywh arrays in
    the same order. IoUs come from ``pycocotools.mask.iou`` (crowd: intersection / dt area),
    one call per (image, category) exactly as COCOeval.computeIoU.
    Returns index arrays into the sorted dts and gts, and the float64 IoUs.
    """
    gk, gs, gc = _group_starts(gt_key)
    dk, ds, dc = _group_starts(dt_key)
    _, ig, idd = np.intersect1d(gk, dk, assume_unique=True, return_indices=True)
    crowd = gt_crowd.astype(np.uint8)
    chunks: list[np.ndarray] = []
    g0s, d0s, ngs = gs[ig], ds[idd], gc[ig]
    for g0, ng, d0, nd in zip(g0s.tolist(), ngs.tolist(), d0s.tolist(), dc[idd].tolist()):
        ious = mask_utils.iou(dt_geom[d0 : d0 + nd], gt_geom[g0 : g0 + ng], crowd[g0 : g0 + ng])
        chunks.append(np.asarray(ious, dtype=np.float64).reshape(nd, ng).ravel())
    if not chunks:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    sizes = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    flat = np.concatenate(chunks)
    hits = np.flatnonzero(flat >= min_iou)
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    p = np.searchsorted(offsets, hits, side="right") - 1
    local = hits - offsets[p]
    return d0s[p] + local // ngs[p], g0s[p] + local % ngs[p], flat[hits]


def greedy_match(
    e_dt: np.ndarray,
    e_gt: np.ndarray,
    e_iou: np.ndarray,
    dt_rank: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    thresholds: np.ndarray,
    n_dt: int,
) -> np.ndarray:
    """Matched ground-truth index ``(T, A, D)`` (-1: none) for every detection and setting.

    ``e_*``: candidate pairs (sorted dt / gt indices, IoU); ``gt_ignore``: ``(A, G)`` bool
    (crowd or outside area range a); ``thresholds``: ``(T,)`` IoU thresholds.
    Ground truth of one (image, category) must be contiguous and in pycocotools' list order.
    """
    T, A = len(thresholds), gt_ignore.shape[0]
    thr = np.minimum(thresholds, 1 - 1e-10)[:, None, None]
    match = np.full((T, A, n_dt), -1, dtype=np.int32)
    if len(e_dt) == 0:
        return match
    order = np.lexsort((e_gt, e_dt, dt_rank[e_dt]))
    e_dt, e_gt, e_iou = e_dt[order], e_gt[order], e_iou[order]
    _, r_starts, r_counts = _group_starts(dt_rank[e_dt])
    used = np.zeros((T, A, gt_ignore.shape[1]), dtype=bool)
    regular = ~gt_ignore
    for r0, rn in zip(r_starts.tolist(), r_counts.tolist()):
        dt, gt, iou = e_dt[r0 : r0 + rn], e_gt[r0 : r0 + rn], e_iou[r0 : r0 + rn]
        _, seg, seg_n = _group_starts(dt)
        seg_id = np.repeat(np.arange(len(seg)), seg_n)
        ok = (~used[:, :, gt] | gt_crowd[gt]) & (iou >= thr)  # (T, A, n)
        if len(seg) == rn:  # one candidate per detection: nothing to choose
            best = np.where(ok, np.arange(rn), -1)
        else:
            level = ok * (1 + regular[:, gt]).astype(np.int8)  # 2 regular, 1 ignored, 0 no
            top = np.maximum.reduceat(level, seg, axis=2)[:, :, seg_id]
            cand = ok & (level == top)
            iou_c = np.where(cand, iou, -1.0)
            cand &= iou_c == np.maximum.reduceat(iou_c, seg, axis=2)[:, :, seg_id]
            best = np.maximum.reduceat(np.where(cand, np.arange(rn), -1), seg, axis=2)
        chosen = np.where(best >= 0, gt[best], -1)
        match[:, :, dt[seg]] = chosen
        t_i, a_i, k_i = np.nonzero(best >= 0)
        used[t_i, a_i, chosen[t_i, a_i, k_i]] = True
    return match


def dt_flags(
    match: np.ndarray,
    gt_ignore: np.ndarray,
    gt_nonzero_id: np.ndarray,
    dt_outside: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(tp, fp)`` bool ``(T, A, D)`` as COCOeval.accumulate derives them from evaluateImg.

    dtIgnore = ignore flag of the matched gt, or (unmatched and outside the area range);
    "matched" means a non-zero gt id (pycocotools stores ids and tests ``dtm == 0``).
    """
    A = gt_ignore.shape[0]
    has = match >= 0
    if gt_ignore.shape[1] == 0:  # no ground truth: nothing can match
        ig = np.broadcast_to(dt_outside[None, :, :], match.shape)
        return np.zeros(match.shape, dtype=bool), ~ig
    m = np.where(has, match, 0)
    hit = has & gt_nonzero_id[m]
    ig = has & gt_ignore[np.arange(A)[None, :, None], m]
    ig |= ~hit & dt_outside[None, :, :]
    return hit & ~ig, ~hit & ~ig
