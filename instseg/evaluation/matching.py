"""Matching metrics: IoU matrices, optimal one-to-one matching, precision / recall / F1 / PQ.

Counting metrics for instance segmentation (the cell-biology and panoptic style, as opposed
to COCO's ranked AP): ground truth and predictions are matched one-to-one, a pair may match
when ``IoU >= threshold`` (and ``IoU > 0``), and the matching is *optimal*: it maximizes the
number of matches, ties broken by the largest IoU sum (``scipy.optimize.linear_sum_assignment``
on weights ``K + IoU`` with ``K = min(G, P) + 1``, so one more match always outweighs any IoU
sum), solved per connected component of the sparse candidate graph. Pairs whose GT and
prediction have no other candidate (always the case for ``threshold > 0.5`` with
non-overlapping masks) match directly. Label images never build a dense (G, P) matrix.

Counts per threshold: ``tp`` matched pairs, ``fp = n_pred - tp``, ``fn = n_true - tp``;
precision ``tp/(tp+fp)``, recall ``tp/(tp+fn)``, F1, accuracy ``tp/(tp+fp+fn)``, mean matched
IoU (SQ) and panoptic quality ``PQ = SQ * RQ = sum_iou / (tp + fp/2 + fn/2)``. Divisions by
zero give 0. Dataset figures sum the counts over images (not a mean of per-image ratios).

Inputs: label images ``(H, W)`` int (0 background, one id per instance, ids need not be
consecutive), or :class:`~instseg.structures.Instances` with bool masks, or COCO RLEs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as mask_utils

from instseg.masks import to_compressed

if TYPE_CHECKING:
    from instseg.structures import Instances

#: thresholds reported by default: 0.1, 0.2, ..., 0.9
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MatchingStats",
    "format_table",
    "instances_iou",
    "PairIoU",
    "label_image_iou",
    "label_image_pairs",
    "match_instances",
    "match_iou",
    "match_label_images",
    "match_pairs",
    "matching_stats",
    "rle_iou",
    "sum_stats",
]


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b > 0 else 0.0


@dataclass
class MatchingStats:
    """Counts at one IoU threshold; ratios are properties so sums stay exact."""

    threshold: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    sum_matched_iou: float = 0.0

    @property
    def n_true(self) -> int:
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float:
        return _div(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _div(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _div(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        return _div(self.tp, self.tp + self.fp + self.fn)

    @property
    def mean_matched_iou(self) -> float:
        """Segmentation quality SQ: mean IoU of the matched pairs."""
        return _div(self.sum_matched_iou, self.tp)

    @property
    def panoptic_quality(self) -> float:
        """PQ = SQ * RQ = sum of matched IoU / (tp + fp/2 + fn/2)."""
        return _div(self.sum_matched_iou, self.tp + 0.5 * self.fp + 0.5 * self.fn)

    def __add__(self, other: MatchingStats) -> MatchingStats:
        if abs(self.threshold - other.threshold) > 1e-9:
            raise ValueError("cannot add MatchingStats of different thresholds")
        return MatchingStats(
            self.threshold,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.sum_matched_iou + other.sum_matched_iou,
        )

    def to_dict(self) -> dict[str, float | int]:
        """Counts and every ratio, JSON-ready."""
        out: dict[str, float | int] = asdict(self)
        for name in ("n_true", "n_pred", "precision", "recall", "f1", "accuracy", "mean_matched_iou", "panoptic_quality"):
            out[name] = getattr(self, name)
        return out


# -- IoU matrices ----------------------------------------------------------------------------
#: contingency tables up to this many cells use a dense ``np.bincount``; larger ones ``np.unique``
DENSE_TABLE_LIMIT = 1 << 24


@dataclass
class PairIoU:
    """Sparse IoU: the ``(row, col, iou)`` triples of every overlapping (GT, prediction) pair
    of a ``(n_true, n_pred)`` matrix; absent pairs have IoU 0."""

    n_true: int
    n_pred: int
    rows: np.ndarray  # (E,) int64
    cols: np.ndarray  # (E,) int64
    iou: np.ndarray  # (E,) float64, > 0

    @classmethod
    def from_dense(cls, iou: np.ndarray) -> PairIoU:
        iou = np.asarray(iou, dtype=np.float64)
        if iou.ndim != 2:
            raise ValueError(f"IoU matrix must be 2-D, got shape {iou.shape}")
        r, c = np.nonzero(iou > 0)
        return cls(iou.shape[0], iou.shape[1], r.astype(np.int64), c.astype(np.int64), iou[r, c])

    def dense(self) -> np.ndarray:
        out = np.zeros((self.n_true, self.n_pred), dtype=np.float64)
        out[self.rows, self.cols] = self.iou
        return out


def _relabel(label: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,), index (H*W,))``: sorted non-zero ids and each pixel's 0..N index (0 = bg)."""
    flat = np.asarray(label).reshape(-1)
    if not np.issubdtype(flat.dtype, np.integer) and not np.issubdtype(flat.dtype, np.bool_):
        if not np.all(flat == np.round(flat)):
            raise ValueError(f"{name} label image has non-integer values")
    flat = flat.astype(np.int64)
    if flat.size == 0:
        return np.zeros((0,), np.int64), flat
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0:
        raise ValueError(f"{name} label image has negative values")
    if hi < DENSE_TABLE_LIMIT:  # O(pixels) lookup table instead of a sort
        present = np.bincount(flat, minlength=hi + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(hi + 1, dtype=np.int64)
        lut[ids] = np.arange(1, len(ids) + 1)
        return ids, lut[flat]
    ids, inv = np.unique(flat, return_inverse=True)
    inv = inv.reshape(-1)
    if ids[0] != 0:
        return ids, inv + 1
    return ids[1:], inv


def label_image_pairs(gt: np.ndarray, pred: np.ndarray) -> tuple[PairIoU, np.ndarray, np.ndarray]:
    """Sparse IoU of two label images ``(H, W)``: ``(PairIoU, gt_ids (G,), pred_ids (P,))``.

    One pass over the pixels: the contingency table is ``np.bincount(g * (P + 1) + p)`` on
    0..G / 0..P re-indexed ids (``np.unique`` on the same codes when the table would exceed
    :data:`DENSE_TABLE_LIMIT` cells). Row/col ``k`` is id ``gt_ids[k]`` / ``pred_ids[k]``.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"label images differ in shape: GT {gt.shape}, prediction {pred.shape}")
    gt_ids, g = _relabel(gt, "GT")
    pred_ids, p = _relabel(pred, "prediction")
    n_g, n_p = len(gt_ids), len(pred_ids)
    area_g = np.bincount(g, minlength=n_g + 1)
    area_p = np.bincount(p, minlength=n_p + 1)
    both = (g > 0) & (p > 0)
    codes = g[both] * (n_p + 1) + p[both]
    if (n_g + 1) * (n_p + 1) <= DENSE_TABLE_LIMIT:
        table = np.bincount(codes, minlength=(n_g + 1) * (n_p + 1))
        cells = np.flatnonzero(table)
        inter = table[cells]
    else:
        cells, inter = np.unique(codes, return_counts=True)
    rows, cols = cells // (n_p + 1), cells % (n_p + 1)
    union = area_g[rows] + area_p[cols] - inter
    pairs = PairIoU(n_g, n_p, rows - 1, cols - 1, inter / union.astype(np.float64))
    return pairs, gt_ids, pred_ids


def label_image_iou(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense IoU ``(G, P)`` float64 of two label images, with ``gt_ids (G,)``, ``pred_ids (P,)``
    (see :func:`label_image_pairs`, which stays sparse for many instances)."""
    pairs, gt_ids, pred_ids = label_image_pairs(gt, pred)
    return pairs.dense(), gt_ids, pred_ids


def rle_iou(gt_rles: Sequence[dict[str, Any]], pred_rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """IoU ``(G, P)`` float64 of COCO RLEs (pycocotools ``mask.iou``, iscrowd=0)."""
    if len(gt_rles) == 0 or len(pred_rles) == 0:
        return np.zeros((len(gt_rles), len(pred_rles)), dtype=np.float64)
    g = [to_compressed(r) for r in gt_rles]
    p = [to_compressed(r) for r in pred_rles]
    out = mask_utils.iou(g, p, [0] * len(p))
    return np.asarray(out, dtype=np.float64).reshape(len(g), len(p))


def instances_iou(gt: Instances, pred: Instances, class_aware: bool = False) -> np.ndarray:
    """Mask IoU ``(G, P)`` of two :class:`Instances` (via RLE); pairs of different
    labels get IoU 0 when ``class_aware``."""
    if gt.masks is None or pred.masks is None:
        raise ValueError("matching metrics need masks on both GT and prediction Instances")
    if gt.image_size != pred.image_size:
        raise ValueError(f"image sizes differ: GT {gt.image_size}, prediction {pred.image_size}")
    iou = rle_iou(gt.to_rles(), pred.to_rles())
    if class_aware and iou.size:
        same = gt.labels.cpu().numpy()[:, None] == pred.labels.cpu().numpy()[None, :]
        iou = np.where(same, iou, 0.0)
    return iou


# -- matching --------------------------------------------------------------------------------
def match_pairs(pairs: PairIoU, threshold: float) -> np.ndarray:
    """Optimal one-to-one matching on sparse IoU; returns indices into ``pairs`` of the matches.

    Candidates are pairs with ``iou >= threshold``. Pairs whose GT and prediction have no
    other candidate match directly, stars (one GT or prediction with several candidates that
    have no other) take their best IoU; the rest is split into connected components of the
    candidate graph and each is solved by ``linear_sum_assignment`` on weights ``K + IoU``.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cand = np.flatnonzero(pairs.iou >= threshold)
    if cand.size == 0:
        return cand.astype(np.int64)
    r, c = pairs.rows[cand], pairs.cols[cand]
    deg_r, deg_c = np.bincount(r)[r], np.bincount(c)[c]
    simple = (deg_r == 1) & (deg_c == 1)
    out = [cand[simple]]
    # stars (one GT whose candidates have no other GT, e.g. a split object; or the reverse,
    # a merge): the best IoU of the star is the optimum
    for centre, leaf_deg, centre_deg in ((r, deg_c, deg_r), (c, deg_r, deg_c)):
        has_shared_leaf = np.bincount(centre, weights=(leaf_deg > 1).astype(np.float64)) > 0
        star = ~has_shared_leaf[centre] & (centre_deg > 1)
        if star.any():
            idx = np.flatnonzero(star)
            order = idx[np.lexsort((-pairs.iou[cand[idx]], centre[idx]))]
            first = np.concatenate([[True], centre[order][1:] != centre[order][:-1]])
            out.append(cand[order[first]])
            simple |= star
    rest = cand[~simple]
    if rest.size:
        ur, ri = np.unique(pairs.rows[rest], return_inverse=True)
        uc, ci = np.unique(pairs.cols[rest], return_inverse=True)
        n1, n = len(ur), len(ur) + len(uc)
        graph = coo_matrix((np.ones(rest.size), (ri, ci + n1)), shape=(n, n))
        _, comp_of_node = connected_components(graph, directed=False)
        comp = comp_of_node[ri]
        order = np.argsort(comp, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(comp[order])) + 1):
            gr, a = np.unique(ri[group], return_inverse=True)
            gc, b = np.unique(ci[group], return_inverse=True)
            weight = np.zeros((len(gr), len(gc)))
            edge = np.full((len(gr), len(gc)), -1, dtype=np.int64)
            weight[a, b] = min(len(gr), len(gc)) + 1.0 + pairs.iou[rest[group]]
            edge[a, b] = rest[group]
            x, y = linear_sum_assignment(weight, maximize=True)
            hit = edge[x, y]
            out.append(hit[hit >= 0])
    return np.sort(np.concatenate(out))


def match_iou(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching on a dense IoU matrix ``(G, P)``.

    A pair is a candidate when ``iou >= threshold`` and ``iou > 0``. Returns the matched
    ``(gt_index, pred_index)`` arrays: the most matches possible, ties by the largest IoU sum.
    """
    pairs = PairIoU.from_dense(iou)
    k = match_pairs(pairs, threshold)
    return pairs.rows[k], pairs.cols[k]


def matching_stats(
    iou: np.ndarray | PairIoU, thresholds: Iterable[float] = DEFAULT_THRESHOLDS
) -> list[MatchingStats]:
    """Counts of one image, one :class:`MatchingStats` per threshold, from IoU ``(G, P)``
    (dense array or :class:`PairIoU`)."""
    pairs = iou if isinstance(iou, PairIoU) else PairIoU.from_dense(iou)
    out = []
    for t in thresholds:
        k = match_pairs(pairs, t)
        tp = len(k)
        out.append(MatchingStats(float(t), tp, pairs.n_pred - tp, pairs.n_true - tp, float(pairs.iou[k].sum())))
    return out


def match_label_images(
    gt: np.ndarray, pred: np.ndarray, thresholds: Iterable[float] = DEFAULT_THRESHOLDS
) -> list[MatchingStats]:
    """Matching metrics of two label images ``(H, W)`` (0 = background)."""
    pairs, _, _ = label_image_pairs(gt, pred)
    return matching_stats(pairs, thresholds)


def match_instances(
    gt: Instances,
    pred: Instances,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    score_threshold: float | None = None,
    class_aware: bool = False,
) -> list[MatchingStats]:
    """Matching metrics of GT and predicted :class:`Instances` of one image.

    Predictions with ``score < score_threshold`` are dropped first; crowd GT is left out.
    ``class_aware`` lets a prediction match only GT of its own label.
    """
    if gt.iscrowd is not None and bool(gt.iscrowd.any()):
        gt = gt[~gt.iscrowd]
    if score_threshold is not None:
        pred = pred.filter(score_threshold=score_threshold)
    return matching_stats(instances_iou(gt, pred, class_aware), thresholds)


def sum_stats(per_image: Iterable[Sequence[MatchingStats]]) -> list[MatchingStats]:
    """Sum per-image stats (same thresholds, same order) into dataset stats."""
    total: list[MatchingStats] | None = None
    for stats in per_image:
        total = list(stats) if total is None else [a + b for a, b in zip(total, stats, strict=True)]
    if total is None:
        raise ValueError("sum_stats needs at least one image")
    return total


def format_table(stats: Sequence[MatchingStats], chosen: float | None = None) -> str:
    """A fixed-width table, one row per threshold; the ``chosen`` threshold is marked ``*``.

    Columns: counts, precision, recall, F1, accuracy, SQ (mean matched IoU), PQ."""
    cols = ("IoU", "TP", "FP", "FN", "prec", "recall", "F1", "acc", "SQ", "PQ")
    lines = ["  ".join(f"{c:>7}" for c in cols)]
    for s in stats:
        mark = "*" if chosen is not None and abs(s.threshold - chosen) < 1e-9 else " "
        vals = [
            f"{s.threshold:>6.2f}{mark}",
            f"{s.tp:>7d}",
            f"{s.fp:>7d}",
            f"{s.fn:>7d}",
            *(f"{v:>7.4f}" for v in (s.precision, s.recall, s.f1, s.accuracy, s.mean_matched_iou, s.panoptic_quality)),
        ]
        lines.append("  ".join(vals))
    return "\n".join(lines)
