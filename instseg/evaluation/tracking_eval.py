"""One entry point for tracking evaluation: :func:`evaluate_tracking` of a ground truth and a
result, whichever of three forms they take (:func:`tracking_input_kind`).

``ctc``: a CTC ground-truth folder (``<seq>_GT`` with ``TRA/``, ``SEG/`` optional) and a
  result folder (``mask*.tif``, ``res_track.txt``), read once: the challenge's DET, SEG and TRA
  with the AOGM counts (:mod:`~instseg.evaluation.ctc_folders`) and HOTA, IDF1 and MOTA as
  py-ctcmetrics defines them (:mod:`~instseg.evaluation.ctc_mot`).
``labels``: two folders of label images (value = track id, frames paired by sorted name),
  ``mots``: two MOTS text files (:mod:`instseg.data.mots`): TrackEval's HOTA, DetA, AssA, MOTA,
  MOTSA, sMOTSA, IDF1 and IDSW on mask IoU (:mod:`~instseg.evaluation.tracking`), without
  holding a whole sequence's masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from instseg.data.mots import IGNORE_CLASS, MOTSFrame, read_mots_frames
from instseg.errors import DataError
from instseg.evaluation.ctc_folders import (
    det_seg_tra,
    label_folder_pairs,
    match_ctc_folders,
    read_labels,
)
from instseg.evaluation.ctc_mot import ctc_mot_measures
from instseg.evaluation.mot_metrics import TrackingData, make_tracking_data
from instseg.evaluation.tracking import label_tracking_data, mask_frame, summarize_tracking

__all__ = ["CTC_KEYS", "MOT_KEYS", "evaluate_tracking", "tracking_input_kind"]

#: what :func:`evaluate_tracking` returns for a CTC pair (SEG is NaN without ``SEG/``)
CTC_KEYS = ("TRA", "DET", "SEG", "HOTA", "IDF1", "MOTA", "NS", "FN", "FP", "ED", "EA", "EC",
            "AOGM", "AOGM_0")  # fmt: skip
#: what it returns for label-image folders and MOTS files (MOTSA, sMOTSA: MOTA, sMOTA on masks)
MOT_KEYS = ("HOTA", "DetA", "AssA", "MOTA", "MOTSA", "sMOTSA", "IDF1", "IDSW")


def tracking_input_kind(gt: str | Path, res: str | Path) -> str:
    """``"ctc"`` (``gt`` a folder with ``TRA/``), ``"labels"`` (two other folders) or ``"mots"``
    (two files). DataError naming what is missing or does not fit."""
    g, r = Path(gt), Path(res)
    for path, what in ((g, "ground truth"), (r, "result")):
        if not path.exists():
            raise DataError(path, None, f"{what} not found")
    if g.is_dir() and (g / "TRA").is_dir():
        if not r.is_dir():
            raise DataError(r, None, "expected a CTC result folder (mask000.tif ..., res_track.txt)")
        return "ctc"
    if g.is_dir() == r.is_dir():
        return "labels" if g.is_dir() else "mots"
    kind = "folder of label images" if g.is_dir() else "MOTS file"
    raise DataError(r, None, f"expected a {kind}, as the ground truth {g} is")


def _label_frames(gt: Path, res: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ref_file, res_file in label_folder_pairs(gt, res):
        reference = read_labels(ref_file)
        yield reference, read_labels(res_file, reference.shape)


def _mots_data(gt: Path, res: Path) -> TrackingData:
    """TrackingData of two MOTS files (frames up to the last in either), ground-truth ignore
    regions as crowd, one frame at a time; DataError for a frame of another image size."""
    empty = MOTSFrame((0, 0))
    g_ids, p_ids, sims = [], [], []
    pairs = zip_longest(read_mots_frames(gt), read_mots_frames(res), fillvalue=empty)
    for t, (g, p) in enumerate(pairs):
        if g.ids and p.ids and g.size != p.size:
            raise DataError(res, f"frame {t}", f"image size {p.size}, the ground truth's {g.size}")
        crowd = np.asarray(g.classes, np.int64) == IGNORE_CLASS
        gi, pi, sim = mask_frame(np.asarray(g.ids, np.int64)[~crowd], _pick(g, ~crowd),
                                 np.asarray(p.ids, np.int64), p.rles, _pick(g, crowd))  # fmt: skip
        g_ids.append(gi)
        p_ids.append(pi)
        sims.append(sim)
    return make_tracking_data(g_ids, p_ids, sims, "mask")


def _pick(frame: MOTSFrame, keep: np.ndarray) -> list[dict[str, Any]]:
    return [r for r, k in zip(frame.rles, keep.tolist()) if k]


def evaluate_tracking(gt: str | Path, res: str | Path) -> dict[str, float]:
    """Tracking measures of the result ``res`` against the ground truth ``gt`` (CTC folders,
    label-image folders or MOTS files; see the module docstring): the :data:`CTC_KEYS` or the
    :data:`MOT_KEYS`. DataError (one line, naming the file or folder) for bad input."""
    g, r = Path(gt), Path(res)
    kind = tracking_input_kind(g, r)
    if kind == "ctc":
        folders = match_ctc_folders(g, r)
        out = {**ctc_mot_measures(folders), **det_seg_tra(folders)}  # AOGM's FN, FP
        return {k: float(out[k]) for k in CTC_KEYS}
    data = label_tracking_data(_label_frames(g, r)) if kind == "labels" else _mots_data(g, r)
    out = summarize_tracking(data)
    return {k: float(out[k]) for k in MOT_KEYS}
