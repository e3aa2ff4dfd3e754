"""HOTA, IDF1 and MOTA of a Cell Tracking Challenge result folder (2-D label images),
computed as py-ctcmetrics 1.3 computes them (equal to its ``evaluate_sequence`` values to
1e-9).

py-ctcmetrics does not optimise a matching: a result object matches a reference object of
the same frame when it covers more than half of it (the CTC detection test on the ``TRA``
markers, :func:`~instseg.evaluation.ctc.match_frame`), so one result object may match several
reference objects; only valid results (``res_track.txt`` agreeing with the masks) are scored.
Before scoring, every track with exactly one child is joined with that child in both the
reference and the result (a relabelled track continues its parent). Then, with TP = matched
pairs, FN = unmatched reference objects, FP = unmatched result objects and a result track's
size counting each of its matches:

- HOTA = sqrt(sum over matched pairs of A(pair) / (TP + FN + FP)), A = TrackEval's
  association Jaccard of the two tracks (a single similarity level: matches are binary);
- IDF1 from the best one-to-one pairing of reference and result tracks;
- MOTA = 1 - (FN + FP + IDSW + M) / (TP + FN), M = the extra matches of result objects
  that match several reference objects (each such object counts every match as a TP).

Where TrackEval would differ: it matches one-to-one (Hungarian), so a merged object there is
one TP and one FN, and it does not join parent and child tracks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instseg.data.ctc import Track
from instseg.errors import DataError
from instseg.evaluation.ctc_folders import CTCFolderMatch, match_ctc_folders
from instseg.evaluation.mot_metrics import (
    association_scores,
    identity_fields,
    identity_true_positives,
)

__all__ = ["ctc_mot_measures", "ctc_tracking_metrics", "joined_labels"]


@dataclass(frozen=True)
class _Joined:
    """One frame in joined labels: reference labels (R,), result labels (C,) and the matched
    pairs ``(ref_matched[k], res_matched[k])`` (K,)."""

    ref: np.ndarray
    res: np.ndarray
    ref_matched: np.ndarray
    res_matched: np.ndarray


def joined_labels(tracks: dict[int, Track], file: Path) -> dict[int, int]:
    """Track label -> label of its earliest ancestor reached through parents with a single
    child (a track with one child continues into it). DataError for a parent that is not
    listed or does not end before its child begins."""
    n_children = Counter(t.parent for t in tracks.values() if t.parent)
    for t in tracks.values():
        up = tracks.get(t.parent) if t.parent else None
        if t.parent and (up is None or up.last >= t.first):
            raise DataError(file, f"track {t.id}", f"parent {t.parent} is not listed or does "
                            "not end before the track begins")
    root: dict[int, int] = {}
    for label in sorted(tracks, key=lambda k: tracks[k].first):  # parents before children
        parent = tracks[label].parent
        root[label] = root[parent] if parent and n_children[parent] == 1 else label
    return root


def _relabel(labels: np.ndarray, root: dict[int, int], tracks: dict[int, Track], t: int,
             file: Path) -> np.ndarray:
    """Frame-``t`` labels -> joined track labels; DataError for a label that the track file
    does not list for frame ``t``."""
    for label in labels.tolist():
        track = tracks.get(label)
        if track is None or not track.first <= t <= track.last:
            raise DataError(file, f"label {label}", f"not listed for frame {t} in the track file")
    return np.array([root[v] for v in labels.tolist()], np.int64)


def _joined_frames(folders: CTCFolderMatch) -> list[_Joined]:
    """Every frame's detection test in joined labels (see :func:`joined_labels`)."""
    ref_tracks, res_tracks = folders.ref_tracks, folders.res_tracks
    ref_root = joined_labels(ref_tracks, folders.ref_table)
    res_root = joined_labels(res_tracks, folders.res_table)
    frames = []
    for t, m in enumerate(folders.matches):
        ref_matched, res_matched = m.pairs
        frames.append(_Joined(
            _relabel(m.reference, ref_root, ref_tracks, t, folders.tra_files[t]),
            _relabel(m.result, res_root, res_tracks, t, folders.mask_files[t]),
            np.array([ref_root[v] for v in ref_matched.tolist()], np.int64),
            np.array([res_root[v] for v in res_matched.tolist()], np.int64),
        ))  # fmt: skip
    return frames


def _mota(frames: list[_Joined]) -> dict[str, float]:
    """py-ctcmetrics' MOTA and its counts over matched frames."""
    tp = fn = fp = idsw = multi = 0
    last: dict[int, int] = {}  # reference track -> result track it matched last
    for f in frames:
        _, per_res = np.unique(f.res_matched, return_counts=True)
        tp += len(f.ref_matched)
        fn += len(f.ref) - len(f.ref_matched)
        fp += len(f.res) - len(per_res)
        multi += int(np.sum(per_res - 1))
        idsw += sum(last.get(r, c) != c for r, c in zip(f.ref_matched.tolist(), f.res_matched.tolist()))
        last.update(zip(f.ref_matched.tolist(), f.res_matched.tolist()))
    return {"MOTA": 1 - (fn + fp + idsw + multi) / max(tp + fn, 1), "TP": tp, "FP": fp, "FN": fn,
            "IDSW": idsw, "MULTI-ASSIGNMENTS": multi,
            "Precision": tp / max(tp + fp, 1), "Recall": tp / max(tp + fn, 1)}


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([*arrays, np.zeros(0, np.int64)])


def ctc_mot_measures(folders: CTCFolderMatch) -> dict[str, float]:
    """HOTA, IDF1 (with IDP, IDR, IDTP, IDFP, IDFN) and MOTA (with TP, FP, FN, IDSW,
    MULTI-ASSIGNMENTS, Precision, Recall) of a matched CTC folder pair, as py-ctcmetrics scores
    them (0 where py-ctcmetrics would divide by zero)."""
    frames = _joined_frames(folders)
    unmatched_res = _cat([np.setdiff1d(f.res, f.res_matched) for f in frames])
    ref_matched = _cat([f.ref_matched for f in frames])
    res_matched = _cat([f.res_matched for f in frames])
    ref_ids, ref_count = np.unique(_cat([f.ref for f in frames]), return_counts=True)
    # a result track's size: one per match of its objects, one per unmatched object
    res_ids, res_count = np.unique(np.concatenate([res_matched, unmatched_res]), return_counts=True)
    n_p = max(len(res_ids), 1)
    pair = np.searchsorted(ref_ids, ref_matched) * n_p + np.searchsorted(res_ids, res_matched)
    tp, fn, fp = len(pair), int(ref_count.sum()) - len(pair), len(unmatched_res)
    ass, _, _ = association_scores(pair, np.ones((len(pair), 1), bool), n_p,
                                   ref_count.astype(np.float64), res_count.astype(np.float64))
    out = {"HOTA": float(np.sqrt(ass[0] / (tp + fn + fp))) if tp + fn + fp else 0.0}
    keys, counts = np.unique(pair, return_counts=True)
    idtp = identity_true_positives(keys // n_p, keys % n_p, counts.astype(np.float64))
    out.update(identity_fields(idtp, float(ref_count.sum()) - idtp, float(res_count.sum()) - idtp))
    out.update(_mota(frames))
    return {k: float(v) for k, v in out.items()}


def ctc_tracking_metrics(gt_dir: str | Path, res_dir: str | Path) -> dict[str, float]:
    """CTC ground truth ``<seq>_GT`` (``TRA/man_track*.tif``, ``TRA/man_track.txt``) and a
    result folder (``mask*.tif``, ``res_track.txt``) -> :func:`ctc_mot_measures`. DataError
    as :func:`~instseg.evaluation.ctc_folders.match_ctc_folders`."""
    return ctc_mot_measures(match_ctc_folders(gt_dir, res_dir, seg=False))
