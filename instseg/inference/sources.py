"""Inference inputs: a file, a folder, a glob or a video -> a stream of :class:`Item`.

Bad inputs never raise mid-stream: a non-image file, a zero-byte file, a corrupt image or an
unreadable video becomes an ``Item`` with ``error`` set (one line) and no image, so a batch
run processes everything else and reports the failures at the end. Only a SOURCE that names
nothing at all (missing path, glob without matches, empty folder) raises :class:`DataError`.

Item names are output stems: a file's path relative to the folder (or glob root) without
its suffix (``sub/img``), ``<video-stem>_<frame:06d>`` for video frames; a name already
used gets the suffix appended (``img_jpg``) so outputs never collide.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instseg.data.io import is_image_file, read_image, to_rgb_uint8
from instseg.errors import DataError

__all__ = [
    "VIDEO_SUFFIXES",
    "Item",
    "Source",
    "count_items",
    "is_video_file",
    "iter_sources",
    "list_inputs",
]

Source = str | Path | Sequence[str | Path]
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


@dataclass
class Item:
    """One inference input: ``image`` RGB uint8 ``(H, W, 3)``, or ``error`` (a one-line reason)."""

    name: str
    path: Path | None
    image: np.ndarray | None = None
    error: str | None = None
    frame: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None

    @property
    def file_name(self) -> str:
        """Source file (with ``#frame=N`` for video frames), for ``images.json`` and reports."""
        base = str(self.path) if self.path is not None else self.name
        return base if self.frame is None else f"{base}#frame={self.frame}"


def is_video_file(path: Path) -> bool:
    """True if the suffix is a video container we read with OpenCV."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def _is_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def list_inputs(source: Source, recursive: bool = False) -> list[tuple[Path, Path]]:
    """``(file, root)`` for each file SOURCE names; item names are paths relative to ``root``.

    A folder lists its files, sorted (``recursive``: subfolders too; hidden files are
    skipped); a glob (``*``, ``?``, ``[``; ``**`` recurses) its matching files, sorted; a file
    is itself; a list of any of these (e.g. shell-expanded arguments) each in turn.
    """
    if isinstance(source, (str, Path)):
        files, root = _one_source(source, recursive)
        return [(f, root) for f in files]
    if not source:
        raise DataError(None, None, "no inputs given")
    return [pair for s in source for pair in list_inputs(s, recursive)]


def _one_source(source: str | Path, recursive: bool) -> tuple[list[Path], Path]:
    p = Path(source)
    if p.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(
            f for f in p.glob(pattern)
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )  # fmt: skip
        if not files:
            raise DataError(
                p,
                None,
                "folder has no files" + ("" if recursive else " (use recursive for subfolders)"),
            )
        return files, p
    if p.is_file():
        return [p], p.parent
    if isinstance(source, str) and _is_glob(source):
        files = sorted(Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(source, None, "glob pattern matched no files")
        fixed: list[str] = []
        for part in Path(source).parts:
            if _is_glob(part):
                break
            fixed.append(part)
        return files, Path(*fixed) if fixed else Path(".")
    raise DataError(p, None, "no such file or folder")


def _frames(path: Path, name: str, stride: int) -> Iterator[Item]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            yield Item(name, path, error="cannot open video (not a video or unsupported codec)")
            return
        index = 0
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % stride == 0:
                rgb = np.ascontiguousarray(frame[..., ::-1]) if frame.ndim == 3 else frame
                yield Item(f"{name}_{index:06d}", path, image=to_rgb_uint8(rgb), frame=index)
                count += 1
            index += 1
        if count == 0:
            yield Item(name, path, error="video has no readable frames")
    finally:
        cap.release()


def input_stem(path: Path, root: Path) -> str:
    """The output name of an input file before it is made unique: its path below ``root``
    (the folder or glob base it was found under) without the suffix, ``/``-separated."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """``stem``, or when ``used`` has it ``stem_<suffix>`` (``img_jpg``), then a counter;
    the name is added to ``used``."""
    name = base = stem
    if name in used:
        name = base = f"{base}_{suffix.lstrip('.').lower()}"
    k = 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def iter_sources(source: Source, recursive: bool = False, video_stride: int = 1) -> Iterator[Item]:
    """Yield an :class:`Item` per image file / video frame of SOURCE (see the module docstring).

    Images are decoded lazily, one at a time. ``video_stride`` keeps every n-th frame.
    """
    if video_stride < 1:
        raise ValueError(f"video_stride must be >= 1, got {video_stride}")
    used: set[str] = set()
    for f, root in list_inputs(source, recursive):
        name = unique_name(input_stem(f, root), f.suffix, used)
        if is_video_file(f):
            if f.stat().st_size == 0:
                yield Item(name, f, error="video file is empty (0 bytes)")
            else:
                yield from _frames(f, name, video_stride)
        elif not is_image_file(f):
            yield Item(name, f, error=f"not an image or video file (suffix {f.suffix or 'none'!r})")
        else:
            try:
                yield Item(name, f, image=read_image(f))
            except DataError as err:
                yield Item(name, f, error=err.message)


def count_items(source: Source, recursive: bool = False, video_stride: int = 1) -> int | None:
    """How many items :func:`iter_sources` will yield (video frame counts from the container
    header, so approximate), or None when unknown."""
    import cv2

    total = 0
    for f, _ in list_inputs(source, recursive):
        if is_video_file(f) and f.stat().st_size > 0:
            cap = cv2.VideoCapture(str(f))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 1
            cap.release()
            if n <= 0:
                return None
            total += (n + video_stride - 1) // video_stride
        else:
            total += 1
    return total
