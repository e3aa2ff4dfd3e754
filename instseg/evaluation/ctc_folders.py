"""Reading a CTC result folder and its ground truth, as the challenge lays them out:
``NN_GT/TRA/man_track000.tif ...`` (markers, values = track ids) with
``NN_GT/TRA/man_track.txt``, ``NN_GT/SEG/man_seg000.tif ...`` (full masks, on some frames
only, possibly none) and ``NN_RES/mask000.tif ...`` with ``NN_RES/res_track.txt`` (3- or
4-digit frame numbers, paired by number). :func:`match_ctc_folders` reads every frame once and
runs the detection test; DET, SEG and TRA (:func:`det_seg_tra`, :func:`ctc_measures`) and the
py-ctcmetrics HOTA / IDF1 / MOTA (:mod:`~instseg.evaluation.ctc_mot`) are scored from it. A
sequence of a hundred 1024x1024 frames takes seconds. Also plain folders of label images,
paired by sorted name (:func:`label_folder_pairs`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instseg.data.ctc import CTC_FILES, Track, numbered_files, read_tracks
from instseg.data.io import is_image_file, read_label_image
from instseg.errors import DataError
from instseg.evaluation.ctc import FrameMatch, match_frame
from instseg.evaluation.ctc_tracking import aogm_counts, check_result_tracks

__all__ = [
    "CTCFolderMatch",
    "ctc_measures",
    "det_seg_tra",
    "label_folder_pairs",
    "match_ctc_folders",
    "read_labels",
]


def _frames(gt: Path, res: Path) -> tuple[list[Path], list[Path], dict[int, Path]]:
    """Reference marker files, result mask files (both frame 0..T-1) and SEG files by frame;
    DataError naming the folder for anything missing or mismatched."""
    if not gt.is_dir():
        raise DataError(gt, None, "ground-truth folder not found")
    if not res.is_dir():
        raise DataError(res, None, "result folder not found")
    tra = numbered_files(gt / "TRA", CTC_FILES["TRA"])
    if not tra:
        raise DataError(
            gt / "TRA", None, "no reference markers: no label images man_track000.tif, ..."
        )
    n = len(tra)
    gaps = sorted(set(range(n)) - set(tra))
    if gaps:
        raise DataError(
            gt / "TRA",
            f"man_track{gaps[0]:03d}.tif",
            f"missing ({len(gaps)} gaps in the frame numbers)",
        )
    masks = numbered_files(res, CTC_FILES["RES"])
    if sorted(masks) != list(range(n)):
        missing = sorted(set(range(n)) - set(masks))
        what = (
            f"mask{missing[0]:03d}.tif missing"
            if missing
            else f"mask{max(masks):03d}.tif has no reference frame"
        )
        raise DataError(res, None, f"{len(masks)} result masks for {n} reference frames ({what})")
    seg = numbered_files(gt / "SEG", CTC_FILES["SEG"])
    beyond = [t for t in seg if t >= n]
    if beyond:
        raise DataError(
            seg[beyond[0]], None, f"frame {beyond[0]} is beyond the {n} reference frames"
        )
    return [tra[t] for t in range(n)], [masks[t] for t in range(n)], seg


def read_labels(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A label image; DataError for another size than ``shape`` or negative labels."""
    label = read_label_image(path)
    if shape is not None and label.shape != shape:
        raise DataError(path, None, f"size {label.shape} differs from the reference's {shape}")
    if label.min(initial=0) < 0:
        raise DataError(path, None, "negative labels")
    return label


def _label_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(folder, None, f"{what} folder not found")
    files = sorted(f for f in folder.iterdir() if f.is_file() and is_image_file(f))
    if not files:
        raise DataError(folder, None, "no label images in this folder")
    return files


def label_folder_pairs(gt_dir: str | Path, res_dir: str | Path) -> list[tuple[Path, Path]]:
    """Two folders of label images (value = track id), frames paired by sorted file name ->
    ``[(reference file, result file)]``. DataError for a missing or empty folder or another
    number of images."""
    gt, res = Path(gt_dir), Path(res_dir)
    ref_files, res_files = _label_files(gt, "ground-truth"), _label_files(res, "result")
    if len(ref_files) != len(res_files):
        raise DataError(
            res, None, f"{len(res_files)} label images, the ground truth {gt} has {len(ref_files)}"
        )
    return list(zip(ref_files, res_files))


@dataclass(frozen=True)
class CTCFolderMatch:
    """A CTC ground-truth / result pair read and matched once: per frame ``t`` the reference
    markers' file ``tra_files[t]``, the result's ``mask_files[t]`` and their detection test
    ``matches[t]``; ``seg[t]`` the test of the reference segmentation ``SEG/man_seg*`` of the
    frames that have one (empty when not asked for); both track tables with their files."""

    tra_files: list[Path]
    mask_files: list[Path]
    matches: list[FrameMatch]
    seg: dict[int, FrameMatch]
    ref_tracks: dict[int, Track]
    res_tracks: dict[int, Track]
    ref_table: Path
    res_table: Path


def match_ctc_folders(gt_dir: str | Path, res_dir: str | Path, seg: bool = True) -> CTCFolderMatch:
    """Read ``gt_dir`` (``NN_GT``) and ``res_dir`` (``NN_RES``), every frame once, and run the
    detection test on the ``TRA`` markers (and, with ``seg``, on the ``SEG`` masks).
    DataError (naming the file) for a missing track table, mismatched frames or a
    ``res_track.txt`` that disagrees with the masks (the challenge rejects such results)."""
    gt, res = Path(gt_dir), Path(res_dir)
    tra_files, mask_files, seg_files = _frames(gt, res)
    ref_table, res_table = gt / "TRA" / "man_track.txt", res / "res_track.txt"
    ref_tracks, res_tracks = read_tracks(ref_table), read_tracks(res_table)
    matches: list[FrameMatch] = []
    seg_matches: dict[int, FrameMatch] = {}
    for t, (tra_file, mask_file) in enumerate(zip(tra_files, mask_files)):
        reference = read_labels(tra_file)
        result = read_labels(mask_file, reference.shape)
        matches.append(match_frame(reference, result))
        if seg and t in seg_files:
            seg_matches[t] = match_frame(read_labels(seg_files[t], result.shape), result)
    try:
        check_result_tracks(matches, res_tracks)
    except ValueError as err:
        raise DataError(res_table, None, str(err)) from None
    return CTCFolderMatch(tra_files, mask_files, matches, seg_matches, ref_tracks, res_tracks,
                          ref_table, res_table)  # fmt: skip


def det_seg_tra(folders: CTCFolderMatch) -> dict[str, float]:
    """``{"DET", "SEG", "TRA"}`` of a matched pair, plus the AOGM counts ``NS, FN, FP, ED, EA,
    EC`` and ``AOGM``, ``AOGM_0``. SEG is NaN without reference segmentations. DataError for a
    reference parent link whose objects are missing."""
    try:
        counts = aogm_counts(folders.matches, folders.ref_tracks, folders.res_tracks)
        det, tra = counts.det, counts.tra
    except ValueError as err:
        raise DataError(folders.ref_table, None, str(err)) from None
    jaccards = [m.jaccard for m in folders.seg.values()]
    n_seg = sum(len(j) for j in jaccards)
    seg = float(np.sum(np.concatenate(jaccards)) / max(n_seg, 1)) if jaccards else float("nan")
    return {"DET": det, "SEG": seg, "TRA": tra, **counts.as_dict()}


def ctc_measures(gt_dir: str | Path, res_dir: str | Path) -> dict[str, float]:
    """:func:`det_seg_tra` of the result folder ``res_dir`` (``NN_RES``) against ``gt_dir``
    (``NN_GT``); DataError as :func:`match_ctc_folders`."""
    return det_seg_tra(match_ctc_folders(gt_dir, res_dir))
