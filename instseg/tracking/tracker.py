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

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from instseg.data.ctc import Track
from instseg.structures import Instances
from instseg.tracking.crops import Crop, crops_from, overlaps, shifted
from instseg.tracking.crops import iou as crop_iou

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
    #: least mask IoU to continue a track unseen in the previous frame (a new object often
    #: appears where another vanished: on SIM+'s GT masks 0.2 linked such objects, 0.4 not)
    lost_match_iou: float = 0.4
    #: fraction of a daughter's area inside the mother's predicted mask for a division, and
    #: least daughter area as a fraction of the mother's (chosen on Fluo-N2DH-SIM+ from its GT
    #: masks, ``python bench/track_settings.py gt``: 0.1 and 0.05 found 26 of its 28
    #: divisions, IDF1 0.990; 0.1 and 0.2: 25, 0.986; 0.3 and 0.2: 24, 0.981)
    #: look for divisions at all (off for objects that never divide: people, cars; on
    #: occluding synthetic shapes a shape half hidden by another can look like a division)
    divisions: bool = True
    division_overlap: float = 0.1
    division_min_area: float = 0.05
    #: third stage: least share of the smaller mask in common for a track and a detection
    #: left unpaired by IoU (small objects move by more than their size)
    small_overlap: float = 0.5


@dataclass
class _Live:
    """A track that can still be continued."""

    id: int
    crop: Crop  # last observed mask
    centroid: np.ndarray  # (2,) y, x
    velocity: np.ndarray  # (2,) per frame
    last_seen: int


@dataclass
class Tracker:
    """Online tracker; feed it frames in order with :meth:`update`. :meth:`tracks` is the CTC
    track table so far (id, first frame, last frame, parent).

    Masks are handled as tight crops found through the instances' boxes (see
    :mod:`.crops`), so a frame costs about the objects' pixels, not N full frames."""

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
        size = (int(instances.masks.shape[-2]), int(instances.masks.shape[-1]))
        dets = crops_from(instances.masks, instances.boxes)
        n = len(dets)
        scores = np.ones(n) if instances.scores is None else instances.scores.cpu().numpy()
        self._live = [t for t in self._live if self.frame - t.last_seen <= cfg.max_lost + 1]
        iou, inter = self._overlaps(dets, size)
        lost = [i for i, t in enumerate(self._live) if t.last_seen < self.frame - 1]
        iou[lost] = np.where(iou[lost] >= cfg.lost_match_iou, iou[lost], 0.0)
        high = np.flatnonzero(scores >= cfg.high_score)
        low = _apart(np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score)), high, dets)
        pairs = _assign(iou, np.arange(len(self._live)), high, cfg.match_iou)
        left = np.setdiff1d(np.arange(len(self._live)), [p[0] for p in pairs])
        pairs += _assign(iou, left, low, cfg.low_match_iou)
        ids = np.zeros(n, np.int64)
        for ti, d in pairs:
            ids[d] = self._live[ti].id
        ended = self._divisions(pairs, inter, dets, high, ids) if cfg.divisions else set()
        self._small_links(pairs, inter, dets, high, ids, ended)
        self._live = [t for t in self._live if t.id not in ended]
        for k in high.tolist():
            if ids[k] == 0:
                ids[k] = self._start(0)
        keep = np.flatnonzero(ids > 0)
        self._observe(dets, ids, keep)
        out = copy.copy(instances) if len(keep) == n else instances[torch.from_numpy(keep)]
        out.track_ids = torch.from_numpy(ids[keep])
        return out

    # -- steps ------------------------------------------------------------------------------
    def _predict(self, t: _Live, size: tuple[int, int]) -> Crop:
        """The track's last mask moved by its velocity over the frames since it was seen."""
        dy, dx = np.round(t.velocity * (self.frame - t.last_seen)).astype(int)
        return shifted(t.crop, int(dy), int(dx), size)

    def _overlaps(self, dets: list[Crop], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(IoU (T, D), shared pixels (T, D))`` of every live track with every detection:
        the better of the track's predicted mask (constant velocity) and its last mask where
        it stayed (a cell's centroid jumps when its shape changes, and the velocity then
        points the wrong way)."""
        preds = [self._predict(t, size) for t in self._live]
        iou, inter = crop_iou(preds, dets)
        moved = [i for i, (p, t) in enumerate(zip(preds, self._live)) if p is not t.crop]
        if moved and dets:
            still_iou, still_inter = crop_iou([self._live[i].crop for i in moved], dets)
            iou[moved] = np.maximum(iou[moved], still_iou)
            inter[moved] = np.maximum(inter[moved], still_inter)
        return iou, inter

    def _divisions(
        self, pairs: list[tuple[int, int]], inter: np.ndarray, dets: list[Crop], high: np.ndarray, ids: np.ndarray
    ) -> set[int]:
        """Unmatched confident detections mostly inside a track seen last frame, with a second
        such detection: the track ends, both start as its daughters (``ids`` edited; returns
        the ended track ids).
        ``inter (T, D)``: pixels shared by each track's predicted mask and each detection."""
        cfg = self.config
        area = np.array([max(c.area, 1) for c in dets])
        new = [d for d in high if ids[d] == 0]
        matched = {ti: d for ti, d in pairs}
        ended: set[int] = set()
        for ti, t in enumerate(self._live):
            if t.last_seen != self.frame - 1 or not new:
                continue
            least = cfg.division_min_area * t.crop.area

            def daughter(d: int, ti: int = ti, least: float = least) -> bool:
                inside = inter[ti, d] / area[d] >= cfg.division_overlap
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
        return ended

    def _small_links(
        self, pairs: list[tuple[int, int]], inter: np.ndarray, dets: list[Crop], high: np.ndarray,
        ids: np.ndarray, ended: set[int],
    ) -> None:  # fmt: skip
        """Third stage, after divisions: tracks seen in the previous frame and confident
        detections, both still unpaired, are
        assigned (Hungarian) on the share of the smaller of the two that they have in common,
        pairs under ``small_overlap`` refused. Small objects (cells entering or leaving the frame,
        debris) keep their identity although their IoU stays low; a track unseen for a frame
        or more is not continued this way (a new object appearing where another vanished)."""
        paired = {ti for ti, _ in pairs}
        rows = np.array([ti for ti, t in enumerate(self._live)
                         if ti not in paired and t.id not in ended and t.last_seen == self.frame - 1], int)  # fmt: skip
        cols = np.array([d for d in high if ids[d] == 0], int)
        if len(rows) == 0 or len(cols) == 0:
            return
        area_t = np.array([max(self._live[ti].crop.area, 1) for ti in rows])
        area_d = np.array([max(dets[d].area, 1) for d in cols])
        share = np.zeros((len(self._live), len(dets)))
        share[np.ix_(rows, cols)] = inter[np.ix_(rows, cols)] / np.minimum(area_t[:, None], area_d[None, :])
        for ti, d in _assign(share, rows, cols, self.config.small_overlap):
            ids[d] = self._live[ti].id

    def _start(self, parent: int) -> int:
        tid = self._next_id
        self._next_id += 1
        self._table[tid] = [self.frame, self.frame, parent]
        return tid

    def _observe(self, dets: list[Crop], ids: np.ndarray, keep: np.ndarray) -> None:
        """Record this frame's masks, centroids and velocities of the tracks seen."""
        by_id = {t.id: t for t in self._live}
        for d in keep:
            tid = int(ids[d])
            c = dets[d].centroid()
            t = by_id.get(tid)
            if t is None:
                by_id[tid] = t = _Live(tid, dets[d], c, np.zeros(2), self.frame)
                self._live.append(t)
            else:
                t.velocity = (c - t.centroid) / max(self.frame - t.last_seen, 1)
                t.crop, t.centroid, t.last_seen = dets[d], c, self.frame
            self._table[tid][1] = self.frame


def _apart(low: np.ndarray, high: np.ndarray, dets: list[Crop]) -> np.ndarray:
    """The low-score detections less than half of which lies inside confident ones (the
    others are duplicates or fragments of a confident detection, not a missed object)."""
    if len(low) == 0 or len(high) == 0:
        return low
    inside = overlaps([dets[i] for i in low], [dets[j] for j in high]).sum(1)
    area = np.array([max(dets[i].area, 1) for i in low])
    return low[inside < 0.5 * area]


def _assign(iou: np.ndarray, rows: np.ndarray, cols: np.ndarray, least: float) -> list[tuple[int, int]]:
    """Hungarian assignment of track rows to detection columns on IoU; pairs below ``least``
    are refused. -> ``[(track index, detection index)]``."""
    if len(rows) == 0 or len(cols) == 0:
        return []
    sub = iou[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(-sub)
    return [(int(rows[i]), int(cols[j])) for i, j in zip(r, c) if sub[i, j] >= least]
