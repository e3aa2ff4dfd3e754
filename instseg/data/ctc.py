"""Cell Tracking Challenge sequences: frames, ground-truth label images and the track table.

Layout (the challenge's own): a sequence folder ``NN/`` of frames ``t000.tif`` ... (``t0000``
for long sequences) and, beside it, ``NN_GT/`` with ``TRA/man_track000.tif`` ... (label
images whose pixel values are track ids), ``TRA/man_track.txt`` (one line per track:
``id first_frame last_frame parent_id``, parent 0 = none) and ``SEG/man_seg000.tif`` ...
(full instance masks, possibly on some frames only). A result folder (``NN_RES``) has
``mask000.tif`` ... and ``res_track.txt`` in the same formats. The TIFFs are often
LZW-compressed (``imagecodecs``, a dependency, decodes them).

:func:`read_sequence` -> :class:`CTCSequence`; :meth:`CTCSequence.instances` gives a frame's
ground truth as :class:`~instseg.structures.Instances` with ``track_ids``;
:func:`label_instances` turns any label image into instances whose track ids are its values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instseg.data.io import read_image, read_label_image
from instseg.errors import DataError
from instseg.structures import Instances

__all__ = [
    "CTC_FILES",
    "CTCSequence",
    "Track",
    "label_instances",
    "numbered_files",
    "read_sequence",
    "read_tracks",
]

_FRAME = re.compile(r"^t(\d{3,4})\.tiff?$", re.IGNORECASE)
#: file names of the ground truth's ``TRA`` / ``SEG`` label images and a result's masks
CTC_FILES = {
    "TRA": re.compile(r"^man_track(\d{3,4})\.tiff?$"),
    "SEG": re.compile(r"^man_seg(\d{3,4})\.tiff?$"),
    "RES": re.compile(r"^mask(\d{3,4})\.tiff?$"),
}


@dataclass(frozen=True)
class Track:
    """One line of a CTC track table: frames ``first..last`` inclusive, ``parent`` 0 = none."""

    id: int
    first: int
    last: int
    parent: int


def read_tracks(path: str | Path) -> dict[int, Track]:
    """``man_track.txt`` / ``res_track.txt`` -> ``{id: Track}``. DataError naming the file and
    the line for anything but four integers in [0, 2**31) with ``first <= last``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, None, "track file not found")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(p, None, f"cannot read the track file ({type(err).__name__})") from None
    tracks: dict[int, Track] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 4 or min(values) < 0 or values[1] > values[2] or max(values) >= 2**31:
            raise DataError(p, f"line {n}", f"expected 'id first last parent' (integers, first <= last), got {line.strip()!r}")
        if values[0] in tracks:
            raise DataError(p, f"line {n}", f"track {values[0]} listed twice")
        tracks[values[0]] = Track(*values)
    return tracks


def label_instances(label: np.ndarray) -> Instances:
    """Label image ``(H, W)`` (0 = background) -> one instance per value, ``track_ids`` = the
    values (ascending), labels 0, boxes xyxy from the masks."""
    ids = np.unique(label)
    ids = ids[ids != 0]
    masks = label[None] == ids[:, None, None] if len(ids) else np.zeros((0, *label.shape), bool)
    return Instances.from_masks(masks, track_ids=ids.astype(np.int64))


def numbered_files(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """``{frame: file}`` of the files in ``folder`` (none when it is missing) whose names match
    ``pattern`` (group 1: the frame number, 3 or 4 digits). DataError for a frame found twice
    (``mask000.tif`` and ``mask0000.tif``)."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            m = pattern.match(f.name)
            if m:
                t = int(m.group(1))
                if t in out:
                    raise DataError(f, None, f"frame {t} also in {out[t].name}")
                out[t] = f
    return out


@dataclass
class CTCSequence:
    """A CTC sequence: ``frames[t]`` is frame ``t``'s file (t = 0..T-1, no gaps), ``tra`` /
    ``seg`` the ground-truth label images by frame (possibly empty), ``tracks`` the GT table
    (empty without ``NN_GT/TRA/man_track.txt``)."""

    root: Path
    frames: list[Path]
    tra: dict[int, Path] = field(default_factory=dict)
    seg: dict[int, Path] = field(default_factory=dict)
    tracks: dict[int, Track] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, t: int) -> np.ndarray:
        """Frame ``t`` as RGB uint8 ``(H, W, 3)`` (16-bit stretched per image)."""
        return read_image(self.frames[t])

    def instances(self, t: int, kind: str = "TRA") -> Instances | None:
        """Frame ``t``'s ground truth from ``TRA`` (track markers or masks, values = track ids)
        or ``SEG`` (full masks; values are instance ids, not track ids) label images; ``None``
        where that frame has none."""
        files = {"TRA": self.tra, "SEG": self.seg}.get(kind)
        if files is None:
            raise ValueError(f"kind must be 'TRA' or 'SEG', got {kind!r}")
        path = files.get(t)
        return None if path is None else label_instances(read_label_image(path))


def read_sequence(path: str | Path) -> CTCSequence:
    """A CTC sequence folder (``.../Fluo-N2DH-SIM+/01``) with its ``01_GT`` beside it when there.
    DataError for a folder without ``tNNN.tif`` frames or with gaps in their numbers."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, None, "CTC sequence folder not found")
    frames = numbered_files(root, _FRAME)
    if not frames:
        raise DataError(root, None, "no CTC frames (t000.tif, t001.tif, ...) in this folder")
    missing = sorted(set(range(max(frames) + 1)) - set(frames))
    if missing:
        raise DataError(root, f"t{missing[0]:03d}.tif", f"frame missing ({len(missing)} gaps in the numbering)")
    gt = root.parent / f"{root.name}_GT"
    seq = CTCSequence(root, [frames[t] for t in range(len(frames))])
    seq.tra = numbered_files(gt / "TRA", CTC_FILES["TRA"])
    seq.seg = numbered_files(gt / "SEG", CTC_FILES["SEG"])
    if (gt / "TRA" / "man_track.txt").is_file():
        seq.tracks = read_tracks(gt / "TRA" / "man_track.txt")
    return seq
