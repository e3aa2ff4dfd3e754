"""MOTS Challenge / KITTI MOTS text files: one object of one frame a line,
``time_frame id class_id img_height img_width rle``, ``rle`` a COCO compressed RLE string
(pycocotools' ``encode``, column-major), ``id`` the track's identity (by convention
``class_id * 1000 + instance``), ``class_id`` 10 an ignore region.

Frame ``t`` of what :func:`read_mots_frames` / :func:`read_mots` return holds the lines with
``time_frame == t``: MOTS Challenge counts frames from 1 (so its frame 0 is empty), KITTI MOTS
from 0. Every line is checked (six fields, integers, one image size per file, a track once per
frame, an RLE covering exactly ``img_height x img_width`` pixels); a bad one is a one-line
DataError naming the file and the line. Overlapping masks are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instseg.data.io import check_image_pixels
from instseg.errors import DataError
from instseg.masks import check_rle, decode
from instseg.structures import Instances

__all__ = ["IGNORE_CLASS", "MOTSFrame", "read_mots", "read_mots_frames"]

IGNORE_CLASS = 10  #: ``class_id`` of an ignore region (MOTS Challenge, KITTI MOTS)
MAX_FRAMES = 1_000_000  #: a time_frame at or past this is refused (frames are listed up to the last)
_FIELDS = "'time_frame id class_id img_height img_width rle'"


@dataclass
class MOTSFrame:
    """One frame: image ``size`` ``(H, W)`` ((0, 0) when the file has no objects), per object
    (in file order) ``ids``, ``classes`` and compressed ``rles`` (pycocotools dicts, counts
    bytes)."""

    size: tuple[int, int]
    ids: list[int] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    rles: list[dict[str, Any]] = field(default_factory=list)

    def instances(self) -> Instances:
        """The frame as :class:`~instseg.structures.Instances`: decoded masks, ``track_ids`` =
        ids, ``labels`` = class ids (not contiguous indices), ``iscrowd`` = ignore regions."""
        classes = np.asarray(self.classes, np.int64)
        return Instances.from_masks(
            decode(self.rles, *self.size),
            labels=classes,
            track_ids=np.asarray(self.ids, np.int64),
            iscrowd=classes == IGNORE_CLASS,
        )


def _row(line: str, where: str, path: Path) -> tuple[list[int], str]:
    """``[time_frame, id, class_id, height, width]`` and the RLE string of one line."""
    parts = line.split()
    shown = line.strip() if len(line.strip()) <= 60 else line.strip()[:57] + "..."
    if len(parts) != 6:
        raise DataError(path, where, f"expected {_FIELDS}, got {len(parts)} fields: {shown!r}")
    try:
        values = [int(v) for v in parts[:5]]
    except ValueError:
        raise DataError(path, where, f"expected {_FIELDS} (integers first), got {shown!r}") from None
    if min(values[:3]) < 0 or min(values[3:]) < 1:
        raise DataError(path, where, f"negative frame, id or class, or an empty image: {shown!r}")
    if values[0] >= MAX_FRAMES or max(values[1:3]) >= 2**31 or max(values[3:]) >= 2**31:
        raise DataError(path, where, f"time_frame >= {MAX_FRAMES:,}, or an id, class or size >= 2**31: {shown!r}")
    check_image_pixels(path, values[3] * values[4])
    return values, parts[5]


def read_mots_frames(path: str | Path, frames: int | None = None) -> list[MOTSFrame]:
    """A MOTS text file -> its frames (``frames`` of them when given, else up to the last
    ``time_frame``; frames without lines are empty). DataError naming the file and the line
    for a bad line or, with ``frames``, a ``time_frame`` past the last frame."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, None, "MOTS file not found")
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(p, None, f"cannot read the MOTS file ({type(err).__name__})") from None
    size: tuple[int, int] | None = None
    first = 0
    by_frame: dict[int, MOTSFrame] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {n}"
        (t, tid, cls, h, w), rle = _row(line, where, p)
        if size is None:
            size, first = (h, w), n
        elif (h, w) != size:
            raise DataError(p, where, f"image size {h}x{w} differs from line {first}'s {size[0]}x{size[1]}")
        if frames is not None and t >= frames:
            raise DataError(p, where, f"time_frame {t} is past the last frame ({frames - 1})")
        problem = check_rle(rle, h, w)
        if problem:
            raise DataError(p, where, problem)
        frame = by_frame.setdefault(t, MOTSFrame((h, w)))
        if tid in frame.ids:
            raise DataError(p, where, f"id {tid} appears twice in frame {t}")
        frame.ids.append(tid)
        frame.classes.append(cls)
        frame.rles.append({"size": [h, w], "counts": rle.encode("ascii")})
    count = frames if frames is not None else max(by_frame, default=-1) + 1
    return [by_frame.get(t) or MOTSFrame(size or (0, 0)) for t in range(count)]


def read_mots(path: str | Path, frames: int | None = None) -> list[Instances]:
    """A MOTS text file -> one :class:`~instseg.structures.Instances` a frame (see
    :meth:`MOTSFrame.instances`); ``frames`` and errors as :func:`read_mots_frames`."""
    return [f.instances() for f in read_mots_frames(path, frames)]
