"""``track_sequence``: a sequence (frames run through a predictor, or label images given by
another segmenter) tracked and written as a Cell Tracking Challenge result folder plus
``tracks.csv``.

Outputs under ``out``:

* ``ctc/mask000.tif`` ... (uint16 label images, pixel value = track id; ``mask0000`` for
  1,000 frames or more) and ``ctc/res_track.txt`` (``id first last parent``): the
  challenge's result format, which its evaluation tools read;
* ``tracks.csv``: ``track_id, first_frame, last_frame, parent, frames_seen, mean_area,
  path_length`` (centroid path in pixels).

A frame that cannot be read counts as a frame where nothing was detected (tracks survive it
through the lost-track buffer), gets an empty label image of the previous frame's size, and
is reported at the end; the others are all written.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from instseg.data.ctc import Track, label_instances
from instseg.data.io import is_image_file, read_label_image
from instseg.errors import DataError
from instseg.inference.sources import iter_sources, list_inputs
from instseg.masks import paint_label_image
from instseg.structures import Instances
from instseg.tracking.tracker import Tracker

__all__ = ["TrackReport", "ctc_segments", "label_frames", "predicted_frames", "track_sequence"]

#: one frame to track: ``(name, instances)``, or ``(name, error)`` when it could not be read
Frame = tuple[str, Instances | str]


@dataclass
class TrackReport:
    """What :func:`track_sequence` wrote: frame and track counts, and the bad frames."""

    out: Path
    frames: int = 0
    tracks: int = 0
    divisions: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"tracked {self.frames} frames: {self.tracks} tracks, {self.divisions} divisions "
                 f"-> {self.out / 'ctc'} and {self.out / 'tracks.csv'}"]  # fmt: skip
        lines += [f"skipped {name}: {why}" for name, why in self.failed]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def predicted_frames(source: Any, predictor: Callable[[np.ndarray], Instances]) -> Iterator[Frame]:
    """Frames of SOURCE (a folder of frames, e.g. a CTC sequence, a glob or a video) through
    ``predictor``, in order."""
    for item in iter_sources(source):
        if item.ok:
            yield item.name, predictor(item.image)  # type: ignore[arg-type]
        else:
            yield item.name, item.error or "no image"


def label_frames(folder: str | Path) -> Iterator[Frame]:
    """Label images of another segmenter (the image files of a folder, sorted by name; other
    files such as a CTC ``man_track.txt`` are not frames; 0 = background, each other value one
    object), as instances to track (their values are not used as track ids)."""
    for path, _ in list_inputs(folder):
        if not is_image_file(path):
            continue
        try:
            inst = label_instances(read_label_image(path))
        except DataError as err:
            yield path.name, err.message
            continue
        inst.track_ids = None
        yield path.stem, inst


def track_sequence(frames: Iterable[Frame], out: str | Path, tracker: Tracker | None = None,
                   progress: bool = False, total: int | None = None,
                   overwrite: bool = False) -> TrackReport:  # fmt: skip
    """Track ``frames`` (:func:`predicted_frames` or :func:`label_frames`) and write the CTC
    result folder and ``tracks.csv`` under ``out``. An earlier result there (its masks would
    mix with the new ones) is a DataError unless ``overwrite``, which deletes it first."""
    tracker = tracker if tracker is not None else Tracker()
    report = TrackReport(Path(out))
    ctc = report.out / "ctc"
    old = sorted(ctc.glob("mask*.tif")) + [p for p in (ctc / "res_track.txt",) if p.exists()]
    if old and not overwrite:
        raise DataError(ctc, None, "holds an earlier result; pass --overwrite to replace it")
    for p in old:
        p.unlink()
    ctc.mkdir(parents=True, exist_ok=True)
    stats: dict[int, list[Any]] = {}  # id -> [frames seen, area sum, path length, last centroid]
    size: tuple[int, int] | None = None
    labels: list[np.ndarray] = []
    for name, got in tqdm(frames, total=total, desc="track", unit="frame", disable=not progress):
        if isinstance(got, str):
            report.failed.append((name, got))
            if size is None:
                labels.append(np.zeros((0, 0), np.uint16))  # sized once a frame is read
                continue
            got = Instances.from_masks(np.zeros((0, *size), bool))
        size = got.image_size
        tracked = tracker.update(got)
        labels.append(_label(tracked))
        _accumulate(stats, tracked)
    width = 4 if len(labels) >= 1000 else 3
    tracks = tracker.tracks()
    segments = ctc_segments(labels, tracks)
    _write_masks(ctc, labels, size, width)
    (ctc / "res_track.txt").write_text("".join(f"{t.id} {t.first} {t.last} {t.parent}\n" for t in segments))
    _write_csv(report.out / "tracks.csv", tracks, stats)
    report.frames, report.tracks = len(labels), len(tracks)
    report.divisions = len({t.parent for t in tracks if t.parent})  # the tracker's, not gaps
    return report


def ctc_segments(labels: list[np.ndarray], tracks: list[Track]) -> list[Track]:
    """The CTC track table of label images (edited in place): the challenge wants each label
    in every frame from its first to its last, so a track that a miss (or an occluding object
    painted over it) interrupts continues after the gap under a new label whose parent is the
    label before the gap; daughters' parents point to their mother's last segment."""
    present: dict[int, list[int]] = {}
    for t, label in enumerate(labels):
        for tid in np.unique(label).tolist():
            if tid:
                present.setdefault(int(tid), []).append(t)
    next_id = max([t.id for t in tracks] + list(present) + [0]) + 1
    last_segment: dict[int, int] = {}
    runs: list[tuple[int, int, int, int, int]] = []  # (label, first, last, parent label, track)
    for tid, frames in sorted(present.items()):
        start = frames[0]
        label_id, parent = tid, -1  # -1: the track's own parent, resolved below
        for a, b in zip(frames, [*frames[1:], None]):
            if b is not None and b == a + 1:
                continue
            if label_id != tid:
                for t in range(start, a + 1):
                    labels[t][labels[t] == tid] = label_id
            runs.append((label_id, start, a, parent, tid))
            if b is not None:  # a gap: the next run continues under a new label
                parent, label_id, start = label_id, next_id, b
                next_id += 1
        last_segment[tid] = label_id
    parents = {t.id: t.parent for t in tracks}
    return [
        Track(lab, first, last, last_segment.get(parents.get(tid, 0), 0) if parent < 0 else parent)
        for lab, first, last, parent, tid in runs
    ]


def _label(inst: Instances) -> np.ndarray:
    """uint16 label image of tracked instances (value = track id)."""
    assert inst.masks is not None and inst.track_ids is not None
    masks = inst.masks.numpy()
    return paint_label_image(inst.image_size, masks, inst.track_ids.numpy(), dtype=np.uint16)


def _accumulate(stats: dict[int, list[Any]], inst: Instances) -> None:
    assert inst.masks is not None and inst.track_ids is not None
    for mask, tid in zip(inst.masks.numpy(), inst.track_ids.tolist()):
        ys, xs = np.nonzero(mask)
        c = np.array([ys.mean(), xs.mean()]) if len(ys) else None
        s = stats.setdefault(tid, [0, 0.0, 0.0, None])
        s[0], s[1] = s[0] + 1, s[1] + float(len(ys))
        if c is not None and s[3] is not None:
            s[2] += float(np.hypot(*(c - s[3])))
        s[3] = c if c is not None else s[3]


def _write_masks(folder: Path, labels: list[np.ndarray], size: tuple[int, int] | None, width: int) -> None:
    import tifffile

    for t, label in enumerate(labels):
        if label.size == 0 and size is not None:  # a bad frame before the first good one
            label = np.zeros(size, np.uint16)
        tifffile.imwrite(folder / f"mask{t:0{width}d}.tif", label)


def _write_csv(path: Path, tracks: list[Any], stats: dict[int, list[Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["track_id", "first_frame", "last_frame", "parent", "frames_seen", "mean_area", "path_length"])
        for t in tracks:
            seen, area, length, _ = stats.get(t.id, [0, 0.0, 0.0, None])
            w.writerow([t.id, t.first, t.last, t.parent, seen, f"{area / max(seen, 1):.1f}", f"{length:.1f}"])
