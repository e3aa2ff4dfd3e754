"""Multi-object tracking measures on one sequence, defined as TrackEval 1.3 defines them
(Luiten et al. 2020 for HOTA, Bernardin & Stiefelhagen 2008 for CLEAR MOT, Ristani et al.
2016 for the identity measures) and equal to TrackEval's values to 1e-9.

Input (:class:`TrackingData`): for every frame ``t`` the ground-truth ids ``(T_g,)``, the
predicted ids ``(T_p,)`` (both contiguous ``0..G-1`` / ``0..P-1`` over the sequence, unique
within a frame) and the similarity ``(T_g, T_p)`` in [0, 1] (mask or box IoU).
:func:`make_tracking_data` builds one from arbitrary ids.

Outputs: :func:`hota` -> arrays over :data:`ALPHAS`; :func:`clear` and :func:`identity` ->
floats, keyed by TrackEval's field names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from instseg.errors import DataError

__all__ = [
    "ALPHAS",
    "TrackingData",
    "association_scores",
    "clear",
    "hota",
    "identity",
    "identity_fields",
    "identity_true_positives",
    "make_tracking_data",
]

ALPHAS = np.arange(0.05, 0.99, 0.05)  # TrackEval's localisation thresholds 0.05..0.95, (19,)
_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True)
class TrackingData:
    """One sequence: per frame ``gt_ids[t]`` (T_g,) int64, ``pred_ids[t]`` (T_p,) int64 and
    ``similarity[t]`` (T_g, T_p) float64; ids contiguous over the sequence (``0..G-1``,
    ``0..P-1``, each id present in some frame)."""

    gt_ids: tuple[np.ndarray, ...]
    pred_ids: tuple[np.ndarray, ...]
    similarity: tuple[np.ndarray, ...]
    num_gt_ids: int
    num_pred_ids: int
    iou_type: str = "given"  # how the similarity was computed: "mask", "box" or "given"

    @property
    def num_frames(self) -> int:
        return len(self.gt_ids)

    @property
    def num_gt_dets(self) -> int:
        return sum(len(g) for g in self.gt_ids)

    @property
    def num_pred_dets(self) -> int:
        return sum(len(p) for p in self.pred_ids)


def _contiguous(ids: list[np.ndarray]) -> tuple[tuple[np.ndarray, ...], int]:
    """Relabel ids to ranks of the sorted distinct ids of the whole sequence."""
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    uniq, inverse = np.unique(flat, return_inverse=True)
    bounds = np.cumsum([0] + [len(i) for i in ids])
    frames = tuple(inverse[a:b].astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:]))
    return frames, len(uniq)


def make_tracking_data(
    gt_ids: Sequence[ArrayLike],
    pred_ids: Sequence[ArrayLike],
    similarity: Sequence[ArrayLike],
    iou_type: str = "given",
) -> TrackingData:
    """Per-frame ids (any integers, unique within a frame) and similarities ``(T_g, T_p)`` ->
    :class:`TrackingData` with ids made contiguous (the order of the ids is kept)."""
    if not len(gt_ids) == len(pred_ids) == len(similarity):
        raise DataError(None, "tracking data", f"frame counts differ: gt {len(gt_ids)}, "
                        f"pred {len(pred_ids)}, similarity {len(similarity)}")
    g_list = [np.asarray(g, np.int64).reshape(-1) for g in gt_ids]
    p_list = [np.asarray(p, np.int64).reshape(-1) for p in pred_ids]
    sims = []
    for t, (g, p, s) in enumerate(zip(g_list, p_list, similarity)):
        for side, ids in (("gt", g), ("pred", p)):
            if len(np.unique(ids)) != len(ids):
                raise DataError(None, f"{side} frame {t}", "a track id appears more than once")
        sim = np.asarray(s, np.float64)
        if sim.size != len(g) * len(p) or (sim.size and sim.shape != (len(g), len(p))):
            raise DataError(None, f"similarity frame {t}",
                            f"shape {sim.shape}, expected ({len(g)}, {len(p)}) (gt x pred)")
        sim = sim.reshape(len(g), len(p))
        if sim.size and not (np.all(sim >= 0) and np.all(sim <= 1)):
            raise DataError(None, f"similarity frame {t}", "values must lie in [0, 1]")
        sims.append(sim)
    g_frames, n_g = _contiguous(g_list)
    p_frames, n_p = _contiguous(p_list)
    return TrackingData(g_frames, p_frames, tuple(sims), n_g, n_p, iou_type)


def _id_counts(data: TrackingData) -> tuple[np.ndarray, np.ndarray]:
    """Detections per gt id (G,) and per predicted id (P,), as floats."""
    def count(frames: tuple[np.ndarray, ...], n: int) -> np.ndarray:
        flat = np.concatenate(frames) if frames else np.zeros(0, np.int64)
        return np.bincount(flat, minlength=n).astype(np.float64)

    return count(data.gt_ids, data.num_gt_ids), count(data.pred_ids, data.num_pred_ids)


def _pairs_where(data: TrackingData, keep: Callable[[np.ndarray], np.ndarray]
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per frame the (row, column) indices where ``keep(similarity)`` holds, and the key
    ``g * P + p`` of every such (gt, pred) pair, frame by frame: (K,)."""
    where = []
    for sim in data.similarity:
        r, c = np.nonzero(keep(sim))
        where.append((r, c))
    keys = [g[r] * data.num_pred_ids + p[c] for (r, c), g, p in zip(where, data.gt_ids, data.pred_ids)]
    return where, np.concatenate([*keys, np.zeros(0, np.int64)])


def association_scores(
    keys: np.ndarray, hit: np.ndarray, num_pred_ids: int, gt_count: np.ndarray,
    pred_count: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HOTA's association sums at each alpha. ``keys`` (M,): ``g * P + p`` of each matched
    detection pair; ``hit`` (M, A): whether it counts at each alpha; ``gt_count`` (G,) and
    ``pred_count`` (P,): detections per track. Over the distinct track pairs matched ``c``
    times, returns ``(A,)`` sums of ``c^2 / (n_g + n_p - c)``, ``c^2 / n_g``, ``c^2 / n_p``.
    """
    n_alpha = hit.shape[1]
    uniq, inverse = np.unique(keys, return_inverse=True)
    cells = (inverse[:, None] * n_alpha + np.arange(n_alpha))[hit]
    c = np.bincount(cells, minlength=len(uniq) * n_alpha).reshape(len(uniq), n_alpha).astype(np.float64)
    n_g = gt_count[uniq // max(num_pred_ids, 1)][:, None]
    n_p = pred_count[uniq % max(num_pred_ids, 1)][:, None]
    ass_a = (c * (c / np.maximum(1, n_g + n_p - c))).sum(0)
    ass_re = (c * (c / np.maximum(1, n_g))).sum(0)
    ass_pr = (c * (c / np.maximum(1, n_p))).sum(0)
    return ass_a, ass_re, ass_pr


def _alignment_scores(data: TrackingData, gt_count: np.ndarray, pred_count: np.ndarray
                      ) -> list[np.ndarray]:
    """Per frame ``(T_g, T_p)``: similarity times the Jaccard alignment of the pair's two
    tracks, from soft per-frame matches ``S / (row sum + column sum - S)`` summed over the
    sequence (pairs of similarity 0 score 0, so only the others are gathered)."""
    where, keys = _pairs_where(data, lambda sim: sim > 0)
    soft = []
    for sim, (r, c) in zip(data.similarity, where):
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        s = np.zeros_like(sim)
        ok = denom > 0 + _EPS
        s[ok] = sim[ok] / denom[ok]
        soft.append(s[r, c])
    uniq, inverse = np.unique(keys, return_inverse=True)
    potential = np.bincount(inverse, weights=np.concatenate([*soft, np.zeros(0)]), minlength=len(uniq))
    n_g, n_p = gt_count[uniq // max(data.num_pred_ids, 1)], pred_count[uniq % max(data.num_pred_ids, 1)]
    align = (potential / (n_g + n_p - potential))[inverse]
    scores, start = [], 0
    for sim, (r, c) in zip(data.similarity, where):
        score = np.zeros_like(sim)
        score[r, c] = align[start:start + len(r)] * sim[r, c]
        scores.append(score)
        start += len(r)
    return scores


def hota(data: TrackingData) -> dict[str, np.ndarray]:
    """HOTA and its sub-measures at each of :data:`ALPHAS`: every value is an ``(A,)`` array.

    Keys: HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA, OWTA, HOTA_TP, HOTA_FN, HOTA_FP.
    """
    gt_count, pred_count = _id_counts(data)
    scores = _alignment_scores(data, gt_count, pred_count)
    keys, sims = [], []
    for g, p, sim, score in zip(data.gt_ids, data.pred_ids, data.similarity, scores):
        if len(g) == 0 or len(p) == 0:
            continue
        rows, cols = linear_sum_assignment(-score)
        keys.append(g[rows] * data.num_pred_ids + p[cols])
        sims.append(sim[rows, cols])
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    sim = np.concatenate(sims) if sims else np.zeros(0)
    hit = sim[:, None] >= ALPHAS[None, :] - _EPS  # (M, A)
    tp = hit.sum(0).astype(np.float64)
    res = {"HOTA_TP": tp, "HOTA_FN": data.num_gt_dets - tp, "HOTA_FP": data.num_pred_dets - tp}
    ass_a, ass_re, ass_pr = association_scores(key, hit, data.num_pred_ids, gt_count, pred_count)
    res["AssA"] = ass_a / np.maximum(1, tp)
    res["AssRe"] = ass_re / np.maximum(1, tp)
    res["AssPr"] = ass_pr / np.maximum(1, tp)
    res["LocA"] = np.maximum(1e-10, (sim[:, None] * hit).sum(0)) / np.maximum(1e-10, tp)
    res["DetRe"] = tp / np.maximum(1, tp + res["HOTA_FN"])
    res["DetPr"] = tp / np.maximum(1, tp + res["HOTA_FP"])
    res["DetA"] = tp / np.maximum(1, tp + res["HOTA_FN"] + res["HOTA_FP"])
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    res["OWTA"] = np.sqrt(res["DetRe"] * res["AssA"])
    return res


def _clear_matches(data: TrackingData, threshold: float) -> dict[str, float]:
    """Frame-by-frame CLEAR matching (keeping last frame's pairs first, then the highest
    similarity): the raw counts TP, FN, FP, IDSW, Frag, MT, PT, ML and the summed similarity."""
    n_g = data.num_gt_ids
    last_any = np.full(n_g, -1)  # pred matched to each gt id when it was last matched
    last_step = np.full(n_g, -1)  # pred matched to each gt id in the last evaluated frame
    present, tracked, frags = np.zeros(n_g), np.zeros(n_g), np.zeros(n_g)
    tp = fn = fp = idsw = 0
    motp_sum = 0.0
    for g, p, sim in zip(data.gt_ids, data.pred_ids, data.similarity):
        present[g] += 1
        if len(g) == 0 or len(p) == 0:
            fn, fp = fn + len(g), fp + len(p)
            continue
        score = 1000.0 * (p[None, :] == last_step[g][:, None]) + sim
        score[sim < threshold - _EPS] = 0
        rows, cols = linear_sum_assignment(-score)
        keep = score[rows, cols] > 0 + _EPS
        rows, cols = rows[keep], cols[keep]
        mg, mp = g[rows], p[cols]
        idsw += int(np.sum((last_any[mg] >= 0) & (last_any[mg] != mp)))
        tracked[mg] += 1
        frags[mg] += last_step[mg] < 0
        last_any[mg] = mp
        last_step[:] = -1
        last_step[mg] = mp
        tp, fn, fp = tp + len(mg), fn + len(g) - len(mg), fp + len(p) - len(mg)
        motp_sum += float(np.sum(sim[rows, cols]))
    ratio = tracked[present > 0] / present[present > 0]
    mt = int(np.sum(ratio > 0.8))
    pt = int(np.sum(ratio >= 0.2)) - mt
    return {"CLR_TP": tp, "CLR_FN": fn, "CLR_FP": fp, "IDSW": idsw, "MT": mt, "PT": pt,
            "ML": n_g - mt - pt, "Frag": float(np.sum(frags[frags > 0] - 1)), "MOTP_sum": motp_sum}


def clear(data: TrackingData, threshold: float = 0.5) -> dict[str, float]:
    """CLEAR MOT: MOTA, MOTP, MODA, sMOTA, CLR_Re, CLR_Pr, CLR_F1, MTR, PTR, MLR, MOTAL,
    FP_per_frame and the counts CLR_TP, CLR_FN, CLR_FP, IDSW, MT, PT, ML, Frag, CLR_Frames.
    A match needs similarity >= ``threshold``."""
    if data.num_pred_dets == 0 or data.num_gt_dets == 0:  # TrackEval's shortcut
        res: dict[str, float] = dict.fromkeys(
            ["CLR_TP", "IDSW", "MT", "PT", "Frag", "MOTP_sum", "CLR_Frames"], 0)
        res["CLR_FN"], res["CLR_FP"] = data.num_gt_dets, data.num_pred_dets
        res["ML"] = data.num_gt_ids if data.num_pred_dets == 0 else 0
        out = {k: 0.0 for k in ("MOTA", "MOTP", "MODA", "sMOTA", "CLR_Re", "CLR_Pr", "MTR",
                                 "PTR", "CLR_F1", "FP_per_frame", "MOTAL")}
        return {**out, **{k: float(v) for k, v in res.items()}, "MLR": 1.0}
    res = _clear_matches(data, threshold)
    res["CLR_Frames"] = data.num_frames
    tp, fn, fp, idsw = res["CLR_TP"], res["CLR_FN"], res["CLR_FP"], res["IDSW"]
    n_gt = max(1.0, tp + fn)
    n_ids = max(1.0, res["MT"] + res["PT"] + res["ML"])
    res.update(
        MTR=res["MT"] / n_ids, PTR=res["PT"] / n_ids, MLR=res["ML"] / n_ids,
        CLR_Re=tp / n_gt, CLR_Pr=tp / max(1.0, tp + fp),
        MODA=(tp - fp) / n_gt, MOTA=(tp - fp - idsw) / n_gt,
        MOTP=res["MOTP_sum"] / max(1.0, tp), sMOTA=(res["MOTP_sum"] - fp - idsw) / n_gt,
        CLR_F1=tp / max(1.0, tp + 0.5 * fn + 0.5 * fp),
        FP_per_frame=fp / max(1.0, res["CLR_Frames"]),
        MOTAL=(tp - fp - (np.log10(idsw) if idsw > 0 else 0)) / n_gt,
    )
    return {k: float(v) for k, v in res.items()}


def identity_true_positives(gt: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> float:
    """IDTP: the largest total overlap over one-to-one pairings of gt and predicted tracks,
    given ``counts[k]`` (K,) frames in which gt track ``gt[k]`` and predicted track
    ``pred[k]`` match (distinct pairs)."""
    if len(counts) == 0:
        return 0.0
    rows, r = np.unique(gt, return_inverse=True)
    cols, c = np.unique(pred, return_inverse=True)
    overlap = np.zeros((len(rows), len(cols)))
    overlap[r, c] = counts
    match_r, match_c = linear_sum_assignment(overlap, maximize=True)
    return float(overlap[match_r, match_c].sum())


def identity(data: TrackingData, threshold: float = 0.5) -> dict[str, float]:
    """Identity measures IDF1, IDR, IDP and the counts IDTP, IDFN, IDFP; a detection pair
    counts towards its tracks' overlap when its similarity is >= ``threshold``."""
    gt_count, pred_count = _id_counts(data)
    idtp = 0.0
    if data.num_gt_dets and data.num_pred_dets:
        _, pairs = _pairs_where(data, lambda sim: sim >= threshold)
        keys, counts = np.unique(pairs, return_counts=True)
        n_p = data.num_pred_ids
        idtp = identity_true_positives(keys // n_p, keys % n_p, counts.astype(np.float64))
    return identity_fields(idtp, float(gt_count.sum()) - idtp, float(pred_count.sum()) - idtp)


def identity_fields(idtp: float, idfn: float, idfp: float) -> dict[str, float]:
    """IDTP, IDFN, IDFP -> those counts with IDR, IDP and IDF1 (0 where undefined)."""
    return {"IDTP": idtp, "IDFN": idfn, "IDFP": idfp,
            "IDR": idtp / max(1.0, idtp + idfn), "IDP": idtp / max(1.0, idtp + idfp),
            "IDF1": idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn)}
