""":func:`run_batch`: predict a whole SOURCE (files, folders, globs, videos) into a folder.

The folder's layout and file formats are those of :mod:`instseg.inference.writers`.
``results.json`` (COCO results, for AP) keeps every detection the model returns; label
images, overlays, semantic maps and ``instances.csv`` keep those scoring >= the predictor's
``score_cutoff`` (the model's calibrated cut-off, or ``--score-threshold``, which also drops
detections from ``results.json``). An ``auto`` object size is estimated on the first image.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tqdm import tqdm

from instseg.errors import DataError
from instseg.inference.predictor import Predictor
from instseg.inference.sources import Item, Source, count_items, iter_sources
from instseg.inference.tiling import TiledPrediction, predict_tiled_sparse
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
    to_sparse,
    write_json_atomic,
    write_label_image,
    write_overlay,
)

__all__ = ["BatchReport", "run_batch"]

Batch = list[tuple[int, Item]]  # (image id, item with an image)


@dataclass
class BatchReport:
    """What :func:`run_batch` did; ``failed`` holds ``(file, one-line reason)`` per bad input."""

    out_dir: Path
    processed: int = 0
    num_instances: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """1 when some inputs failed (or the run was interrupted), else 0."""
        return 1 if self.failed or self.interrupted else 0

    def summary(self) -> str:
        lines = [f"{self.processed} images, {self.num_instances} instances -> {self.out_dir}"]
        if self.failed:
            lines.append(f"{len(self.failed)} inputs failed:")
            lines += [f"  {f}: {r}" for f, r in self.failed]
        return "\n".join(lines)


def run_batch(
    predictor: Predictor,
    source: Source | Iterable[Item],
    out_dir: str | Path,
    overwrite: bool = False,
    write_labels: bool = True,
    write_overlays: bool = True,
    write_csv: bool = True,
    write_semantic: bool = False,
    progress: bool = True,
    recursive: bool = False,
    video_stride: int = 1,
    tile_size: int | None = None,
    tile_overlap: int = 128,
) -> BatchReport:
    """Predict every input of ``source`` into ``out_dir``: a path / folder / glob / video or a
    list of them (see :func:`~instseg.inference.sources.iter_sources`), or any iterable of
    :class:`~instseg.inference.sources.Item` (e.g. in-memory arrays).

    Refuses (DataError naming the file) to replace earlier outputs unless ``overwrite``. A bad
    input or a failure on one image is recorded in the report and the run goes on. Images
    larger than ``tile_size`` go through :func:`~instseg.inference.tiling.predict_tiled_sparse`.
    ``results.json``/``images.json`` are written atomically at the end (also on Ctrl-C, with
    what was done so far); the other files are written image by image.
    """
    out = Path(out_dir)
    kinds = {CSV_NAME: write_csv, LABELS_DIR: write_labels, OVERLAYS_DIR: write_overlays,
             SEMANTIC_DIR: write_semantic}  # fmt: skip
    _check_out_dir(out, [RESULTS, IMAGES, FAILED, *(k for k, on in kinds.items() if on)], overwrite)
    total, items = _items(source, recursive, video_stride)
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILED).unlink(missing_ok=True)  # only with overwrite: a stale list would mislead
    sink = _Outputs(out, predictor, kinds)
    batch: Batch = []
    try:
        bar = tqdm(items, total=total, desc="predict", unit="img", disable=not progress)
        for image_id, item in enumerate(bar, 1):
            if not item.ok:
                sink.report.failed.append((item.file_name, item.error or "no image"))
                continue
            batch.append((image_id, item))
            if len(batch) >= predictor.batch_size:
                sink.add(batch, _predict(predictor, batch, tile_size, tile_overlap))
                batch.clear()
        sink.add(batch, _predict(predictor, batch, tile_size, tile_overlap))
    except KeyboardInterrupt:
        sink.report.interrupted = True
        raise
    finally:
        sink.close()
    return sink.report


def _check_out_dir(out: Path, names: Sequence[str], overwrite: bool) -> None:
    """DataError when ``out`` is a file, or (without ``overwrite``) holds one of ``names``."""
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "output path exists and is not a folder")
    if overwrite:
        return
    for n in names:
        p = out / n
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            raise DataError(
                p, None, "output already exists; pass overwrite=True (--overwrite) to replace it"
            )


def _items(
    source: Source | Iterable[Item], recursive: bool, video_stride: int
) -> tuple[int | None, Iterable[Item]]:
    """``(number of items or None, items)``: paths are counted (an error when they name
    nothing) and read lazily; any other iterable of items is taken as it is."""
    if isinstance(source, (str, Path)) or (
        isinstance(source, Sequence) and all(isinstance(s, (str, Path)) for s in source)
    ):
        total = count_items(source, recursive, video_stride)  # raises for a SOURCE naming nothing
        return total, iter_sources(source, recursive, video_stride)
    return None, cast(Iterable[Item], source)


def _predict(
    predictor: Predictor, batch: Batch, tile_size: int | None, tile_overlap: int
) -> list[TiledPrediction | BaseException]:
    """Predictions of a batch (every score: see the module doc), one forward pass when
    possible; a failing image's exception takes its place (the others are retried one by one
    to find it)."""
    if batch and predictor.scale_factor is None:  # "auto": on the first whole image, once
        assert batch[0][1].image is not None
        predictor.estimate_object_size([batch[0][1].image])
    if len(batch) > 1 and tile_size is None:
        try:
            arrays = [it.image for _, it in batch if it.image is not None]
            return [to_sparse(p) for p in predictor.predict_arrays(arrays, apply_cutoff=False)]
        except Exception:  # find the culprit image by image
            pass
    res: list[TiledPrediction | BaseException] = []
    for _, item in batch:
        try:
            res.append(_predict_one(predictor, item, tile_size, tile_overlap))
        except Exception as exc:
            res.append(exc)
    return res


def _predict_one(
    predictor: Predictor, item: Item, tile_size: int | None, tile_overlap: int
) -> TiledPrediction:
    assert item.image is not None
    h, w = item.image.shape[:2]
    if tile_size is not None and max(h, w) > tile_size:
        return predict_tiled_sparse(_AllScores(predictor), item.image, tile_size, tile_overlap)
    return to_sparse(predictor.predict_arrays([item.image], apply_cutoff=False)[0])


class _AllScores:
    """``predictor`` as tiling sees it: ``predict_arrays`` keeps every score."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor, self.batch_size = predictor, predictor.batch_size

    def predict_arrays(self, images: Sequence[Any]) -> list[Any]:
        return self.predictor.predict_arrays(images, apply_cutoff=False)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class _Outputs:
    """Per-image files as predictions come; ``images.json``, ``results.json`` and
    ``failed.txt`` at :meth:`close`. ``kinds`` says which optional outputs are written."""

    def __init__(self, out: Path, predictor: Predictor, kinds: dict[str, bool]) -> None:
        self.out, self.kinds = out, kinds
        self.report = BatchReport(out)
        self.class_names, self.cat_ids = list(predictor.class_names), list(predictor.cat_ids)
        self.cutoff = predictor.score_cutoff
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.csv_file = open(out / CSV_NAME, "w", newline="") if kinds[CSV_NAME] else None
        self.csv = csv.DictWriter(self.csv_file, fieldnames=CSV_COLUMNS) if self.csv_file else None
        if self.csv:
            self.csv.writeheader()

    def add(self, batch: Batch, preds: list[TiledPrediction | BaseException]) -> None:
        """Write a batch's outputs; a failed image goes to the report."""
        for (image_id, item), pred in zip(batch, preds):
            try:
                if isinstance(pred, BaseException):
                    raise pred
                self._write(image_id, item, pred)
            except Exception as exc:
                self.report.failed.append((item.file_name, _one_line(exc)))

    def _write(self, image_id: int, item: Item, pred: TiledPrediction) -> None:
        assert item.image is not None
        out, name = self.out, item.name
        rows = prediction_results(pred, image_id, self.cat_ids)  # every score: for AP
        pred = above_cutoff(pred, self.cutoff)  # what people look at
        if self.kinds[LABELS_DIR]:
            write_label_image(out / LABELS_DIR / name, pred.to_label_image())
        if self.kinds[SEMANTIC_DIR]:
            write_label_image(out / SEMANTIC_DIR / name, semantic_image(pred))
        if self.kinds[OVERLAYS_DIR]:
            write_overlay(out / OVERLAYS_DIR / f"{name}.jpg", item.image, pred, self.class_names)
        if self.csv and self.csv_file:
            self.csv.writerows(csv_rows(name, pred, self.class_names))
            self.csv_file.flush()
        h, w = item.image.shape[:2]
        rec: dict[str, Any] = {"id": image_id, "file_name": str(item.path or name), "name": name, "height": h, "width": w}  # fmt: skip
        if item.frame is not None:
            rec["frame"] = item.frame
        self.images.append(rec)
        self.results.extend(rows)
        self.report.processed += 1
        self.report.num_instances += len(pred)

    def close(self) -> None:
        if self.csv_file:
            self.csv_file.close()
        cats = [{"id": int(c), "name": n} for c, n in zip(self.cat_ids, self.class_names)]
        write_json_atomic(self.out / IMAGES, {"images": self.images, "categories": cats})
        write_json_atomic(self.out / RESULTS, self.results)
        failed = self.report.failed
        if failed:
            (self.out / FAILED).write_text("".join(f"{f}: {r}\n" for f, r in failed))
