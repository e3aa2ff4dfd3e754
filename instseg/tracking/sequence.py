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

from instseg.data.ctc import label_instances
from instseg.data.io import read_label_image
from instseg.errors import DataError
from instseg.inference.sources import iter_sources, list_inputs
from instseg.masks import paint_label_image
from instseg.structures import Instances
from instseg.tracking.tracker import Tracker

__all__ = ["TrackReport", "label_frames", "predicted_frames", "track_sequence"]

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
    """Label images of another segmenter (a folder, sorted by name; 0 = background, each other
    value one object), as instances to track (their values are not used as track ids)."""
    for path, _ in list_inputs(folder):
        try:
            inst = label_instances(read_label_image(path))
        except DataError as err:
            yield path.name, err.message
            continue
        inst.track_ids = None
        yield path.stem, inst


def track_sequence(frames: Iterable[Frame], out: str | Path, tracker: Tracker | None = None,
                   progress: bool = False, total: int | None = None) -> TrackReport:  # fmt: skip
    """Track ``frames`` (:func:`predicted_frames` or :func:`label_frames`) and write the CTC
    result folder and ``tracks.csv`` under ``out``."""
    tracker = tracker if tracker is not None else Tracker()
    report = TrackReport(Path(out))
    ctc = report.out / "ctc"
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
    _write_masks(ctc, labels, size, width)
    tracks = tracker.tracks()
    (ctc / "res_track.txt").write_text("".join(f"{t.id} {t.first} {t.last} {t.parent}\n" for t in tracks))
    _write_csv(report.out / "tracks.csv", tracks, stats)
    report.frames, report.tracks = len(labels), len(tracks)
    report.divisions = len({t.parent for t in tracks if t.parent})
    return report


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
