"""The journal behind resumable batch runs: a manifest of inputs, per-image records, the merge.

Both engines (:func:`~instseg.inference.batch.run_batch` and
:func:`~instseg.inference.ray_batch.predict_ray`) write an image's files first (atomically:
temp file + rename), then append its *record* as one JSON line to a shard in
``OUT/.shards/`` (``*.jsonl``, one file per run). A record holds everything the merged files
need: the ``images.json`` entry, the COCO result dicts (RLE), the ``instances.csv`` rows and
the error of a failed image. :func:`merge_outputs` turns the records into ``results.json``,
``images.json``, ``instances.csv`` and ``failed.txt`` (image id order). A rerun reads the
shards (:func:`read_records`; a torn last line is ignored) and skips the images done.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instseg.data.coco import read_json
from instseg.errors import DataError
from instseg.inference.sources import Item, Source, input_stem, list_inputs, unique_name
from instseg.inference.tiling import TiledPrediction
from instseg.inference.writers import (
    CSV_COLUMNS,
    CSV_NAME,
    FAILED,
    IMAGES,
    LABELS_DIR,
    OVERLAYS_DIR,
    RESULTS,
    SEMANTIC_DIR,
    above_cutoff,
    csv_rows,
    prediction_results,
    semantic_image,
    write_json_atomic,
    write_label_image,
    write_overlay,
)

__all__ = [
    "SHARDS_DIR",
    "Entry",
    "Journal",
    "build_manifest",
    "failed_record",
    "image_record",
    "merge_outputs",
    "read_records",
]

SHARDS_DIR = ".shards"
URI_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "file://", "http://", "https://", "abfs://")


@dataclass(frozen=True)
class Entry:
    """One manifest line: image ``id``, ``path`` (file or URI) and ``name`` (output stem)."""

    id: int
    path: str
    name: str


def is_uri(path: str) -> bool:
    return path.lower().startswith(URI_SCHEMES)


def build_manifest(source: Source, recursive: bool = False) -> list[Entry]:
    """List SOURCE once: a COCO ``.json`` (its images: ids, files resolved against the JSON's
    folder), a ``.txt`` file (one path or URI a line, ``#`` comments; relative paths against
    its folder; ids 1..N; names: file stems), or files / folders / globs as
    :func:`~instseg.inference.sources.iter_sources` names them (ids 1..N in its order)."""
    one = source if isinstance(source, (str, Path)) else None
    if one is not None and Path(one).suffix.lower() == ".json" and Path(one).is_file():
        return _coco_manifest(Path(one))
    if one is not None and Path(one).suffix.lower() == ".txt" and Path(one).is_file():
        lines = [s.strip() for s in Path(one).read_text().splitlines()]
        paths = [_resolve(s, Path(one).parent) for s in lines if s and not s.startswith("#")]
        if not paths:
            raise DataError(one, None, "list of inputs is empty")
        names = _unique_names([(p, _stem(p)) for p in paths])
        return [Entry(i, p, n) for i, (p, n) in enumerate(zip(paths, names), 1)]
    pairs = list_inputs(source, recursive)
    names = _unique_names([(str(f), input_stem(f, root)) for f, root in pairs])
    return [Entry(i, str(f), n) for i, ((f, _), n) in enumerate(zip(pairs, names), 1)]


def _resolve(path: str, folder: Path) -> str:
    """A URI or an absolute path as it is; a relative path against ``folder``."""
    return path if is_uri(path) or Path(path).is_absolute() else str(folder / path)


def _stem(path: str) -> str:
    return Path(path.split("?")[0].rstrip("/")).with_suffix("").name or "image"


def _unique_names(stems: Sequence[tuple[str, str]]) -> list[str]:
    """Output names of ``(path, stem)`` pairs, made unique as
    :func:`~instseg.inference.sources.iter_sources` makes them."""
    used: set[str] = set()
    return [unique_name(stem, Path(path.split("?")[0]).suffix, used) for path, stem in stems]


def _coco_manifest(path: Path) -> list[Entry]:
    data = read_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DataError(path, "images", "a COCO file with a non-empty 'images' list is needed")
    stems = []
    for k, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(path, f"images[{k}]", "image entry needs 'id' and 'file_name'")
        f = str(im["file_name"])
        inside = not (is_uri(f) or Path(f).is_absolute() or ".." in Path(f).parts)
        stem = Path(f).with_suffix("").as_posix() if inside else _stem(f)  # never outside OUT
        stems.append((int(im["id"]), _resolve(f, path.parent), stem))
    ids = [i for i, _, _ in stems]
    if len(set(ids)) < len(ids):
        raise DataError(path, "images", "image ids repeat (each image needs its own id)")
    names = _unique_names([(full, stem) for _, full, stem in stems])
    return [Entry(i, full, n) for (i, full, _), n in zip(stems, names)]


def _replace_written(write: Callable[[Path], object], final: Path) -> None:
    """Call ``write(temp)`` on a hidden temp path beside ``final`` (same suffix), then rename
    the temp file over ``final``: readers see the old file or the new one, never a part."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    write(tmp)
    os.replace(tmp, final)


def _write_label_atomic(stem: Path, labels: np.ndarray) -> None:
    tmp_stem = stem.with_name(f".{stem.name}.{os.getpid()}.tmp")
    written = write_label_image(tmp_stem, labels)
    os.replace(written, stem.with_name(stem.name + written.suffix))


def image_record(
    out: Path, kinds: dict[str, bool], image_id: int, item: Item, pred: TiledPrediction,
    class_names: Sequence[str], cat_ids: Sequence[int], cutoff: float | None,
    file: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write one image's label image / semantic map / overlay (those ``kinds`` turns on, each
    whole or not at all) and return its record (see the module doc); ``file`` (e.g. a URI)
    replaces the item's path in ``images.json`` and the record."""
    assert item.image is not None
    name = item.name
    results = prediction_results(pred, image_id, cat_ids)  # every score: for AP
    pred = above_cutoff(pred, cutoff)  # what people look at
    if kinds.get(LABELS_DIR):
        _write_label_atomic(out / LABELS_DIR / name, pred.to_label_image())
    if kinds.get(SEMANTIC_DIR):
        _write_label_atomic(out / SEMANTIC_DIR / name, semantic_image(pred))
    if kinds.get(OVERLAYS_DIR):
        image = item.image
        _replace_written(
            lambda p: write_overlay(p, image, pred, class_names), out / OVERLAYS_DIR / f"{name}.jpg"
        )
    h, w = item.image.shape[:2]
    rec: dict[str, Any] = {"id": image_id, "file_name": file or str(item.path or name), "name": name, "height": h, "width": w}  # fmt: skip
    if item.frame is not None:
        rec["frame"] = item.frame
    rows = csv_rows(name, pred, class_names) if kinds.get(CSV_NAME) else []
    return {"id": image_id, "file": file or item.file_name, "name": name, "image": rec,
            "results": results, "csv": rows, "n": len(pred), "error": None}  # fmt: skip


def failed_record(image_id: int, file: str, name: str, error: str) -> dict[str, Any]:
    """The record of an image that could not be read or predicted."""
    return {"id": image_id, "file": file, "name": name, "image": None, "results": [], "csv": [],
            "n": 0, "error": error}  # fmt: skip


class Journal:
    """Appends records to a new shard ``OUT/.shards/<prefix>-<time>-<pid>.jsonl``."""

    def __init__(self, out: Path, prefix: str = "part") -> None:
        folder = out / SHARDS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{prefix}-{time.time_ns()}-{os.getpid()}.jsonl"
        self._file: io.TextIOWrapper | None = None

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` (one line each), flushed and synced to disk."""
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        if self._file is None:
            self._file = open(self.path, "a")
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _shard_time(path: Path) -> tuple[int, str]:
    """Sort key: the creation time in a shard's name (``PREFIX-TIME-PID``), then the name."""
    parts = path.stem.split("-")
    return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0, path.name)


def read_records(out: Path) -> dict[int, dict[str, Any]]:
    """Image id -> record from every shard in ``OUT/.shards`` (a successful record wins over
    a failed one, else the later one); lines that do not parse (a torn write) are skipped."""
    found: dict[int, dict[str, Any]] = {}
    folder = out / SHARDS_DIR
    for shard in sorted(folder.glob("*.jsonl"), key=_shard_time) if folder.is_dir() else []:
        for line in shard.read_text().splitlines():
            try:
                rec = json.loads(line)
                image_id = int(rec["id"])
            except (ValueError, KeyError, TypeError):
                continue
            old = found.get(image_id)
            if old is None or old["error"] is not None or rec["error"] is None:
                found[image_id] = rec
    return found


def check_same_input(rec: dict[str, Any], file: str, out: Path) -> None:
    """DataError when an earlier run's record for this image id names another file."""
    if rec["file"] != file:
        raise DataError(
            out / SHARDS_DIR, None,
            f"image {rec['id']} was {rec['file']!r} in the earlier run, now {file!r}: "
            "resume needs the same inputs (or pass overwrite=True / --overwrite)",
        )  # fmt: skip


def _write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in records:
            w.writerows(r["csv"])


def merge_outputs(
    out: Path, records: Sequence[dict[str, Any]], categories: list[dict[str, Any]], write_csv: bool
) -> None:
    """Write ``images.json``, ``results.json``, ``instances.csv`` (when ``write_csv``) and
    ``failed.txt`` (only when some failed) from ``records`` in the given order, atomically."""
    images = [r["image"] for r in records if r["error"] is None]
    results = [row for r in records if r["error"] is None for row in r["results"]]
    write_json_atomic(out / IMAGES, {"images": images, "categories": categories})
    write_json_atomic(out / RESULTS, results)
    if write_csv:
        _replace_written(lambda p: _write_csv(p, records), out / CSV_NAME)
    failed = [f"{r['file']}: {r['error']}\n" for r in records if r["error"] is not None]
    if failed:
        _replace_written(lambda p: p.write_text("".join(failed)), out / FAILED)
    else:
        (out / FAILED).unlink(missing_ok=True)
