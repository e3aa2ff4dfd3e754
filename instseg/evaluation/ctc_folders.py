"""DET, SEG and TRA of a CTC result folder against its ground truth, as the challenge lays them
out: ``NN_GT/TRA/man_track000.tif ...`` (markers, values = track ids) with
``NN_GT/TRA/man_track.txt``, ``NN_GT/SEG/man_seg000.tif ...`` (full masks, on some frames
only, possibly none) and ``NN_RES/mask000.tif ...`` with ``NN_RES/res_track.txt`` (3- or
4-digit frame numbers). Every frame is read once and matched with bincount / unique, so a
sequence of a hundred 1024x1024 frames takes seconds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from instseg.data.ctc import read_tracks
from instseg.data.io import read_label_image
from instseg.errors import DataError
from instseg.evaluation.ctc_tracking import (
    FrameMatch,
    aogm_counts,
    check_result_tracks,
    match_frame,
)

__all__ = ["ctc_measures"]

_TRA = re.compile(r"^man_track(\d{3,4})\.tiff?$")
_SEG = re.compile(r"^man_seg(\d{3,4})\.tiff?$")
_MASK = re.compile(r"^mask(\d{3,4})\.tiff?$")


def _numbered(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """``{frame: file}`` of the files in ``folder`` whose names match ``pattern``."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            m = pattern.match(f.name)
            if m:
                if int(m.group(1)) in out:
                    raise DataError(
                        f, None, f"frame {int(m.group(1))} also in {out[int(m.group(1))].name}"
                    )
                out[int(m.group(1))] = f
    return out


def _frames(gt: Path, res: Path) -> tuple[list[Path], list[Path], dict[int, Path]]:
    """Reference marker files, result mask files (both frame 0..T-1) and SEG files by frame;
    DataError naming the folder for anything missing or mismatched."""
    if not gt.is_dir():
        raise DataError(gt, None, "ground-truth folder not found")
    if not res.is_dir():
        raise DataError(res, None, "result folder not found")
    tra = _numbered(gt / "TRA", _TRA)
    if not tra:
        raise DataError(gt / "TRA", None, "no reference markers (man_track000.tif, ...)")
    n = len(tra)
    gaps = sorted(set(range(n)) - set(tra))
    if gaps:
        raise DataError(
            gt / "TRA",
            f"man_track{gaps[0]:03d}.tif",
            f"missing ({len(gaps)} gaps in the frame numbers)",
        )
    masks = _numbered(res, _MASK)
    if sorted(masks) != list(range(n)):
        missing = sorted(set(range(n)) - set(masks))
        what = (
            f"mask{missing[0]:03d}.tif missing"
            if missing
            else f"mask{max(masks):03d}.tif has no reference frame"
        )
        raise DataError(res, None, f"{len(masks)} result masks for {n} reference frames ({what})")
    seg = _numbered(gt / "SEG", _SEG)
    beyond = [t for t in seg if t >= n]
    if beyond:
        raise DataError(
            seg[beyond[0]], None, f"frame {beyond[0]} is beyond the {n} reference frames"
        )
    return [tra[t] for t in range(n)], [masks[t] for t in range(n)], seg


def _read(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A label image; DataError for another size than ``shape`` or negative labels."""
    label = read_label_image(path)
    if shape is not None and label.shape != shape:
        raise DataError(path, None, f"size {label.shape} differs from the reference's {shape}")
    if label.min(initial=0) < 0:
        raise DataError(path, None, "negative labels")
    return label


def ctc_measures(gt_dir: str | Path, res_dir: str | Path) -> dict[str, float]:
    """``{"DET", "SEG", "TRA"}`` of the result folder ``res_dir`` (``NN_RES``) against
    ``gt_dir`` (``NN_GT``), plus the AOGM counts ``NS, FN, FP, ED, EA, EC`` and ``AOGM``,
    ``AOGM_0``. SEG is NaN without ``SEG/man_seg*.tif``. DataError (naming the file) for a
    missing track table, mismatched frames or a ``res_track.txt`` that disagrees with the
    masks (the challenge rejects such results)."""
    gt, res = Path(gt_dir), Path(res_dir)
    tra_files, mask_files, seg_files = _frames(gt, res)
    ref_table, res_table = gt / "TRA" / "man_track.txt", res / "res_track.txt"
    ref_tracks, res_tracks = read_tracks(ref_table), read_tracks(res_table)
    matches: list[FrameMatch] = []
    jaccards: list[np.ndarray] = []
    for t, (tra_file, mask_file) in enumerate(zip(tra_files, mask_files)):
        reference = _read(tra_file)
        result = _read(mask_file, reference.shape)
        matches.append(match_frame(reference, result))
        if t in seg_files:
            jaccards.append(match_frame(_read(seg_files[t], result.shape), result).jaccard)
    try:
        check_result_tracks(matches, res_tracks)
    except ValueError as err:
        raise DataError(res_table, None, str(err)) from None
    try:
        counts = aogm_counts(matches, ref_tracks, res_tracks)
        det, tra = counts.det, counts.tra
    except ValueError as err:
        raise DataError(ref_table, None, str(err)) from None
    n_seg = sum(len(j) for j in jaccards)
    seg = float(np.sum(np.concatenate(jaccards)) / max(n_seg, 1)) if jaccards else float("nan")
    return {"DET": det, "SEG": seg, "TRA": tra, **counts.as_dict()}
