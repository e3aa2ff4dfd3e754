"""``track_sequence``: a sequence (frames run through a predictor, or label images given by
another segmenter) tracked and written in the formats chosen (:mod:`instseg.tracking.writers`:
CTC result folder, MOTS text, COCO results with track ids, ``tracks.csv``, overlay GIF/MP4).

Sources of frames (:func:`frame_images`): a folder of frames (sorted by name; e.g. a Cell
Tracking Challenge sequence ``t000.tif`` ...; files that are neither images nor videos are not
frames), a glob, a video, or one multi-frame TIFF (T pages, or a ``(T, H, W)`` / ``(T, H, W,
C)`` series). Label images (:func:`label_frames`): a folder or glob of label images, or a
multi-frame label TIFF. Frames stream: one is in memory at a time.

A frame that cannot be read (or predicted, or whose size differs from the sequence's) counts
as a frame where nothing was detected (tracks survive it through the lost-track buffer), is
written empty, and is reported at the end; the others are all written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from instseg.data.ctc import Track, label_instances
from instseg.data.io import TIFF_SUFFIXES, is_image_file, read_label_image, to_rgb_uint8
from instseg.errors import DataError
from instseg.inference.sources import Source, count_items, is_video_file, iter_sources, list_inputs
from instseg.structures import Instances
from instseg.tracking.tracker import Tracker
from instseg.tracking.writers import (
    DEFAULT_OUTPUTS,
    OUTPUT_FILES,
    OUTPUTS,
    SequenceResult,
    open_writers,
    tracked_frame,
)

__all__ = [
    "Frame", "TrackReport", "count_frames", "ctc_segments", "frame_images", "label_frames",
    "predicted_frames", "segment_runs", "source_fps", "track_sequence",
]  # fmt: skip

Runs = dict[int, list[list[int]]]  # track id -> [[first, last], ...]: the frames it is in


class Frame(NamedTuple):
    """One frame to track: ``got`` its instances, or why it could not be read; ``image`` (RGB
    uint8, for overlays), ``file_name`` and ``frame`` (index inside a video or stack) when
    known. A plain ``(name, got)`` pair works too."""

    name: str
    got: Instances | str
    image: np.ndarray | None = None
    file_name: str | None = None
    frame: int | None = None


@dataclass
class TrackReport:
    """What :func:`track_sequence` wrote: frame and track counts, files, bad frames, notes."""

    out: Path
    frames: int = 0
    tracks: int = 0
    divisions: int = 0
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"tracked {self.frames} frames: {self.tracks} tracks, {self.divisions} divisions "
                 f"-> {self.out}: {', '.join(self.written)}"]  # fmt: skip
        lines += self.notes
        lines += [f"skipped {name}: {why}" for name, why in self.failed]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# -- sources ----------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _tiff_frames(path: Path, labels: bool = False) -> tuple[int, list[int]] | None:
    """``(frames, frame shape)`` of a multi-frame TIFF (frames: the product of its axes other
    than Y, X and samples; for ``labels`` also leading samples, as labels have no colour);
    None for a single image or a file that is not a readable TIFF. DataError for more than
    one frame axis longer than 1 (e.g. time and channels)."""
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            shape, axes = tf.series[0].shape, tf.series[0].axes
    except Exception:
        return None  # reading it as an image reports why
    spatial = [a in "YX" or (a == "S" and not (labels and k == 0)) for k, a in enumerate(axes)]
    dims = [n for n, s in zip(shape, spatial) if not s]
    if sum(n > 1 for n in dims) > 1:
        raise DataError(path, None, f"TIFF has axes {axes} {tuple(shape)}: expected one frame axis")
    n = math.prod(dims)
    return (n, [d for d, s in zip(shape, spatial) if s]) if n > 1 else None


def _tiff_pages(path: Path, n: int, frame: list[int]) -> Iterator[np.ndarray | str]:
    """The ``n`` frames (each of shape ``frame``) of a multi-frame TIFF, page by page (an
    unreadable page: its error)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        pages = series.pages
        if len(pages) != n:  # frames that are not one page each: mapped from a temporary file
            yield from (np.asarray(a) for a in series.asarray(out="memmap").reshape(n, *frame))
            return
        for page in pages:
            try:
                if page is None:
                    raise ValueError("page missing")
                yield page.asarray()
            except Exception as exc:
                yield f"cannot read this page ({_one_line(exc)})"


def _files(source: Source, want: Callable[[Path], bool]) -> list[Path]:
    """The files SOURCE names (:func:`~instseg.inference.sources.list_inputs`) that ``want``
    keeps; DataError when none is left."""
    files = [f for f, _ in list_inputs(source) if want(f)]
    if not files:
        raise DataError(str(source), None, "no frames here (no image, video or TIFF stack files)")
    return files


def _single(source: Any) -> Path | None:
    return Path(source) if isinstance(source, (str, Path)) and Path(source).is_file() else None


def frame_images(source: Source) -> Iterator[tuple[str, np.ndarray | str, str, int | None]]:
    """``(name, RGB uint8 image or why it is unreadable, file name, frame in file)`` for each
    frame of SOURCE (see the module docstring), in order."""
    single = _single(source)
    stack = _tiff_frames(single) if single is not None else None
    if single is not None and stack is not None:
        for t, page in enumerate(_tiff_pages(single, *stack)):
            try:
                image = page if isinstance(page, str) else to_rgb_uint8(page)
            except ValueError as exc:
                image = str(exc)
            yield f"{single.stem}_{t:06d}", image, str(single), t
        return
    files = _files(source, lambda f: is_image_file(f) or is_video_file(f))
    for item in iter_sources(files):
        got = item.image if item.ok and item.image is not None else item.error or "no image"
        yield item.name, got, str(item.path or item.name), item.frame


def count_frames(source: Source, labels: bool = False) -> int | None:
    """How many frames :func:`frame_images` (``labels``: :func:`label_frames`) will give, or
    None when unknown (video counts come from the container, so are approximate)."""
    single = _single(source)
    stack = _tiff_frames(single, labels) if single is not None else None
    if stack is not None:
        return stack[0]
    if labels:
        return len(_files(source, is_image_file))
    files = _files(source, lambda f: is_image_file(f) or is_video_file(f))
    videos = [f for f in files if is_video_file(f)]
    counted = count_items(videos) if videos else 0
    return None if counted is None else counted + len(files) - len(videos)


def source_fps(source: Source) -> float | None:
    """The frame rate of a SOURCE that is one video file (None otherwise or when unknown)."""
    single = _single(source)
    if single is None or not is_video_file(single):
        return None
    import cv2

    cap = cv2.VideoCapture(str(single))
    fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    cap.release()
    return fps if fps > 0 else None


def predicted_frames(source: Source, predictor: Callable[[np.ndarray], Instances]) -> Iterator[Frame]:
    """Frames of SOURCE (:func:`frame_images`) through ``predictor``, in order; a frame the
    predictor fails on is reported like an unreadable one."""
    for name, image, file_name, index in frame_images(source):
        if isinstance(image, str):
            yield Frame(name, image, None, file_name, index)
            continue
        try:
            got: Instances | str = predictor(image)
        except Exception as exc:
            got = f"prediction failed ({_one_line(exc)})"
        yield Frame(name, got, image, file_name, index)


def _labels(source: Source) -> Iterator[tuple[str, np.ndarray | str, str, int | None]]:
    """``(name, label image or error, file name, frame in file)`` of a labels SOURCE."""
    single = _single(source)
    stack = _tiff_frames(single, labels=True) if single is not None else None
    if single is not None and stack is not None:
        for t, page in enumerate(_tiff_pages(single, *stack)):
            if not isinstance(page, str) and page.ndim != 2:
                page = f"label page must be 2-D, got shape {page.shape}"
            elif not isinstance(page, str) and not np.array_equal(page, np.round(page)):
                page = "label page has non-integer values"
            yield f"{single.stem}_{t:06d}", page, str(single), t
        return
    for path in _files(source, is_image_file):
        try:
            yield path.stem, read_label_image(path), str(path), None
        except DataError as err:
            yield path.name, err.message, str(path), None


def label_frames(source: Source, images: Source | None = None) -> Iterator[Frame]:
    """Label images of another segmenter (the image files of a folder or glob, sorted by name,
    or the pages of one multi-frame TIFF; 0 = background, each other value one object), as
    instances to track (their values are not used as track ids). ``images``: frames (any
    SOURCE) drawn under the overlay, the n-th under the n-th label image."""
    backgrounds = frame_images(images) if images is not None else iter(())
    for name, label, file_name, index in _labels(source):
        image = next(backgrounds, None)
        picture = image[1] if image is not None and not isinstance(image[1], str) else None
        if isinstance(label, str):
            yield Frame(name, label, picture, file_name, index)
            continue
        if not np.issubdtype(label.dtype, np.integer):
            label = label.astype(np.int64)
        inst = label_instances(label)
        inst.track_ids = None
        yield Frame(name, inst, picture, file_name, index)


# -- CTC segments -----------------------------------------------------------------------------
def segment_runs(runs: Runs, tracks: Sequence[Track]) -> tuple[list[Track], dict[int, list[tuple[int, int, int]]]]:
    """CTC rows of tracks present in frames ``runs`` (``{id: [[first, last], ...]}``, in
    order) -> ``(rows, relabel)``: each run after a gap gets a new label (parent: the label
    before the gap), listed in ``relabel[id]`` as ``(label, first, last)``; a track's first
    run keeps its id and has as parent the last label of its tracker parent."""
    next_id = max([t.id for t in tracks] + list(runs) + [0]) + 1
    last_label: dict[int, int] = {}
    raw: list[tuple[int, int, int, int, int]] = []  # (label, first, last, parent label, track)
    relabel: dict[int, list[tuple[int, int, int]]] = {}
    for tid, spans in sorted(runs.items()):
        label, parent = tid, -1  # -1: the track's own parent, resolved below
        for k, (first, last) in enumerate(spans):
            if k:
                parent, label, next_id = label, next_id, next_id + 1
                relabel.setdefault(tid, []).append((label, first, last))
            raw.append((label, first, last, parent, tid))
        last_label[tid] = label
    parents = {t.id: t.parent for t in tracks}
    rows = [Track(lab, a, b, last_label.get(parents.get(tid, 0), 0) if p < 0 else p)
            for lab, a, b, p, tid in raw]  # fmt: skip
    return rows, relabel


def add_run(runs: Runs, t: int, ids: Sequence[int]) -> None:
    """Record that tracks ``ids`` are present in frame ``t`` (frames come in order)."""
    for tid in ids:
        spans = runs.setdefault(int(tid), [])
        if spans and spans[-1][1] == t - 1:
            spans[-1][1] = t
        else:
            spans.append([t, t])


def ctc_segments(labels: list[np.ndarray], tracks: list[Track]) -> list[Track]:
    """The CTC track table of label images (relabelled in place after gaps; see
    :func:`segment_runs`): every label then spans its frames, as the challenge wants."""
    runs: Runs = {}
    for t, label in enumerate(labels):
        add_run(runs, t, [v for v in np.unique(label).tolist() if v])
    rows, relabel = segment_runs(runs, tracks)
    for tid, spans in relabel.items():
        for new, first, last in spans:
            for t in range(first, last + 1):
                labels[t][labels[t] == tid] = new
    return rows


# -- driver -----------------------------------------------------------------------------------
def _prepare(out: Path, overwrite: bool) -> None:
    """An earlier result in ``out`` (its files would mix with the new ones) is a DataError
    unless ``overwrite``, which deletes every output of an earlier run first."""
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "output path exists and is not a folder")
    paths = [out / name for names in OUTPUT_FILES.values() for name in names]
    old = [f for p in paths if p.is_dir() for f in p.iterdir() if f.is_file()]
    old += [p for p in paths if p.is_file()]
    if old and not overwrite:
        raise DataError(old[0].parent, None, "holds an earlier result; pass --overwrite to replace it")
    for f in old:
        f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def track_sequence(frames: Iterable[Frame | tuple[str, Instances | str]], out: str | Path,
                   tracker: Tracker | None = None, progress: bool = False, total: int | None = None,
                   overwrite: bool = False, outputs: Sequence[str] = DEFAULT_OUTPUTS,
                   cat_ids: Sequence[int] = (1,), class_names: Sequence[str] = ("object",),
                   fps: float | None = None) -> TrackReport:  # fmt: skip
    """Track ``frames`` (:func:`predicted_frames`, :func:`label_frames`, or ``(name,
    instances or error)`` pairs) and write ``outputs`` (see
    :mod:`instseg.tracking.writers`) under ``out``. ``cat_ids[label]`` / ``class_names``:
    the categories of the instances' labels; ``fps``: a video SOURCE's rate (the overlay is
    then also an MP4); ``total``: the frame count, for the progress bar. Earlier results in
    ``out`` are a DataError unless ``overwrite``."""
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUTS}")
    outputs = [o for o in OUTPUTS if o in outputs]
    tracker = tracker if tracker is not None else Tracker()
    report = TrackReport(Path(out))
    _prepare(report.out, overwrite)
    writers = open_writers(report.out, outputs, cat_ids, class_names, fps, total)
    runs: Runs = {}
    size: tuple[int, int] | None = None
    pending: list[Frame] = []  # bad frames before the first good one: written once sized
    count = 0
    try:
        for item in tqdm(frames, total=total, desc="track", unit="frame", disable=not progress):
            f = Frame(*item)
            if not isinstance(f.got, str) and size is not None and f.got.image_size != size:
                f = f._replace(got=f"size {f.got.image_size} differs from the sequence's {size}")
            if isinstance(f.got, str):
                report.failed.append((f.name, f.got))
                if size is None:
                    pending.append(f)
                    count += 1
                    continue
                f = f._replace(got=Instances.from_masks(np.zeros((0, *size), bool)), image=None)
            if size is None:
                assert isinstance(f.got, Instances)
                size = f.got.image_size
                empty = Instances.from_masks(np.zeros((0, *size), bool))
                for t, bad in enumerate(pending):
                    _step(tracker, writers, runs, t, bad._replace(got=empty))
            _step(tracker, writers, runs, count, f)
            count += 1
    finally:
        if size is None:
            count = 0  # nothing could be sized: nothing written
        tracks = tracker.tracks()
        segments, relabel = segment_runs(runs, tracks)
        result = SequenceResult(count, tracks, segments, relabel)
        for w in writers:
            report.notes += w.close(result)
    report.frames, report.tracks = count, len(tracks)
    report.divisions = len({t.parent for t in tracks if t.parent})  # the tracker's, not gaps
    report.written = [f"{n}/" if (report.out / n).is_dir() else n
                      for o in outputs for n in OUTPUT_FILES[o] if (report.out / n).exists()]  # fmt: skip
    return report


def _step(tracker: Tracker, writers: list[Any], runs: Runs, t: int, f: Frame) -> None:
    """Track frame ``t`` and hand it to the writers."""
    assert isinstance(f.got, Instances)
    tracked = tracked_frame(t, f.name, tracker.update(f.got), f.image, f.file_name, f.frame)
    add_run(runs, t, tracked.ids.tolist())
    for w in writers:
        w.write(tracked)
