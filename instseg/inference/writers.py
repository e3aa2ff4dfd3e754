"""Prediction outputs, and :func:`run_batch`, which predicts a whole SOURCE into a folder.

Layout of ``out_dir`` (every part but ``results.json``/``images.json`` optional):

    results.json      COCO results: [{image_id, category_id, segmentation (RLE, counts str),
                      bbox [x, y, w, h], score}, ...]; written atomically at the end
    images.json       {"images": [{id, file_name, name, height, width[, frame]}], "categories":
                      [{id, name}]}: a COCO file without annotations, so ``COCO("images.json")
                      .loadRes("results.json")`` works
    instances.csv     one row per instance: image, id, class, score, area, bbox_x, bbox_y,
                      bbox_w, bbox_h, centroid_x, centroid_y (appended image by image)
    labels/NAME.png   16-bit label image (NAME.tif, 32-bit, past 65535 instances): 0 background,
                      id i+1 for the i-th instance (best score first); higher scores on top
    overlays/NAME.jpg masks, outlines, class and score drawn over the image
    semantic/NAME.png class map: 0 background, label+1 (8-bit, 16-bit past 254 classes)
    failed.txt        one line per failed input: "file: reason" (only when some failed)

Coordinates: ``results.json`` bbox is the model's box in COCO xywh; the CSV's bbox is the
mask's tight box (x, y, w, h); ``id`` matches the label image; ``area`` is the instance's
predicted mask area (pixels hidden under higher-scoring instances included); centroids are
the mean pixel centre in pixel-corner coordinates (pixel (0, 0) has centre (0.5, 0.5)), the
same convention as the boxes.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from instseg.data.coco import coco_results
from instseg.errors import DataError
from instseg.inference.predictor import Predictor
from instseg.inference.sources import Item, Source, count_items, iter_sources
from instseg.inference.tiling import TiledPrediction, predict_tiled_sparse
from instseg.masks import crop_to_mask, paint_label_image
from instseg.structures import Instances
from instseg.viz import overlay

__all__ = [
    "CSV_COLUMNS",
    "BatchReport",
    "csv_rows",
    "draw_overlay",
    "prediction_results",
    "run_batch",
    "save_image",
    "semantic_image",
    "to_sparse",
    "write_json_atomic",
    "write_label_image",
    "write_overlay",
]

RESULTS, IMAGES, CSV_NAME, FAILED = "results.json", "images.json", "instances.csv", "failed.txt"
LABELS_DIR, OVERLAYS_DIR, SEMANTIC_DIR = "labels", "overlays", "semantic"
OVERLAY_MASK_BYTES = 512 * 2**20
CSV_COLUMNS = ("image", "id", "class", "score", "area", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "centroid_x", "centroid_y")  # fmt: skip


def to_sparse(inst: Instances) -> TiledPrediction:
    """``Instances`` (with masks) -> crops at offsets, best score first (what the writers use)."""
    if inst.masks is None:
        raise ValueError("writers need mask predictions (the model returned boxes only)")
    scores = (
        inst.scores.cpu().numpy() if inst.scores is not None else np.ones(len(inst), np.float32)
    )
    order = np.argsort(-scores, kind="stable")
    masks = inst.masks.cpu().numpy()
    crops, offsets = [], []
    for i in order.tolist():
        crop, offset = crop_to_mask(masks[i])
        crops.append(crop)
        offsets.append(offset)
    return TiledPrediction(
        image_size=inst.image_size,
        crops=crops,
        offsets=np.asarray(offsets, dtype=np.int64).reshape(-1, 2),
        labels=inst.labels.cpu().numpy()[order].astype(np.int64),
        scores=scores[order].astype(np.float32),
        model_boxes=inst.boxes.cpu().numpy()[order].astype(np.float32).reshape(-1, 4),
    )


def prediction_results(
    pred: TiledPrediction, image_id: int, cat_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO result dicts of one image (:func:`instseg.data.coco.coco_results`, best score
    first); ``cat_ids[label]`` is the category id of a label (ValueError when missing)."""
    labels, scores = pred.labels.tolist(), pred.scores.tolist()
    return coco_results(image_id, pred.boxes.tolist(), labels, scores, cat_ids, pred.to_rles())


def csv_rows(name: str, pred: TiledPrediction, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-instance rows (see :data:`CSV_COLUMNS`); ``id`` is the label-image id (i + 1)."""
    rows = []
    for i, (m, (y0, x0)) in enumerate(zip(pred.crops, pred.offsets.tolist())):
        ys, xs = np.nonzero(m)
        area = int(ys.size)
        label = int(pred.labels[i])
        rows.append({
            "image": name,
            "id": i + 1,
            "class": class_names[label] if 0 <= label < len(class_names) else str(label),
            "score": round(float(pred.scores[i]), 5),
            "area": area,
            "bbox_x": x0, "bbox_y": y0, "bbox_w": m.shape[1], "bbox_h": m.shape[0],
            "centroid_x": round(float(xs.mean()) + x0 + 0.5, 2) if area else "",
            "centroid_y": round(float(ys.mean()) + y0 + 0.5, 2) if area else "",
        })  # fmt: skip
    return rows


def write_label_image(path_stem: str | Path, labels: np.ndarray) -> Path:
    """Write a label image as ``path_stem.png`` (8-bit for uint8 arrays, else 16-bit) or, past
    65535, as a 32-bit ``path_stem.tif``."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if labels.dtype == np.uint8:
        path = stem.with_name(stem.name + ".png")
        Image.fromarray(labels).save(path)
    elif int(labels.max(initial=0)) <= 65535:
        path = stem.with_name(stem.name + ".png")
        Image.fromarray(labels.astype(np.uint16)).save(path)
    else:
        import tifffile

        path = stem.with_name(stem.name + ".tif")
        tifffile.imwrite(path, labels.astype(np.uint32), compression="zlib")
    return path


def semantic_image(pred: TiledPrediction) -> np.ndarray:
    """Class map ``(H, W)``: 0 background, label+1; a higher score is painted on top."""
    top = int(pred.labels.max(initial=0)) + 1
    return paint_label_image(
        pred.image_size,
        pred.crops,
        values=pred.labels.astype(np.int64) + 1,
        scores=pred.scores,
        offsets=pred.offsets,
        dtype=np.uint8 if top <= 255 else np.uint16,
    )


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 ``(H, W, 3)`` (or gray) array as an image file (format from the
    suffix), creating the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(p)
    return p


def write_overlay(
    path: str | Path,
    image: np.ndarray,
    pred: TiledPrediction,
    class_names: Sequence[str],
    show_labels: bool = True,
    show_scores: bool = True,
) -> Path:
    """Save :func:`draw_overlay` of ``pred`` over ``image`` to ``path``."""
    drawn = draw_overlay(image, pred, class_names, show_labels, show_scores)
    return save_image(path, drawn)


def draw_overlay(
    image: np.ndarray,
    pred: TiledPrediction,
    class_names: Sequence[str],
    show_labels: bool = True,
    show_scores: bool = True,
) -> np.ndarray:
    """Masks, outlines, class and score (as enabled; no boxes) drawn over ``image`` (RGB uint8)
    with :func:`instseg.viz.overlay`; instances go in chunks of at most
    ``OVERLAY_MASK_BYTES`` of full-size masks (on huge images colours repeat per chunk)."""
    h, w = pred.image_size
    step = max(1, int(OVERLAY_MASK_BYTES // max(h * w, 1)))  # bounded full-size mask memory
    out = image
    for s in range(0, max(len(pred), 1), step):
        part = TiledPrediction(
            pred.image_size,
            pred.crops[s : s + step],
            pred.offsets[s : s + step],
            pred.labels[s : s + step],
            pred.scores[s : s + step],
            None if pred.model_boxes is None else pred.model_boxes[s : s + step],
        )
        out = overlay(
            out,
            part.to_instances(),
            list(class_names),
            show_boxes=False,
            show_scores=show_scores,
            show_labels=show_labels,
        )
    return out


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON to a temp file, fsync, then rename over ``path`` (never half a file)."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


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


def _existing(out: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        p = out / n
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            return p
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


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
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "output path exists and is not a folder")
    names = [RESULTS, IMAGES, FAILED]
    names += [CSV_NAME] * write_csv + [LABELS_DIR] * write_labels
    names += [OVERLAYS_DIR] * write_overlays + [SEMANTIC_DIR] * write_semantic
    if not overwrite and (clash := _existing(out, names)) is not None:
        raise DataError(
            clash, None, "output already exists; pass overwrite=True (--overwrite) to replace it"
        )
    total: int | None = None
    if isinstance(source, (str, Path)) or (
        isinstance(source, Sequence) and all(isinstance(s, (str, Path)) for s in source)
    ):
        total = count_items(source, recursive, video_stride)  # raises for a SOURCE naming nothing
        items: Iterable[Item] = iter_sources(source, recursive, video_stride)
    else:
        items = cast(Iterable[Item], source)
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILED).unlink(missing_ok=True)  # only with overwrite: a stale list would mislead
    report = BatchReport(out)
    class_names, cat_ids = list(predictor.class_names), list(predictor.cat_ids)
    results: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    csv_file = open(out / CSV_NAME, "w", newline="") if write_csv else None
    writer = csv.DictWriter(csv_file, fieldnames=CSV_COLUMNS) if csv_file else None
    if writer:
        writer.writeheader()

    def predict(batch: list[tuple[int, Item]]) -> list[TiledPrediction | BaseException]:
        def one(item: Item) -> TiledPrediction:
            assert item.image is not None
            h, w = item.image.shape[:2]
            if tile_size is not None and max(h, w) > tile_size:
                return predict_tiled_sparse(predictor, item.image, tile_size, tile_overlap)
            return to_sparse(predictor.predict_arrays([item.image])[0])

        if len(batch) > 1 and tile_size is None:
            try:
                arrays = [it.image for _, it in batch if it.image is not None]
                return [to_sparse(p) for p in predictor.predict_arrays(arrays)]
            except Exception:  # find the culprit image by image
                pass
        res: list[TiledPrediction | BaseException] = []
        for _, it in batch:
            try:
                res.append(one(it))
            except Exception as exc:
                res.append(exc)
        return res

    def flush(batch: list[tuple[int, Item]]) -> None:
        for (image_id, item), pred in zip(batch, predict(batch)):
            try:
                if isinstance(pred, BaseException):
                    raise pred
                assert item.image is not None
                write_item(image_id, item, pred)
            except Exception as exc:
                report.failed.append((item.file_name, _one_line(exc)))
        batch.clear()

    def write_item(image_id: int, item: Item, pred: TiledPrediction) -> None:
        assert item.image is not None
        rows = prediction_results(pred, image_id, cat_ids)
        if write_labels:
            write_label_image(out / LABELS_DIR / item.name, pred.to_label_image())
        if write_semantic:
            write_label_image(out / SEMANTIC_DIR / item.name, semantic_image(pred))
        if write_overlays:
            write_overlay(out / OVERLAYS_DIR / f"{item.name}.jpg", item.image, pred, class_names)
        if writer and csv_file:
            writer.writerows(csv_rows(item.name, pred, class_names))
            csv_file.flush()
        h, w = item.image.shape[:2]
        rec: dict[str, Any] = {"id": image_id, "file_name": str(item.path or item.name), "name": item.name, "height": h, "width": w}  # fmt: skip
        if item.frame is not None:
            rec["frame"] = item.frame
        images.append(rec)
        results.extend(rows)
        report.processed += 1
        report.num_instances += len(pred)

    from tqdm import tqdm

    batch: list[tuple[int, Item]] = []
    try:
        for image_id, item in enumerate(
            tqdm(items, total=total, desc="predict", unit="img", disable=not progress), 1
        ):
            if not item.ok:
                report.failed.append((item.file_name, item.error or "no image"))
                continue
            batch.append((image_id, item))
            if len(batch) >= predictor.batch_size:
                flush(batch)
        flush(batch)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        if csv_file:
            csv_file.close()
        cats = [{"id": int(c), "name": n} for c, n in zip(cat_ids, class_names)]
        write_json_atomic(out / IMAGES, {"images": images, "categories": cats})
        write_json_atomic(out / RESULTS, results)
        if report.failed:
            (out / FAILED).write_text("".join(f"{f}: {r}\n" for f, r in report.failed))
    return report
