"""``Tracker``: instances of consecutive frames -> the same instances with track ids.

Per frame (:meth:`Tracker.update`), with any detector's :class:`~instseg.structures.Instances`:

1. every live track predicts its mask: its last mask shifted by its constant-velocity centroid
   motion (the last displacement per frame, times the frames since it was last seen);
2. two-stage association as in ByteTrack (Zhang et al., ECCV 2022): detections scoring
   >= ``high_score`` first, then the tracks still unmatched against the detections scoring
   ``low_score``..``high_score`` (occluded or blurred objects score low but should keep their
   track); each stage is a Hungarian assignment (scipy) on mask IoU, pairs below its IoU
   threshold are refused;
3. divisions: an unmatched confident detection lying mostly (``division_overlap`` of its area)
   inside the predicted mask of a track seen in the previous frame and at least
   ``division_min_area`` of its size, together with a second such detection (the one matched
   to that track, or another new one), ends the track there and starts both as its daughters (the Cell Tracking Challenge's
   convention: the mother's track stops at the division, each daughter records it as parent);
4. other unmatched confident detections start tracks; unmatched low-score ones are dropped;
   tracks unseen for more than ``max_lost`` frames end for good (a shorter miss or occlusion
   keeps the identity).

Masks are bool ``(N, H, W)``; track ids start at 1 (0 is the background of label images).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from instseg.data.ctc import Track
from instseg.structures import Instances

__all__ = ["Tracker", "TrackerConfig"]


@dataclass(frozen=True)
class TrackerConfig:
    """Association settings (defaults: ByteTrack's score split; IoU thresholds for masks)."""

    #: detections at or above this score are associated first and may start tracks
    high_score: float = 0.5
    #: detections below this score are ignored (ByteTrack's second-stage floor)
    low_score: float = 0.1
    #: least mask IoU between a track's predicted mask and a confident detection
    match_iou: float = 0.2
    #: least mask IoU for low-score detections (stricter: they are less certain)
    low_match_iou: float = 0.4
    #: frames a track may go unseen and still be continued (short misses, occlusions)
    max_lost: int = 3
    #: fraction of a daughter's area inside the mother's predicted mask for a division (chosen
    #: on Fluo-N2DH-SIM+ from its GT masks: 0.5 linked 23 of 59 daughters, 0.3 42, 0.2 45 with
    #: one more wrong link)
    division_overlap: float = 0.3
    #: least daughter area as a fraction of the mother's (SIM+ daughters: 0.22 at the 2nd
    #: percentile; keeps a small object appearing beside a large one from making a division)
    division_min_area: float = 0.2


@dataclass
class _Live:
    """A track that can still be continued."""

    id: int
    mask: np.ndarray  # (H, W) bool, last observed
    centroid: np.ndarray  # (2,) y, x
    velocity: np.ndarray  # (2,) per frame
    last_seen: int


@dataclass
class Tracker:
    """Online tracker; feed it frames in order with :meth:`update`. :meth:`tracks` is the CTC
    track table so far (id, first frame, last frame, parent)."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    frame: int = -1
    _live: list[_Live] = field(default_factory=list)
    _table: dict[int, list[int]] = field(default_factory=dict)  # id -> [first, last, parent]
    _next_id: int = 1

    def tracks(self) -> list[Track]:
        return [Track(i, f, last, p) for i, (f, last, p) in sorted(self._table.items())]

    def update(self, instances: Instances) -> Instances:
        """The next frame's instances -> those that belong to a track, with ``track_ids``
        (detections under ``low_score``, and unmatched ones under ``high_score``, are dropped)."""
        if instances.masks is None:
            raise ValueError("Tracker.update needs instance masks")
        self.frame += 1
        cfg = self.config
        masks = instances.masks.cpu().numpy().astype(bool, copy=False)
        n = masks.shape[0]
        scores = np.ones(n) if instances.scores is None else instances.scores.cpu().numpy()
        self._live = [t for t in self._live if self.frame - t.last_seen <= cfg.max_lost + 1]
        preds = np.stack([self._predict(t) for t in self._live]) if self._live else np.zeros((0, *masks.shape[1:]), bool)
        iou = _mask_iou(preds, masks)
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        pairs = _assign(iou, np.arange(len(self._live)), high, cfg.match_iou)
        left = np.setdiff1d(np.arange(len(self._live)), [p[0] for p in pairs])
        pairs += _assign(iou, left, low, cfg.low_match_iou)
        ids = np.zeros(n, np.int64)
        for ti, d in pairs:
            ids[d] = self._live[ti].id
        self._divisions(pairs, preds, masks, high, ids)
        for k in high.tolist():
            if ids[k] == 0:
                ids[k] = self._start(0)
        keep = np.flatnonzero(ids > 0)
        self._observe(masks, ids, keep)
        out = instances[torch.from_numpy(keep)]
        out.track_ids = torch.from_numpy(ids[keep])
        return out

    # -- steps ------------------------------------------------------------------------------
    def _predict(self, t: _Live) -> np.ndarray:
        """The track's last mask moved by its velocity over the frames since it was seen."""
        dy, dx = np.round(t.velocity * (self.frame - t.last_seen)).astype(int)
        return _shift(t.mask, int(dy), int(dx))

    def _divisions(
        self, pairs: list[tuple[int, int]], preds: np.ndarray, masks: np.ndarray, high: np.ndarray, ids: np.ndarray
    ) -> None:
        """Unmatched confident detections mostly inside a track seen last frame, with a second
        such detection: the track ends, both start as its daughters (``ids`` edited)."""
        cfg = self.config
        area = masks.sum((1, 2)).clip(min=1)
        new = [d for d in high if ids[d] == 0]
        matched = {ti: d for ti, d in pairs}
        ended: set[int] = set()
        for ti, t in enumerate(self._live):
            if t.last_seen != self.frame - 1 or not new:
                continue
            least = cfg.division_min_area * t.mask.sum()

            def daughter(d: int, ti: int = ti, least: float = least) -> bool:
                inside = (preds[ti] & masks[d]).sum() / area[d] >= cfg.division_overlap
                return bool(inside and area[d] >= least)

            inside = [d for d in new if daughter(d)]
            sister = matched.get(ti)
            if sister is not None and daughter(sister):
                inside = [sister, *inside]
            if len(inside) < 2:
                continue
            self._table[t.id][1] = self.frame - 1  # the mother ends at the division
            ended.add(t.id)
            for d in inside[:2]:
                ids[d] = self._start(t.id)
                new = [x for x in new if x != d]
        self._live = [t for t in self._live if t.id not in ended]

    def _start(self, parent: int) -> int:
        tid = self._next_id
        self._next_id += 1
        self._table[tid] = [self.frame, self.frame, parent]
        return tid

    def _observe(self, masks: np.ndarray, ids: np.ndarray, keep: np.ndarray) -> None:
        """Record this frame's masks, centroids and velocities of the tracks seen."""
        by_id = {t.id: t for t in self._live}
        for d in keep:
            tid = int(ids[d])
            ys, xs = np.nonzero(masks[d])
            c = np.array([ys.mean(), xs.mean()]) if len(ys) else np.zeros(2)
            t = by_id.get(tid)
            if t is None:
                by_id[tid] = t = _Live(tid, masks[d], c, np.zeros(2), self.frame)
                self._live.append(t)
            else:
                t.velocity = (c - t.centroid) / max(self.frame - t.last_seen, 1)
                t.mask, t.centroid, t.last_seen = masks[d], c, self.frame
            self._table[tid][1] = self.frame


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask (H, W)`` moved by ``(dy, dx)`` pixels, zeros shifted in."""
    if dy == 0 and dx == 0:
        return mask
    h, w = mask.shape
    out = np.zeros_like(mask)
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``(A, B)`` of bool masks ``(A, H, W)`` and ``(B, H, W)`` (one float32 product)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x = torch.from_numpy(a.reshape(len(a), -1)).float()
    y = torch.from_numpy(b.reshape(len(b), -1)).float()
    inter = (x @ y.t()).numpy()
    union = x.sum(1).numpy()[:, None] + y.sum(1).numpy()[None, :] - inter
    return inter / np.clip(union, 1, None)


def _assign(iou: np.ndarray, rows: np.ndarray, cols: np.ndarray, least: float) -> list[tuple[int, int]]:
    """Hungarian assignment of track rows to detection columns on IoU; pairs below ``least``
    are refused. -> ``[(track index, detection index)]``."""
    if len(rows) == 0 or len(cols) == 0:
        return []
    sub = iou[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(-sub)
    return [(int(rows[i]), int(cols[j])) for i, j in zip(r, c) if sub[i, j] >= least]
