"""Multi-object tracking evaluation of tracked :class:`~instseg.structures.Instances`
sequences: HOTA, CLEAR MOT (MOTA, MOTSA, ...) and identity (IDF1) measures, equal to
TrackEval 1.3 (its MOTS Challenge path for masks) to 1e-9.

Each frame's similarity is the IoU of every ground-truth instance with every prediction: mask
IoU from pycocotools RLEs when all instances carry masks, box IoU otherwise. Ground-truth
instances marked ``iscrowd`` are an ignore region, as in MOTS Challenge: a prediction left
unmatched at IoU 0.5 that lies more than half inside the frame's crowd region is dropped.
Class labels and scores are not used (class-agnostic, every prediction counts).

:func:`tracking_data` builds :class:`~instseg.evaluation.mot_metrics.TrackingData` (from
compressed RLEs frame by frame: :func:`mask_frame`; from label images: :func:`label_tracking_data`);
:func:`tracking_metrics` returns the summary TrackEval prints (HOTA averaged over alphas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from instseg.errors import DataError
from instseg.evaluation.ctc import label_overlaps
from instseg.evaluation.mot_metrics import (
    ALPHAS,
    TrackingData,
    clear,
    hota,
    identity,
    make_tracking_data,
)
from instseg.structures import Instances

__all__ = [
    "ALPHAS",
    "TrackingData",
    "box_iou",
    "clear",
    "hota",
    "identity",
    "label_tracking_data",
    "make_tracking_data",
    "mask_frame",
    "summarize_tracking",
    "tracking_data",
    "tracking_metrics",
]

_EPS = float(np.finfo(float).eps)
_IOU_TYPES = ("auto", "mask", "box")


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, ioa: bool = False) -> np.ndarray:
    """IoU (or, with ``ioa``, intersection over the area of ``boxes1``) of xyxy boxes
    ``(N, 4)`` x ``(M, 4)`` -> ``(N, M)`` float64; degenerate boxes score 0."""
    b1, b2 = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    lo = np.maximum(b1[:, None, :2], b2[None, :, :2])
    hi = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.maximum(hi - lo, 0)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    if ioa:
        out = np.zeros_like(inter)
        ok = area1 > 0 + _EPS
        out[ok] = inter[ok] / area1[ok, None]
        return out
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    inter[area1 <= 0 + _EPS, :] = 0
    inter[:, area2 <= 0 + _EPS] = 0
    inter[union <= 0 + _EPS] = 0
    union[union <= 0 + _EPS] = 1
    return inter / union


def _rles(inst: Instances) -> list[dict[str, Any]]:
    """Compressed RLEs of an instance set's masks (as pycocotools' ``encode`` gives them),
    built from each mask's bounding crop: column-major runs of the set pixels."""
    assert inst.masks is not None
    masks = inst.masks.cpu().numpy()
    h, w = masks.shape[1:]
    cols, rows = np.any(masks, axis=1), np.any(masks, axis=2)  # (N, W), (N, H)
    out = []
    for m, c, r in zip(masks, cols, rows):
        xs, ys = np.flatnonzero(c), np.flatnonzero(r)
        if len(xs) == 0:
            out.append({"size": [h, w], "counts": [h * w]})
            continue
        crop = m[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        x, y = np.nonzero(crop.T)  # column-major order
        idx = (x + xs[0]) * h + (y + ys[0])
        cut = np.flatnonzero(np.diff(idx) != 1) + 1
        starts, ends = idx[np.r_[0, cut]], idx[np.r_[cut - 1, len(idx) - 1]] + 1
        counts = np.stack([starts - np.r_[0, ends[:-1]], ends - starts], 1).ravel().tolist()
        tail = h * w - int(ends[-1])
        out.append({"size": [h, w], "counts": counts + [tail] if tail else counts})
    return list(mask_utils.frPyObjects(out, h, w)) if out else []


def _mask_iou(a: list[dict[str, Any]], b: list[dict[str, Any]], ioa: bool = False) -> np.ndarray:
    """pycocotools RLE IoU (IoA over ``a`` with ``ioa``): ``(len(a), len(b))`` float64."""
    out = mask_utils.iou(a, b, [ioa] * len(b))
    return np.asarray(out, np.float64).reshape(len(a), len(b))


def _unmatched(similarity: np.ndarray) -> np.ndarray:
    """Indices of the predictions (columns) left unmatched by a one-to-one matching at IoU 0.5."""
    n_pred = similarity.shape[1]
    if similarity.size == 0:
        return np.arange(n_pred)
    scores = np.where(similarity < 0.5 - _EPS, -10000.0, similarity)
    rows, cols = linear_sum_assignment(-scores)
    matched = cols[scores[rows, cols] > 0 + _EPS]
    return np.setdiff1d(np.arange(n_pred), matched)


def _check_frame(inst: Instances, side: str, t: int, use_masks: bool) -> None:
    """DataError for a frame without the fields the evaluation needs."""
    crowd = inst.iscrowd.cpu().numpy() if inst.iscrowd is not None else np.zeros(len(inst), bool)
    if inst.track_ids is None and (~crowd).any():
        raise DataError(None, f"{side} frame {t}", "track_ids missing (tracked instances needed)")
    if use_masks and len(inst) and inst.masks is None:
        raise DataError(None, f"{side} frame {t}", "masks missing (iou_type='mask')")


def _drop_in_crowd(p_ids: np.ndarray, sim: np.ndarray, inside: Callable[[np.ndarray], np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Drop the predictions left unmatched at IoU 0.5 that lie more than half inside the
    crowd region (``inside(candidates)`` -> their IoA ``(n, k)``)."""
    cand = _unmatched(sim)
    drop = cand[np.any(inside(cand) > 0.5 + _EPS, axis=1)]
    return np.delete(p_ids, drop), np.delete(sim, drop, axis=1)


def mask_frame(gt_ids: np.ndarray, gt_rles: list[dict[str, Any]], pred_ids: np.ndarray,
               pred_rles: list[dict[str, Any]], crowd_rles: Sequence[dict[str, Any]] = ()
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame from compressed RLEs (pycocotools dicts, counts bytes) -> (gt ids, kept
    predicted ids, mask IoU ``(T_g, T_p)``); ``crowd_rles`` are the ground truth's ignore
    regions (see the module docstring)."""
    g_ids, p_ids = np.asarray(gt_ids, np.int64), np.asarray(pred_ids, np.int64)
    sim = _mask_iou(gt_rles, pred_rles)
    if len(crowd_rles) and len(pred_rles):
        region = mask_utils.merge(list(crowd_rles), intersect=False)
        p_ids, sim = _drop_in_crowd(
            p_ids, sim, lambda cand: _mask_iou([pred_rles[i] for i in cand], [region], ioa=True))
    return g_ids, p_ids, sim


def _frame(gt: Instances, pred: Instances, use_masks: bool, t: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame -> (gt track ids (T_g,), kept predicted track ids (T_p,), IoU (T_g, T_p))."""
    crowd = gt.iscrowd.cpu().numpy().astype(bool) if gt.iscrowd is not None else np.zeros(len(gt), bool)
    if use_masks and len(gt) and len(pred) and gt.image_size != pred.image_size:
        raise DataError(None, f"pred frame {t}", f"image size {pred.image_size} differs from "
                        f"the ground truth's {gt.image_size}")
    g_ids = gt.track_ids.cpu().numpy()[~crowd] if gt.track_ids is not None else np.zeros(0, np.int64)
    p_ids = pred.track_ids.cpu().numpy() if pred.track_ids is not None else np.zeros(0, np.int64)
    if use_masks:
        g_rle, p_rle = (_rles(gt) if len(gt) else []), (_rles(pred) if len(pred) else [])
        return mask_frame(g_ids, [r for r, c in zip(g_rle, crowd) if not c], p_ids, p_rle,
                          [r for r, c in zip(g_rle, crowd) if c])
    sim = box_iou(gt.boxes.cpu().numpy()[~crowd], pred.boxes.cpu().numpy())
    if crowd.any() and len(pred):
        p_boxes, crowd_boxes = pred.boxes.cpu().numpy(), gt.boxes.cpu().numpy()[crowd]
        p_ids, sim = _drop_in_crowd(p_ids, sim, lambda cand: box_iou(p_boxes[cand], crowd_boxes, ioa=True))
    return g_ids, p_ids, sim


def tracking_data(
    gt: Sequence[Instances], pred: Sequence[Instances], iou_type: str = "auto"
) -> TrackingData:
    """Ground-truth and predicted frames (``track_ids`` set) -> :class:`TrackingData`.

    ``iou_type``: "mask", "box", or "auto" (mask IoU when every instance has masks).
    DataError when the frame counts differ or a frame lacks track ids (or masks).
    """
    if iou_type not in _IOU_TYPES:
        raise ValueError(f"iou_type must be one of {_IOU_TYPES}, got {iou_type!r}")
    if len(gt) != len(pred):
        raise DataError(None, "pred", f"has {len(pred)} frames, the ground truth {len(gt)}")
    if iou_type == "auto":
        use_masks = all(i.masks is not None for i in (*gt, *pred) if len(i))
    else:
        use_masks = iou_type == "mask"
    for side, frames in (("gt", gt), ("pred", pred)):
        for t, inst in enumerate(frames):
            _check_frame(inst, side, t, use_masks)
    g_ids, p_ids, sims = [], [], []
    for t, (g, p) in enumerate(zip(gt, pred)):
        gi, pi, sim = _frame(g, p, use_masks, t)
        g_ids.append(gi)
        p_ids.append(pi)
        sims.append(sim)
    return make_tracking_data(g_ids, p_ids, sims, "mask" if use_masks else "box")


def label_tracking_data(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> TrackingData:
    """``(ground truth, prediction)`` label images ``(H, W)`` of every frame (value = track
    id, 0 = background) -> :class:`TrackingData` with mask IoU counted from the pixels (equal to
    pycocotools'). ValueError for images of different sizes or negative labels."""
    g_ids, p_ids, sims = [], [], []
    for reference, result in frames:
        o = label_overlaps(reference, result)
        g_ids.append(o.reference)
        p_ids.append(o.result)
        sims.append(o.iou())
    return make_tracking_data(g_ids, p_ids, sims, "mask")


def summarize_tracking(data: TrackingData, threshold: float = 0.5) -> dict[str, float]:
    """HOTA family (means over :data:`ALPHAS`, plus HOTA(0), LocA(0)), CLEAR and identity
    measures of one sequence; MOTSA and sMOTSA too when the similarity is mask IoU."""
    curves = hota(data)
    out = {k: float(np.mean(v)) for k, v in curves.items() if not k.startswith("HOTA_")}
    out["HOTA(0)"], out["LocA(0)"] = float(curves["HOTA"][0]), float(curves["LocA"][0])
    out.update(clear(data, threshold))
    out.update(identity(data, threshold))
    if data.iou_type == "mask":
        out["MOTSA"], out["sMOTSA"] = out["MOTA"], out["sMOTA"]
    return out


def tracking_metrics(
    gt: Sequence[Instances],
    pred: Sequence[Instances],
    iou_type: str = "auto",
    threshold: float = 0.5,
) -> dict[str, float]:
    """Tracking measures of one sequence: HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe, AssPr,
    OWTA, HOTA(0), LocA(0); MOTA, MOTP, MODA, sMOTA, IDSW, Frag, MT, PT, ML, CLR_TP/FN/FP, ...;
    IDF1, IDP, IDR, IDTP, IDFN, IDFP; MOTSA and sMOTSA with mask IoU. Values as TrackEval."""
    return summarize_tracking(tracking_data(gt, pred, iou_type), threshold)
