"""COCOeval.accumulate and summarize, vectorized over IoU thresholds and area ranges.

Same float operations in the same order as pycocotools, so precision / recall / scores and
the 12 stats are bit-identical: one stable sort of each category's detections by -score
(ties: image order, then per-image score order), cumulative TP/FP, interpolated precision
sampled at the recall thresholds with ``searchsorted(side='left')``.
"""

from __future__ import annotations

import numpy as np


def accumulate(
    tp: np.ndarray,
    fp: np.ndarray,
    dt_cat: np.ndarray,
    dt_img: np.ndarray,
    dt_rank: np.ndarray,
    dt_score: np.ndarray,
    npig: np.ndarray,
    max_dets: list[int],
    rec_thrs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``precision (T,R,K,A,M)``, ``recall (T,K,A,M)``, ``scores (T,R,K,A,M)``.

    ``tp``/``fp``: bool ``(T, A, D)`` per (truncated) detection; ``dt_*``: ``(D,)`` category
    index, image index, rank inside its (image, category), score; ``npig``: ``(K, A)``
    number of non-ignored ground truths.
    """
    T, A, _ = tp.shape
    K, R, M = npig.shape[0], len(rec_thrs), len(max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    by_cat = np.lexsort((dt_rank, dt_img, -dt_score, dt_cat))
    tp, fp = tp[:, :, by_cat], fp[:, :, by_cat]
    rank, score = dt_rank[by_cat], dt_score[by_cat]
    cats, starts, counts = _groups(dt_cat[by_cat])
    cat_slice = {int(c): (int(s), int(s + n)) for c, s, n in zip(cats, starts, counts)}
    cache: dict[int, np.ndarray] = {}
    for k in range(K):
        areas = [a for a in range(A) if npig[k, a] > 0]
        if not areas:
            continue
        lo, hi = cat_slice.get(k, (0, 0))
        for m, max_det in enumerate(max_dets):
            keep = rank[lo:hi] < max_det
            nd = int(keep.sum())
            ss_all = score[lo:hi][keep]
            tp_sel = tp[:, areas, lo:hi][:, :, keep]
            tp_sum = np.cumsum(tp_sel, axis=2).astype(dtype=float)
            fp_sum = np.cumsum(fp[:, areas, lo:hi][:, :, keep], axis=2).astype(dtype=float)
            if nd == 0:  # pycocotools: recall 0, precision / scores 0
                recall[:, k, areas, m] = 0
                precision[:, :, k, areas, m] = 0
                scores[:, :, k, areas, m] = 0
                continue
            rc = tp_sum / npig[k, areas][None, :, None]
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            recall[:, k, areas, m] = rc[:, :, -1]
            pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
            inds = _recall_positions(tp_sel, npig[k, areas], rec_thrs, cache)  # (T * A', R)
            ok = inds < nd
            inds = np.where(ok, inds, 0)
            q = np.where(ok, np.take_along_axis(pr.reshape(-1, nd), inds, axis=1), 0.0)
            ss = np.where(ok, ss_all[inds], 0.0)
            precision[:, :, k, areas, m] = q.reshape(T, len(areas), R).transpose(0, 2, 1)
            scores[:, :, k, areas, m] = ss.reshape(T, len(areas), R).transpose(0, 2, 1)
    return precision, recall, scores


def _recall_positions(tp: np.ndarray, npig: np.ndarray, rec_thrs: np.ndarray, cache: dict) -> np.ndarray:
    """``searchsorted(tp_cumsum / npig, rec_thrs, side='left')`` for every (t, a) row, exactly.

    ``tp``: bool ``(T, A', n)``; ``npig``: ``(A',)``. Recall after i detections is
    ``fl(j / npig)`` with j the true positives so far, so the first position with recall >=
    thr is the position of the c-th true positive, c = first j with ``fl(j / npig) >= thr``
    (same float division as pycocotools); ``n`` where it is never reached.
    """
    T, A, n = tp.shape
    need = np.empty((A, len(rec_thrs)), dtype=np.int64)  # c per area row and threshold
    for j, npg in enumerate(npig.tolist()):
        if npg not in cache:
            cache[npg] = np.searchsorted(np.arange(npg + 1) / npg, rec_thrs, side="left")
        need[j] = cache[npg]
    flat = tp.reshape(T * A, n)
    ntp = flat.sum(axis=1)
    cols = np.nonzero(flat)[1]
    first = np.r_[0, np.cumsum(ntp)[:-1]]
    c = np.broadcast_to(need[None], (T, A, len(rec_thrs))).reshape(T * A, -1)
    reached = (c >= 1) & (c <= ntp[:, None])
    at = np.where(reached, first[:, None] + c - 1, 0)
    pos = np.where(reached, cols[at] if len(cols) else 0, n)
    return np.where(c == 0, 0, pos)


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(key) == 0:
        return key, key, key
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return key[starts], starts, np.diff(np.r_[starts, len(key)])


def summarize_value(
    precision: np.ndarray,
    recall: np.ndarray,
    iou_thrs: np.ndarray,
    area_labels: list[str],
    max_dets: list[int],
    ap: int = 1,
    iou_thr: float | None = None,
    area: str = "all",
    max_det: int = 100,
) -> float:
    """pycocotools ``_summarize``: mean over entries > -1 (or -1 when there are none)."""
    aind = [i for i, lbl in enumerate(area_labels) if lbl == area]
    mind = [i for i, m in enumerate(max_dets) if m == max_det]
    if ap == 1:
        s = precision
        if iou_thr is not None:
            s = s[np.where(iou_thr == iou_thrs)[0]]
        s = s[:, :, :, aind, mind]
    else:
        s = recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == iou_thrs)[0]]
        s = s[:, :, aind, mind]
    if len(s[s > -1]) == 0:
        return -1.0
    return float(np.mean(s[s > -1]))


#: (key, ap, iou_thr, area, index into max_dets or None for 100) of the 12 stats
STAT_SPECS: list[tuple[str, int, float | None, str, int | None]] = [
    ("AP", 1, None, "all", None),
    ("AP50", 1, 0.5, "all", 2),
    ("AP75", 1, 0.75, "all", 2),
    ("APs", 1, None, "small", 2),
    ("APm", 1, None, "medium", 2),
    ("APl", 1, None, "large", 2),
    ("AR1", 0, None, "all", 0),
    ("AR10", 0, None, "all", 1),
    ("AR100", 0, None, "all", 2),
    ("ARs", 0, None, "small", 2),
    ("ARm", 0, None, "medium", 2),
    ("ARl", 0, None, "large", 2),
]


def summarize(
    precision: np.ndarray,
    recall: np.ndarray,
    iou_thrs: np.ndarray,
    area_labels: list[str],
    max_dets: list[int],
) -> np.ndarray:
    """The 12 stats of ``COCOeval.summarize`` (``(12,)`` float64)."""
    stats = np.zeros((12,))
    for i, (_, ap, thr, area, mi) in enumerate(STAT_SPECS):
        md = 100 if mi is None else max_dets[mi]
        stats[i] = summarize_value(precision, recall, iou_thrs, area_labels, max_dets, ap, thr, area, md)
    return stats
