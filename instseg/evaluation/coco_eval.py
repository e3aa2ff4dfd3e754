"""COCO AP / AR, identical to pycocotools' COCOeval (segm and bbox), and fast.

``evaluate(gt, dt)`` gives the 12 standard stats bit-identical to ``COCOeval.summarize`` and
precision / recall / scores arrays equal to ``COCOeval.eval``. Everything pycocotools does is
reproduced: loadRes' mode switch on the first result, crowd regions (IoU = intersection /
detection area, never used up), area ranges from the ``area`` field with inclusive ends,
``ignore`` overwritten by ``iscrowd``, stable (mergesort) order on score ties, maxDets
truncation, categories without ground truth (-1), a match to ground-truth id 0 counting as
no match. Defined where pycocotools crashes: an empty results list is evaluated as "no
detections"; polygon / uncompressed-RLE results are rasterized like ground truth; a ground
truth without ``iscrowd`` is not crowd, one without ``area`` gets its mask (box) area.
Rejected with a DataError: a result whose image or category is not in the ground truth,
a result without image_id / category_id / score, duplicate ground-truth annotation ids.

Only numpy and ``pycocotools.mask`` are used at run time (pycocotools' COCO / COCOeval
classes are test-only oracles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instseg.evaluation.cocoeval_accumulate import (
    STAT_SPECS,
    accumulate,
    summarize,
    summarize_value,
)
from instseg.evaluation.cocoeval_load import dt_annotations, gt_annotations, load_dt, load_gt
from instseg.evaluation.cocoeval_match import (
    candidate_pairs,
    dt_flags,
    greedy_match,
    sort_and_truncate,
)

#: pycocotools' default parameters (same expressions, so the same floats)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = [[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]]
AREA_LABELS = ["all", "small", "medium", "large"]
STAT_KEYS = [spec[0] for spec in STAT_SPECS]


@dataclass
class COCOResult:
    """Result of :func:`evaluate`.

    ``stats``: ``(12,)`` as pycocotools' ``COCOeval.stats``; ``precision``: ``(T, R, K, A, M)``,
    ``recall``: ``(T, K, A, M)``, ``scores``: ``(T, R, K, A, M)`` (-1 where a category has no
    ground truth in that area range); ``cat_ids``: the K category ids ([-1] without
    categories); T IoU thresholds, R recall thresholds, A area ranges, M max detections.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    cat_ids: list[Any]
    iou_thresholds: np.ndarray
    rec_thresholds: np.ndarray = field(default_factory=lambda: REC_THRESHOLDS.copy())
    area_labels: list[str] = field(default_factory=lambda: list(AREA_LABELS))
    max_dets: list[int] = field(default_factory=lambda: [1, 10, 100])
    iou_type: str = "segm"

    def summary(self) -> dict[str, float]:
        """The 12 stats by name: AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl."""
        return {k: float(v) for k, v in zip(STAT_KEYS, self.stats)}

    def per_class(self) -> dict[Any, dict[str, float]]:
        """The 12 stats of each category id alone (-1 where it has no ground truth)."""
        out: dict[Any, dict[str, float]] = {}
        for k, cat_id in enumerate(self.cat_ids):
            p = self.precision[:, :, k : k + 1]
            r = self.recall[:, k : k + 1]
            vals = summarize(p, r, self.iou_thresholds, self.area_labels, self.max_dets)
            out[cat_id] = {key: float(v) for key, v in zip(STAT_KEYS, vals)}
        return out

    def format_table(self, cat_names: dict[Any, str] | None = None) -> str:
        """Per-class table: id, name, AP, AP50, AP75, APs, APm, APl, AR100 (in %, '-' for -1).

        Categories without any ground truth are left out (counted in a last line).
        """
        cols = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"]
        names = cat_names or {}
        per = self.per_class()
        rows = [(str(c), str(names.get(c, c)), v) for c, v in per.items() if v["AR100"] > -1]
        wn = max([len(r[1]) for r in rows] + [8])
        wi = max([len(r[0]) for r in rows] + [2])
        head = f"{'id':>{wi}}  {'category':<{wn}}" + "".join(f"{c:>7}" for c in cols)
        lines = [head, "-" * len(head)]
        for cid, name, v in rows:
            cells = "".join(f"{'-':>7}" if v[c] < 0 else f"{100 * v[c]:7.1f}" for c in cols)
            lines.append(f"{cid:>{wi}}  {name:<{wn}}" + cells)
        if len(rows) < len(per):
            lines.append(f"({len(per) - len(rows)} categories without ground truth not shown)")
        return "\n".join(lines)

    def __str__(self) -> str:
        """The 12 lines of pycocotools' ``summarize()``."""
        i_str = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"
        lines = []
        for (_, ap, thr, area, mi), value in zip(STAT_SPECS, self.stats):
            title = "Average Precision" if ap == 1 else "Average Recall"
            typ = "(AP)" if ap == 1 else "(AR)"
            t0, t1 = self.iou_thresholds[0], self.iou_thresholds[-1]
            iou = f"{t0:0.2f}:{t1:0.2f}" if thr is None else f"{thr:0.2f}"
            md = 100 if mi is None else self.max_dets[mi]
            lines.append(i_str.format(title, typ, iou, area, md, value))
        return "\n".join(lines)


def evaluate(
    gt: dict | str | Path,
    dt: list | str | Path,
    iou_type: str = "segm",
    *,
    max_dets: Sequence[int] = (1, 10, 100),
    img_ids: Sequence[Any] | None = None,
    cat_ids: Sequence[Any] | None = None,
    use_cats: bool = True,
) -> COCOResult:
    """COCO evaluation of results ``dt`` (list or JSON path) against ``gt`` (dict or path).

    ``iou_type``: "segm" (masks, RLE IoU) or "bbox" (xywh boxes). ``img_ids`` / ``cat_ids``
    restrict the evaluation as ``COCOeval.params`` would; ``use_cats=False`` pools all
    categories. Raises DataError on bad input (file and item named).
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', not {iou_type!r}")
    max_dets = sorted(int(m) for m in max_dets)
    if len(max_dets) != 3:
        raise ValueError(f"max_dets needs 3 values (like pycocotools' summarize), got {max_dets}")
    gt_data, gt_name = load_gt(gt)
    dt_data, dt_name = load_dt(dt)
    gt_images = {img["id"]: img for img in gt_data["images"] if isinstance(img, dict) and "id" in img}
    all_cats = [c["id"] for c in gt_data["categories"] if isinstance(c, dict) and "id" in c]
    imgs = sorted(set(gt_images) if img_ids is None else set(img_ids))
    if cat_ids is None:
        cats = sorted(set(all_cats))
    else:
        cats = sorted(set(cat_ids)) if use_cats else list(cat_ids)
    img_index = {v: i for i, v in enumerate(imgs)}
    cat_index = {v: i for i, v in enumerate(cats)}
    g = gt_annotations(gt_data, gt_name, iou_type, img_index, cat_index, use_cats)
    d = dt_annotations(dt_data, dt_name, iou_type, gt_images, set(all_cats), img_index, cat_index, use_cats)
    return _evaluate_arrays(g, d, iou_type, max_dets, cats if use_cats else [-1])


def _take(geom: Any, idx: np.ndarray) -> Any:
    return geom[idx] if isinstance(geom, np.ndarray) else [geom[i] for i in idx.tolist()]


def _evaluate_arrays(g: Any, d: Any, iou_type: str, max_dets: list[int], cat_ids: list[Any]) -> COCOResult:
    """Evaluate loaded :class:`~instseg.evaluation.cocoeval_load.Annotations`."""
    iou_thrs = IOU_THRESHOLDS
    rng = np.asarray(AREA_RANGES, dtype=np.float64)
    srt = sort_and_truncate(g.img, g.cat, g.order, d.img, d.cat, d.order, d.score, max_dets[-1])
    gi, di = srt.gt, srt.dt
    K = len(cat_ids)
    gt_img, gt_cat, gt_area, gt_crowd = g.img[gi], g.cat[gi], g.area[gi], g.crowd[gi]
    dt_img, dt_cat, dt_area, dt_score = d.img[di], d.cat[di], d.area[di], d.score[di]
    e_dt, e_gt, e_iou = candidate_pairs(
        gt_img * K + gt_cat,
        dt_img * K + dt_cat,
        _take(g.geom, gi),
        _take(d.geom, di),
        gt_crowd,
        float(min(np.minimum(iou_thrs, 1 - 1e-10))),
    )
    gt_ignore = gt_crowd[None, :] | (gt_area[None, :] < rng[:, :1]) | (gt_area[None, :] > rng[:, 1:])
    dt_outside = (dt_area[None, :] < rng[:, :1]) | (dt_area[None, :] > rng[:, 1:])
    match = greedy_match(e_dt, e_gt, e_iou, srt.dt_rank, gt_ignore, gt_crowd, iou_thrs, len(di))
    tp, fp = dt_flags(match, gt_ignore, g.nonzero_id[gi], dt_outside)
    npig = np.zeros((K, len(rng)), dtype=np.int64)
    for a in range(len(rng)):
        npig[:, a] = np.bincount(gt_cat[~gt_ignore[a]], minlength=K)[:K]
    precision, recall, scores = accumulate(
        tp, fp, dt_cat, dt_img, srt.dt_rank, dt_score, npig, max_dets, REC_THRESHOLDS
    )
    stats = summarize(precision, recall, iou_thrs, AREA_LABELS, max_dets)
    return COCOResult(
        stats=stats,
        precision=precision,
        recall=recall,
        scores=scores,
        cat_ids=list(cat_ids),
        iou_thresholds=iou_thrs.copy(),
        max_dets=list(max_dets),
        iou_type=iou_type,
    )


__all__ = ["COCOResult", "evaluate", "summarize_value", "IOU_THRESHOLDS", "REC_THRESHOLDS", "STAT_KEYS"]
