"""What ``POST /v1/predict`` answers: one image's ``Instances`` as JSON, COCO results, a
16-bit label image or an overlay picture.

Instances are numbered 1..N best score first (``id``), the numbering of the label image and
of ``instseg predict``'s ``instances.csv``. Coordinates are absolute pixels with pixel
corners at integers (pixel (0, 0) covers [0, 1) x [0, 1)): ``box`` is the model's box
``[x0, y0, x1, y1]``, ``mask_bbox`` the mask's tight box COCO-style ``[x, y, w, h]``; ``rle``
is a COCO compressed RLE (column-major, ``counts`` a string) of the full image; ``polygons``
are the mask's outer contours ``[[x0, y0, x1, y1, ...], ...]`` (holes only in the RLE).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from instseg.inference.tiling import TiledPrediction
from instseg.inference.writers import csv_rows, draw_overlay, prediction_results, to_sparse
from instseg.masks import to_polygons
from instseg.structures import Instances

__all__ = ["FORMATS", "coco_payload", "instances_payload", "png_bytes", "render"]

#: the ``format`` values of ``POST /v1/predict`` and their media types
FORMATS = {
    "json": "application/json",
    "coco": "application/json",
    "labels.png": "image/png",
    "overlay.png": "image/png",
}


def instances_payload(
    pred: TiledPrediction, class_names: Sequence[str], cat_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """One dict per instance of ``pred`` (best score first): id, label, class, category_id,
    score, box, mask_bbox, area, rle, polygons (module doc)."""
    rows = csv_rows("", pred, class_names)
    rles = pred.to_rles()
    out = []
    for i, (row, rle) in enumerate(zip(rows, rles)):
        y0, x0 = (int(v) for v in pred.offsets[i])
        polys = [
            [round(v + (x0 if k % 2 == 0 else y0), 2) for k, v in enumerate(poly)]
            for poly in to_polygons(pred.crops[i])
        ]
        label = int(pred.labels[i])
        out.append({
            "id": i + 1,
            "label": label,
            "class": row["class"],
            "category_id": int(cat_ids[label]) if 0 <= label < len(cat_ids) else None,
            "score": round(float(pred.scores[i]), 5),
            "box": [round(float(v), 2) for v in pred.boxes[i]],
            "mask_bbox": [row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]],
            "area": row["area"],
            "rle": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]},
            "polygons": polys,
        })  # fmt: skip
    return out


def coco_payload(pred: TiledPrediction, cat_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results of the image (``image_id`` 1), the rows ``instseg predict`` writes to
    ``results.json``."""
    return prediction_results(pred, 1, cat_ids)


def png_bytes(image: np.ndarray) -> bytes:
    """An array as PNG file bytes (uint16 ``(H, W)`` -> 16-bit grayscale)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def render(
    kind: str,
    inst: Instances,
    image: np.ndarray,
    class_names: Sequence[str],
    cat_ids: Sequence[int],
) -> tuple[Any, str]:
    """``(body, media type)`` of ``inst`` (detections of ``image``, already filtered) in
    format ``kind`` (:data:`FORMATS`): a JSON-able object or PNG bytes."""
    pred = to_sparse(inst)
    if kind == "json":
        return instances_payload(pred, class_names, cat_ids), FORMATS[kind]
    if kind == "coco":
        return coco_payload(pred, cat_ids), FORMATS[kind]
    if kind == "labels.png":
        labels = pred.to_label_image()
        if labels.dtype != np.uint16:
            raise ValueError(f"{len(pred)} instances do not fit a 16-bit label image")
        return png_bytes(labels), FORMATS[kind]
    if kind == "overlay.png":
        return png_bytes(draw_overlay(image, pred, class_names)), FORMATS[kind]
    raise ValueError(f"unknown format {kind!r} ({', '.join(FORMATS)})")
