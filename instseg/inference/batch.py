""":func:`run_batch`: predict a whole SOURCE (files, folders, globs, videos) into a folder.

The folder's layout and file formats are those of :mod:`instseg.inference.writers`.
``results.json`` (COCO results, for AP) keeps every detection the model returns; label
images, overlays, semantic maps and ``instances.csv`` keep those scoring >= the predictor's
``score_cutoff`` (the model's calibrated cut-off, or ``--score-threshold``, which also drops
detections from ``results.json``). An ``auto`` object size is estimated on the first image.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tqdm import tqdm

from instseg.errors import DataError
from instseg.inference.predictor import Predictor
from instseg.inference.shards import (
    SHARDS_DIR,
    Journal,
    check_same_input,
    failed_record,
    image_record,
    merge_outputs,
    read_records,
)
from instseg.inference.sources import Item, Source, count_items, iter_sources
from instseg.inference.tiling import TiledPrediction, predict_tiled_sparse
from instseg.inference.writers import (
    CSV_NAME,
    FAILED,
    IMAGES,
    LABELS_DIR,
    OVERLAYS_DIR,
    RESULTS,
    SEMANTIC_DIR,
    to_sparse,
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
    resumed: int = 0  # images whose outputs an earlier run had written (not predicted again)

    @property
    def exit_code(self) -> int:
        """1 when some inputs failed (or the run was interrupted), else 0."""
        return 1 if self.failed or self.interrupted else 0

    def summary(self) -> str:
        lines = [f"{self.processed} images, {self.num_instances} instances -> {self.out_dir}"]
        if self.resumed:
            lines[0] += f" ({self.resumed} images from an earlier run)"
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
    resume: bool = False,
) -> BatchReport:
    """Predict every input of ``source`` into ``out_dir``: a path / folder / glob / video or a
    list of them (see :func:`~instseg.inference.sources.iter_sources`), or any iterable of
    :class:`~instseg.inference.sources.Item` (e.g. in-memory arrays).

    Refuses (DataError naming the file) to replace earlier outputs unless ``overwrite`` (start
    again) or ``resume``: skip the images an earlier run into ``out_dir`` finished (same
    inputs and options; its failed images are tried again). A bad input or a failure on one
    image is recorded in the report and the run goes on. Images larger than ``tile_size`` go
    through :func:`~instseg.inference.tiling.predict_tiled_sparse`. Per-image files are written
    whole or not at all, then journalled in ``out_dir/.shards`` (:mod:`.shards`);
    ``results.json``, ``images.json``, ``instances.csv`` and ``failed.txt`` are written
    atomically from the journal at the end (also on Ctrl-C, with what was done so far).
    """
    out = Path(out_dir)
    kinds = {CSV_NAME: write_csv, LABELS_DIR: write_labels, OVERLAYS_DIR: write_overlays,
             SEMANTIC_DIR: write_semantic}  # fmt: skip
    names = [RESULTS, IMAGES, FAILED, SHARDS_DIR, *(k for k, on in kinds.items() if on)]
    prepare_out_dir(out, names, overwrite, resume)
    total, items = _items(source, recursive, video_stride)
    out.mkdir(parents=True, exist_ok=True)
    sink = _Outputs(out, predictor, kinds, read_records(out) if resume else {})
    batch: Batch = []
    try:
        bar = tqdm(items, total=total, desc="predict", unit="img", disable=not progress)
        for image_id, item in enumerate(bar, 1):
            if sink.done_before(image_id, item):
                continue
            if not item.ok:
                sink.fail(image_id, item, item.error or "no image")
                continue
            batch.append((image_id, item))
            if len(batch) >= predictor.batch_size:
                sink.add(batch, predict_items(predictor, batch, tile_size, tile_overlap))
                batch.clear()
        sink.add(batch, predict_items(predictor, batch, tile_size, tile_overlap))
    except KeyboardInterrupt:
        sink.report.interrupted = True
        raise
    finally:
        sink.close()
    return sink.report


def prepare_out_dir(out: Path, names: Sequence[str], overwrite: bool, resume: bool) -> None:
    """DataError when ``out`` is a file, or (neither ``overwrite`` nor ``resume``)
    holds one of ``names``; ``overwrite`` drops an earlier run's journal. Hidden temp files
    that a killed run left half-written are removed."""
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "output path exists and is not a folder")
    for sub in (LABELS_DIR, OVERLAYS_DIR, SEMANTIC_DIR):  # temp files of a killed run's writes
        for stray in (out / sub).rglob(".*.tmp*") if (out / sub).is_dir() else ():
            stray.unlink(missing_ok=True)
    if overwrite:
        shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    elif not resume:
        for n in names:
            p = out / n
            if p.is_file() or (p.is_dir() and any(p.iterdir())):
                raise DataError(
                    p, None, "output already exists; pass overwrite=True (--overwrite) to "
                    "replace it or resume=True (--resume) to finish an earlier run",
                )  # fmt: skip


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


def predict_items(
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
    """Per-image files and journal records as predictions come; the merged files at
    :meth:`close`. ``kinds`` says which optional outputs are written; ``previous``: an
    earlier run's records (image id -> record) to keep instead of predicting again."""

    def __init__(
        self, out: Path, predictor: Predictor, kinds: dict[str, bool],
        previous: dict[int, dict[str, Any]],
    ) -> None:  # fmt: skip
        self.out, self.kinds, self.previous = out, kinds, previous
        self.report = BatchReport(out)
        self.class_names, self.cat_ids = list(predictor.class_names), list(predictor.cat_ids)
        self.cutoff = predictor.score_cutoff
        self.records: dict[int, dict[str, Any]] = {}
        self.journal = Journal(out, "local")

    def done_before(self, image_id: int, item: Item) -> bool:
        """True (and its record kept) when an earlier run finished this image."""
        rec = self.previous.get(image_id)
        if rec is None or rec["error"] is not None:
            return False
        check_same_input(rec, item.file_name, self.out)
        self.records[image_id] = rec
        self.report.resumed += 1
        return True

    def fail(self, image_id: int, item: Item, reason: str) -> None:
        rec = failed_record(image_id, item.file_name, item.name, reason)
        self.records[image_id] = rec
        self.journal.append([rec])

    def add(self, batch: Batch, preds: list[TiledPrediction | BaseException]) -> None:
        """Write a batch's outputs and journal them; a failed image gets a failed record."""
        recs = []
        for (image_id, item), pred in zip(batch, preds):
            try:
                if isinstance(pred, BaseException):
                    raise pred
                rec = image_record(self.out, self.kinds, image_id, item, pred,
                                   self.class_names, self.cat_ids, self.cutoff)  # fmt: skip
            except Exception as exc:
                rec = failed_record(image_id, item.file_name, item.name, _one_line(exc))
            self.records[image_id] = rec
            recs.append(rec)
        self.journal.append(recs)

    def close(self) -> None:
        self.journal.close()
        records = [self.records[k] for k in sorted(self.records)]
        cats = categories(self.cat_ids, self.class_names)
        merge_outputs(self.out, records, cats, self.kinds[CSV_NAME])
        fill_report(self.report, records)


def categories(cat_ids: Sequence[int], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """``images.json``'s categories: ``[{id, name}]``."""
    return [{"id": int(c), "name": n} for c, n in zip(cat_ids, class_names)]


def fill_report(report: BatchReport, records: Sequence[dict[str, Any]]) -> None:
    """Counts and failures of the merged ``records`` into ``report``."""
    ok = [r for r in records if r["error"] is None]
    report.processed = len(ok)
    report.num_instances = sum(int(r["n"]) for r in ok)
    report.failed = [(r["file"], r["error"]) for r in records if r["error"] is not None]
