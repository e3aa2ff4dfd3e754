"""The outputs of a tracked sequence (``instseg track --outputs``), fed one
:class:`TrackedFrame` at a time by :func:`instseg.tracking.sequence.track_sequence` and
finished with the sequence's track table (:class:`SequenceResult`). Files stream: memory does
not grow with the sequence's length (but for the COCO results, kept for one atomic write).

All outputs show the same disjoint masks: a frame's tracked instances painted into one label
image, a higher score on top. Frame ``t`` counts from 0 (CTC, COCO, overlays); MOTS from 1.

``ctc``: ``ctc/mask000.tif`` ... (label images, value = CTC label, uint16 or uint32 past
  65,535; ``mask0000`` from 1,000 frames) and ``ctc/res_track.txt`` (``label first last
  parent``). The challenge forbids gaps: a track that a miss or an occlusion interrupts goes
  on after the gap under a new label whose parent is the label before it (see
  :func:`~instseg.tracking.sequence.segment_runs`); a daughter's parent is its mother's last
  label.
``mots``: ``mots.txt``, MOTS Challenge text: ``frame id class_id height width rle`` per object
  and frame, frames from 1 (KITTI-MOTS counts from 0), ``class_id`` the category id, ``id =
  class_id * 1000 + track id`` (the tracker's identity, kept through gaps; past 999 tracks the
  factor is the next power of ten), ``rle`` a COCO compressed RLE string. TrackEval's
  ``MOTSChallenge`` reads it as ``TRACKERS_FOLDER/NAME/data/SEQ.txt`` (it scores class 2 only).
``coco``: ``coco/results.json``, COCO results ``[{image_id (= t), category_id, segmentation
  (RLE, counts str), bbox [x, y, w, h] (the mask's tight box), score, track_id (= the CTC
  label)}]``, and ``coco/images.json`` ``{"images": [{id, file_name, name, height, width[,
  frame]}], "categories": [{id, name}]}``, as ``instseg predict`` writes them, so
  ``COCO("images.json").loadRes("results.json")`` works.
``csv``: ``tracks.csv``, one row per tracker track: ``track_id, first_frame, last_frame,
  parent, frames_seen, mean_area, path_length`` (visible area; centroid path in pixels).
``overlay``: ``overlay.gif``, the first :data:`GIF_MAX_FRAMES` frames shrunk to at most
  :data:`GIF_MAX_SIDE` px a side (one fixed 256-colour palette, so frames stream), each track
  in its colour (:func:`instseg.viz.colors_for` of its tracker id) with its ``#id`` tag
  (:func:`instseg.viz.overlay`) and a thin line through its last :data:`TRAIL` centroids; a
  frame without an image (label images alone, a bad frame) is drawn on black. With ``fps``
  (a video SOURCE) also ``overlay.mp4``: every frame at full size (OpenCV's ``mp4v`` codec,
  which players read; browsers want H.264).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from PIL import GifImagePlugin, Image, ImageDraw

from instseg.data.coco import coco_results
from instseg.data.ctc import Track, label_instances
from instseg.inference.tiling import crop_to_rle
from instseg.inference.writers import write_json_atomic
from instseg.masks import paint_label_image
from instseg.structures import Instances
from instseg.viz import colors_for, overlay

__all__ = [
    "DEFAULT_OUTPUTS", "GIF_MAX_FRAMES", "GIF_MAX_SIDE", "OUTPUTS", "OUTPUT_FILES", "SequenceResult",
    "TRAIL", "TrackedFrame", "open_writers", "parse_outputs", "tracked_frame",
]  # fmt: skip

OUTPUTS = ("ctc", "mots", "coco", "csv", "overlay")
DEFAULT_OUTPUTS = OUTPUTS
#: what each output writes under ``out`` (for ``--overwrite`` and the summary)
OUTPUT_FILES = {"ctc": ("ctc",), "mots": ("mots.txt",), "coco": ("coco",),
                "csv": ("tracks.csv",), "overlay": ("overlay.gif", "overlay.mp4")}  # fmt: skip
GIF_MAX_SIDE = 512  #: longer side of the GIF's frames, px
GIF_MAX_FRAMES = 1000  #: frames the GIF holds (the MP4 of a video has them all)
TRAIL = 8  #: centroids in a track's trail line


def parse_outputs(text: str) -> tuple[str, ...]:
    """``"ctc,coco"`` (or ``"all"``) -> the outputs in :data:`OUTPUTS` order; ValueError
    naming an unknown one."""
    names = {s.strip().lower() for s in text.split(",") if s.strip()}
    if "all" in names:
        return OUTPUTS
    bad = sorted(names - set(OUTPUTS))
    if bad or not names:
        raise ValueError(f"unknown outputs {bad}; choose from {','.join(OUTPUTS)} or all")
    return tuple(o for o in OUTPUTS if o in names)


@dataclass
class TrackedFrame:
    """Frame ``index`` after tracking: ``label`` ``(H, W)`` (value = track id, 0 background)
    and per present track (ascending ``ids``): compressed ``rles``, tight ``boxes`` xyxy,
    visible ``areas``, ``centroids`` ``(y, x)`` in pixel indices, ``scores``, model ``classes``.
    ``image`` RGB uint8 (for overlays) and ``file_name``/``frame`` (its source) when known."""

    index: int
    name: str
    label: np.ndarray
    ids: np.ndarray
    rles: list[dict[str, Any]]
    boxes: np.ndarray
    areas: np.ndarray
    centroids: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    image: np.ndarray | None = None
    file_name: str | None = None
    frame: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.label.shape[0]), int(self.label.shape[1])


def tracked_frame(index: int, name: str, inst: Instances, image: np.ndarray | None = None,
                  file_name: str | None = None, frame: int | None = None) -> TrackedFrame:  # fmt: skip
    """The :class:`TrackedFrame` of tracked instances (``track_ids`` set): painted once (a
    higher score on top), each track then cut from its own box (no per-track full masks)."""
    from scipy import ndimage

    assert inst.masks is not None and inst.track_ids is not None
    h, w = inst.image_size
    n = len(inst)
    scores = np.ones(n, np.float32) if inst.scores is None else inst.scores.cpu().numpy()
    compact = paint_label_image((h, w), inst.masks.cpu().numpy(), scores=scores,
                                dtype=np.uint16 if n < 65535 else np.uint32)  # fmt: skip
    tids = inst.track_ids.cpu().numpy().astype(np.int64)
    boxes = ndimage.find_objects(compact, max_label=n)
    keep = sorted((i for i, sl in enumerate(boxes) if sl is not None), key=lambda i: int(tids[i]))
    rles, rows = [], []
    for i in keep:
        ys, xs = boxes[i]
        crop = compact[ys, xs] == i + 1
        py, px = np.nonzero(crop)
        rles.append(crop_to_rle(crop, ys.start, xs.start, h, w))
        rows.append([xs.start, ys.start, xs.stop, ys.stop, len(py), py.mean() + ys.start, px.mean() + xs.start])
    table = np.asarray(rows, np.float64).reshape(-1, 7)
    lut = np.zeros(n + 1, np.uint16 if tids.max(initial=0) <= 65535 else np.uint32)
    lut[1:] = tids
    return TrackedFrame(index, name, lut[compact], tids[keep], rles, table[:, :4], table[:, 4],
                        table[:, 5:], scores[keep], inst.labels.cpu().numpy()[keep], image,
                        file_name, frame)  # fmt: skip


@dataclass
class SequenceResult:
    """What the writers get at the end: frame count, the tracker's table, the CTC rows and
    relabelled runs (:func:`~instseg.tracking.sequence.segment_runs`)."""

    frames: int
    tracks: list[Track]
    segments: list[Track]
    relabel: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)

    def ctc_label(self, tid: int, t: int) -> int:
        """The CTC label of track ``tid`` in frame ``t``."""
        for label, first, last in self.relabel.get(tid, ()):
            if first <= t <= last:
                return label
        return tid


class Writer(Protocol):
    def write(self, frame: TrackedFrame) -> None: ...
    def close(self, result: SequenceResult) -> list[str]: ...  # notes for the report


def open_writers(out: Path, outputs: Sequence[str], cat_ids: Sequence[int], class_names: Sequence[str],
                 fps: float | None = None, total: int | None = None) -> list[Writer]:  # fmt: skip
    """The writers of ``outputs`` under ``out`` (a folder that exists). ``cat_ids[label]``:
    a model label's category id; ``fps``: a video SOURCE's rate (adds ``overlay.mp4``);
    ``total``: the frame count when known (the CTC names' width)."""
    make: dict[str, Callable[[], Writer]] = {"ctc": lambda: _CTC(out / "ctc", total), "mots": lambda: _MOTS(out / "mots.txt", cat_ids),
            "coco": lambda: _COCO(out / "coco", cat_ids, class_names), "csv": lambda: _CSV(out / "tracks.csv"),
            "overlay": lambda: _Overlay(out, fps)}  # fmt: skip
    return [make[o]() for o in outputs]


class _CTC:
    def __init__(self, folder: Path, total: int | None) -> None:
        self.folder, self.width = folder, 4 if (total or 0) >= 1000 else 3
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, t: int, width: int | None = None) -> Path:
        return self.folder / f"mask{t:0{width or self.width}d}.tif"

    def write(self, frame: TrackedFrame) -> None:
        import tifffile

        tifffile.imwrite(self._path(frame.index), frame.label)

    def close(self, result: SequenceResult) -> list[str]:
        import tifffile

        if result.frames >= 1000 and self.width == 3:  # the length was not known up front
            for t in range(result.frames):
                if self._path(t).exists():
                    self._path(t).rename(self._path(t, 4))
            self.width = 4
        by_frame: dict[int, list[tuple[int, int]]] = {}
        for tid, spans in result.relabel.items():
            for new, first, last in spans:
                for t in range(first, last + 1):
                    by_frame.setdefault(t, []).append((tid, new))
        for t, pairs in sorted(by_frame.items()):
            label = tifffile.imread(self._path(t)).astype(np.uint32)
            for tid, new in pairs:
                label[label == tid] = new
            tifffile.imwrite(self._path(t), label.astype(np.uint16) if label.max() <= 65535 else label)
        rows = "".join(f"{r.id} {r.first} {r.last} {r.parent}\n" for r in result.segments)
        (self.folder / "res_track.txt").write_text(rows)
        return []


class _MOTS:
    """Lines go to a part file with raw track ids; :meth:`close` writes ``mots.txt`` once the
    largest id (hence the id factor) is known."""

    def __init__(self, path: Path, cat_ids: Sequence[int]) -> None:
        self.path, self.cat_ids, self.top = path, list(cat_ids), 0
        self.part = path.with_name(f".{path.name}.part")
        self.file: IO[str] = self.part.open("w")

    def write(self, frame: TrackedFrame) -> None:
        h, w = frame.size
        for tid, cls, rle in zip(frame.ids.tolist(), frame.classes.tolist(), frame.rles):
            self.file.write(f"{frame.index + 1} {tid} {_category(self.cat_ids, cls)} {h} {w} {rle['counts']}\n")
            self.top = max(self.top, tid)

    def close(self, result: SequenceResult) -> list[str]:
        self.file.close()
        factor = 1000 if self.top < 1000 else 10 ** len(str(self.top))
        with self.part.open() as src, self.path.open("w") as dst:
            for line in src:
                t, tid, cls, rest = line.split(" ", 3)
                dst.write(f"{t} {int(cls) * factor + int(tid)} {cls} {rest}")
        self.part.unlink()
        return [] if factor == 1000 else [f"mots.txt: ids are class_id * {factor} + track id ({self.top} tracks)"]


def _category(cat_ids: Sequence[int], label: int) -> int:
    if not 0 <= label < len(cat_ids):
        raise ValueError(f"label {label} has no category id (cat_ids {list(cat_ids)})")
    return int(cat_ids[label])


class _COCO:
    def __init__(self, folder: Path, cat_ids: Sequence[int], class_names: Sequence[str]) -> None:
        self.folder, self.cat_ids = folder, list(cat_ids)
        self.cats = [{"id": int(c), "name": str(n)} for c, n in zip(cat_ids, class_names)]
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame: TrackedFrame) -> None:
        h, w = frame.size
        rec: dict[str, Any] = {"id": frame.index, "file_name": frame.file_name or frame.name,
                               "name": frame.name, "height": h, "width": w}  # fmt: skip
        if frame.frame is not None:
            rec["frame"] = frame.frame
        self.images.append(rec)
        rows = coco_results(frame.index, frame.boxes.tolist(), frame.classes.tolist(), frame.scores.tolist(),
                            self.cat_ids, frame.rles)  # fmt: skip
        for row, tid in zip(rows, frame.ids.tolist()):
            row["track_id"] = tid  # the CTC label is set at close (it changes after gaps)
        self.results.extend(rows)

    def close(self, result: SequenceResult) -> list[str]:
        for row in self.results:
            row["track_id"] = result.ctc_label(row["track_id"], row["image_id"])
        write_json_atomic(self.folder / "images.json", {"images": self.images, "categories": self.cats})
        write_json_atomic(self.folder / "results.json", self.results)
        return []


class _CSV:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.stats: dict[int, list[Any]] = {}  # id -> [frames seen, area sum, path length, last centroid]

    def write(self, frame: TrackedFrame) -> None:
        for tid, area, c in zip(frame.ids.tolist(), frame.areas.tolist(), frame.centroids):
            s = self.stats.setdefault(tid, [0, 0.0, 0.0, None])
            s[0], s[1] = s[0] + 1, s[1] + area
            if s[3] is not None:
                s[2] += float(np.hypot(*(c - s[3])))
            s[3] = c

    def close(self, result: SequenceResult) -> list[str]:
        with self.path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["track_id", "first_frame", "last_frame", "parent", "frames_seen", "mean_area", "path_length"])
            for t in result.tracks:
                seen, area, length, _ = self.stats.get(t.id, [0, 0.0, 0.0, None])
                w.writerow([t.id, t.first, t.last, t.parent, seen, f"{area / max(seen, 1):.1f}", f"{length:.1f}"])
        return []


class _Overlay:
    """``overlay.gif`` (streamed, one fixed palette) and, with ``fps``, ``overlay.mp4``."""

    def __init__(self, out: Path, fps: float | None) -> None:
        self.gif_path, self.mp4_path, self.fps = out / "overlay.gif", out / "overlay.mp4", fps
        self.gif: IO[bytes] | None = None
        self.mp4: Any = None
        self.count = 0
        self.trails: dict[int, list[tuple[int, float, float]]] = {}  # id -> [(t, y, x)]
        self.palette = Image.new("P", (1, 1))
        self.palette.putpalette(_gif_palette().reshape(-1).tolist())

    def write(self, frame: TrackedFrame) -> None:
        for tid, (y, x) in zip(frame.ids.tolist(), frame.centroids.tolist()):
            self.trails.setdefault(tid, []).append((frame.index, y, x))
        for tid in list(self.trails):
            self.trails[tid] = [p for p in self.trails[tid] if p[0] > frame.index - TRAIL]
            if not self.trails[tid]:
                del self.trails[tid]
        scale = min(1.0, GIF_MAX_SIDE / max(frame.size))
        gif = self.count < GIF_MAX_FRAMES
        self.count += 1
        if self.fps:  # full size for the MP4, shrunk for the GIF
            full = self._draw(frame, 1.0)
            self._mp4(full)
            if gif:
                self._gif(np.asarray(Image.fromarray(full).resize(_scaled(frame.size, scale), Image.Resampling.BOX)))
        elif gif:  # drawn small: much faster on large frames
            self._gif(self._draw(frame, scale))

    def _draw(self, frame: TrackedFrame, scale: float) -> np.ndarray:
        """The frame (black when unknown) at ``scale``, tracks drawn over it."""
        w, h = _scaled(frame.size, scale)
        image = frame.image
        if image is None or image.shape[:2] != frame.size:  # none, or not this frame's
            image = np.zeros((*frame.size, 3), np.uint8)
        label = frame.label
        if scale < 1:
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))
            rows = np.minimum((np.arange(h) + 0.5) * frame.size[0] / h, frame.size[0] - 1).astype(int)
            cols = np.minimum((np.arange(w) + 0.5) * frame.size[1] / w, frame.size[1] - 1).astype(int)
            label = label[rows][:, cols]
        drawn = overlay(image, label_instances(label), show_boxes=False, show_scores=False, show_labels=False)
        pil = Image.fromarray(drawn)
        draw = ImageDraw.Draw(pil)
        for tid, points in self.trails.items():
            if len(points) > 1:
                xy = [((x + 0.5) * w / frame.size[1], (y + 0.5) * h / frame.size[0]) for _, y, x in points]
                draw.line(xy, fill=tuple(int(c) for c in colors_for([tid])[0]), width=max(1, round(min(h, w) / 300)))
        return np.asarray(pil)

    def _gif(self, rgb: np.ndarray) -> None:
        image = Image.fromarray(rgb).quantize(palette=self.palette, dither=Image.Dither.NONE)
        ms = int(round(1000 / self.fps)) if self.fps else 100
        if self.gif is None:
            self.gif = self.gif_path.open("wb")
            header, _ = GifImagePlugin.getheader(image, None, {"loop": 0, "duration": ms})
            self.gif.write(b"".join(header))
        self.gif.write(b"".join(GifImagePlugin.getdata(image, duration=ms)))

    def _mp4(self, rgb: np.ndarray) -> None:
        import cv2

        if self.mp4 is None:
            self.mp4 = cv2.VideoWriter(str(self.mp4_path), cv2.VideoWriter.fourcc(*"mp4v"), float(self.fps or 10),
                                       (rgb.shape[1], rgb.shape[0]))  # fmt: skip
        self.mp4.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self, result: SequenceResult) -> list[str]:
        notes = []
        if self.gif is not None:
            self.gif.write(b";")
            self.gif.close()
        if self.mp4 is not None:
            ok = self.mp4.isOpened()
            self.mp4.release()
            if not ok:
                notes.append("overlay.mp4 not written: this OpenCV build cannot encode mp4v")
        if self.count > GIF_MAX_FRAMES:
            rest = "; overlay.mp4 has them all" if self.fps else ""
            notes.append(f"overlay.gif holds the first {GIF_MAX_FRAMES} of {self.count} frames{rest}")
        return notes


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(width, height)`` of a ``(H, W)`` frame at ``scale`` (at least 1 px)."""
    return max(1, round(size[1] * scale)), max(1, round(size[0] * scale))


def _gif_palette() -> np.ndarray:
    """The GIF's fixed palette ``(256, 3)``: a 6x6x6 colour cube and 40 more greys (for
    microscopy), so frames stream without a palette per frame."""
    levels = np.arange(6) * 51
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    greys = np.repeat(np.linspace(0, 255, 42)[1:-1].round()[:, None], 3, axis=1)
    return np.concatenate([cube, greys]).astype(np.uint8)
