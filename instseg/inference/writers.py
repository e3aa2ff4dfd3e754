"""Prediction outputs: what :func:`instseg.inference.batch.run_batch` writes, file by file.

Layout of ``out_dir`` (every part but ``results.json``/``images.json`` optional):

    results.json      COCO results: [{image_id, category_id, segmentation (RLE, counts str),
                      bbox [x, y, w, h], score}, ...]; written atomically at the end; every
                      detection (low scores help AP); the other outputs keep those scoring
                      >= the score cut-off (:func:`above_cutoff`)
    images.json       {"images": [{id, file_name, name, height, width[, frame]}], "categories":
                      [{id, name}]}: a COCO file without annotations, so ``COCO("images.json")
                      .loadRes("results.json")`` works
    instances.csv     one row per instance: image, id, class, score, area, bbox_x, bbox_y,
                      bbox_w, bbox_h, centroid_x, centroid_y (written at the end, image order)
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

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from instseg.data.coco import coco_results
from instseg.inference.tiling import TiledPrediction
from instseg.masks import crop_to_mask, paint_label_image
from instseg.structures import Instances
from instseg.viz import overlay

__all__ = [
    "CSV_COLUMNS",
    "above_cutoff",
    "csv_rows",
    "draw_overlay",
    "prediction_results",
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


def above_cutoff(pred: TiledPrediction, cutoff: float | None) -> TiledPrediction:
    """The instances of ``pred`` scoring >= ``cutoff`` (all of them for ``None``), in order."""
    if cutoff is None or len(pred) == 0 or bool((pred.scores >= cutoff).all()):
        return pred
    keep = np.flatnonzero(pred.scores >= cutoff)
    return TiledPrediction(
        pred.image_size,
        [pred.crops[i] for i in keep.tolist()],
        pred.offsets[keep],
        pred.labels[keep],
        pred.scores[keep],
        None if pred.model_boxes is None else pred.model_boxes[keep],
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
