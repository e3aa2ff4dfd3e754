"""Read COCO ground truth and detection results into flat arrays, the way pycocotools does.

Reproduces ``COCO.loadRes`` and ``COCOeval._prepare``: the first result decides the mode
(``bbox`` present and non-empty: area = w*h, a missing segmentation becomes the box polygon;
otherwise area and bbox come from the mask), detections get ids 1..N and ``iscrowd = 0``,
ground-truth ``ignore`` is overwritten by ``iscrowd``, polygons and uncompressed RLEs are
rasterized with ``pycocotools.mask.frPyObjects`` (+ ``merge``), ground truth keeps its
``area`` field. Imports only numpy and pycocotools.mask (never pycocotools.coco/cocoeval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from instseg.data.coco import read_json
from instseg.data.coco_checks import check_polygon_extent
from instseg.errors import DataError


@dataclass
class Annotations:
    """Annotations of the evaluated images/categories, one row each (order = pycocotools').

    ``img``/``cat``: index into the evaluated image ids / category groups; ``order``: sort
    key that reproduces pycocotools' per-(image, category) list order; ``geom``: RLE dicts
    (segm) or an ``(N, 4)`` float64 xywh array (bbox).
    """

    img: np.ndarray  # (N,) int64
    cat: np.ndarray  # (N,) int64
    order: np.ndarray  # (N,) int64
    area: np.ndarray  # (N,) float64
    crowd: np.ndarray  # (N,) bool
    nonzero_id: np.ndarray  # (N,) bool, pycocotools treats a match to id 0 as no match
    score: np.ndarray  # (N,) float64 (zeros for ground truth)
    geom: Any


def load_gt(gt: dict | str | Path) -> tuple[dict, str]:
    """Return the ground-truth dict (validated top level) and a name for error messages."""
    name = str(gt) if isinstance(gt, (str, Path)) else "<ground truth>"
    data = read_json(gt) if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict):
        raise DataError(name, None, "not a COCO ground-truth file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(name, None, f"not a COCO ground-truth file (no '{key}' list)")
    return data, name


def load_dt(dt: list | str | Path) -> tuple[list, str]:
    """Return the results list and a name for error messages."""
    name = str(dt) if isinstance(dt, (str, Path)) else "<results>"
    data = read_json(dt) if isinstance(dt, (str, Path)) else dt
    if not isinstance(data, list):
        raise DataError(name, None, "not a COCO results file (top level is not a list of detections)")
    return data, name


def _to_rle(segm: Any, h: Any, w: Any) -> dict:
    """``COCO.annToRLE``: polygons -> frPyObjects + merge, uncompressed RLE -> frPyObjects.

    ValueError for polygons far outside the image (pycocotools' memory grows with the
    polygon's length: 1e8 would exhaust the machine), see ``check_polygon_extent``."""
    if isinstance(segm, list):
        for poly in segm:
            far = check_polygon_extent(poly, int(h), int(w)) if isinstance(poly, list) and poly else None
            if far:
                raise ValueError(f"a polygon {far}")
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, h, w)
    return segm


def _image_hw(images: dict, image_id: Any, file: str, item: str) -> tuple[Any, Any]:
    img = images[image_id]
    if "height" not in img or "width" not in img:
        raise DataError(file, f"image id={image_id}", "needs 'height' and 'width' to rasterize " + item)
    return img["height"], img["width"]


def _order_key(cat_pos: np.ndarray, n: int, use_cats: bool) -> np.ndarray:
    """Per-annotation list order: file order, or (category position, file order) without cats."""
    file_order = np.arange(n, dtype=np.int64)
    return file_order if use_cats else cat_pos * max(n, 1) + file_order


def gt_annotations(
    data: dict, name: str, iou_type: str, img_index: dict, cat_index: dict, use_cats: bool
) -> Annotations:
    """Ground truth of the evaluated images and categories (``cat_index``: id -> position)."""
    images = {img["id"]: img for img in data["images"] if isinstance(img, dict) and "id" in img}
    rows: list[tuple[int, int, float, bool, bool]] = []
    geom: list = []
    seen: set = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(name, f"annotation {i}", "is not an object")
        for key in ("id", "image_id", "category_id"):
            if key not in ann:
                raise DataError(name, f"annotation {i}", f"missing '{key}'")
        aid = ann["id"]
        if aid in seen:
            raise DataError(name, f"annotation id={aid}", "duplicate annotation id")
        seen.add(aid)
        ii = img_index.get(ann["image_id"])
        ci = cat_index.get(ann["category_id"])
        if ii is None or ci is None:
            continue  # pycocotools: not in the evaluated images / categories
        item = f"annotation id={aid}"
        crowd = bool(ann.get("iscrowd", 0))
        g: Any
        try:
            if iou_type == "segm":
                if "segmentation" not in ann:
                    raise DataError(name, item, "missing 'segmentation'")
                h, w = _image_hw(images, ann["image_id"], name, item)
                g = _to_rle(ann["segmentation"], h, w)
                if [int(v) for v in g["size"]] != [h, w]:
                    raise DataError(name, item, f"mask size {list(g['size'])} differs from the image's {[h, w]}")
            else:
                g = _box(ann, name, item)
            area = _number(ann["area"], "area", name, item) if "area" in ann else _fallback_area(iou_type, g)
        except DataError:
            raise
        except Exception as exc:  # pycocotools raises bare Exceptions / TypeErrors
            raise DataError(name, item, f"invalid {'segmentation' if iou_type == 'segm' else 'bbox'} ({exc})") from None
        geom.append(g)
        rows.append((ii, ci, area, crowd, aid != 0))
    return _pack(rows, geom, iou_type, use_cats, np.zeros(len(rows)))


def _number(value: Any, what: str, name: str, item: str) -> float:
    """A finite number, or a DataError (NaN / Infinity, as Python's json writes them, too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(name, item, f"{what} {_short(value)} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(name, item, f"{what} is {value} (not a finite number)")
    try:
        return float(value)
    except OverflowError:
        raise DataError(name, item, f"{what} {_short(value)} is too large") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dt_box(ann: dict, name: str, item: str) -> list[float]:
    """A detection's ``bbox``: 4 finite numbers, width and height >= 0."""
    bb = _box(ann, name, item)
    if bb[2] < 0 or bb[3] < 0:
        raise DataError(name, item, f"bbox {ann['bbox']} has a negative width or height")
    return bb


def _box(ann: dict, name: str, item: str) -> list[float]:
    """``bbox`` as 4 floats, or a DataError."""
    if "bbox" not in ann:
        raise DataError(name, item, "missing 'bbox'")
    bb = ann["bbox"]
    if not isinstance(bb, (list, tuple)) or len(bb) != 4:
        raise DataError(name, item, f"bbox {_short(bb)} is not [x, y, w, h]")
    return [_number(v, "bbox value", name, item) for v in bb]


def _fallback_area(iou_type: str, g: Any) -> float:
    """Area of a ground-truth object without an ``area`` field (pycocotools would crash)."""
    if iou_type == "segm":
        return float(mask_utils.area(g))
    return float(g[2]) * float(g[3])


def _pack(rows: list, geom: list, iou_type: str, use_cats: bool, score: np.ndarray) -> Annotations:
    n = len(rows)
    cols = list(zip(*rows)) if rows else [(), (), (), (), ()]
    cat_pos = np.asarray(cols[1], dtype=np.int64)
    g: Any = geom
    if iou_type == "bbox":
        g = np.asarray(geom, dtype=np.float64).reshape(n, 4)
    return Annotations(
        img=np.asarray(cols[0], dtype=np.int64),
        cat=cat_pos if use_cats else np.zeros(n, dtype=np.int64),
        order=_order_key(cat_pos, n, use_cats),
        area=np.asarray(cols[2], dtype=np.float64),
        crowd=np.asarray(cols[3], dtype=bool),
        nonzero_id=np.asarray(cols[4], dtype=bool),
        score=score,
        geom=g,
    )


def dt_annotations(
    data: list,
    name: str,
    iou_type: str,
    gt_images: dict,
    all_cats: set,
    img_index: dict,
    cat_index: dict,
    use_cats: bool,
) -> Annotations:
    """Detections (``COCO.loadRes`` rules) of the evaluated images and categories.

    An empty list is evaluated as "no detections" (pycocotools crashes on it).
    """
    if not data:
        return _pack([], [], iou_type, use_cats, np.zeros(0))
    first = data[0]
    box_mode = isinstance(first, dict) and "bbox" in first and not first["bbox"] == []
    rows: list[tuple[int, int, float, bool, bool]] = []
    geom: list = []
    masks: list = []  # mask-mode: the RLE of each detection (for area / bbox in one call)
    scores: list[float] = []
    for i, ann in enumerate(data):
        item = f"result {i}"
        if not isinstance(ann, dict):
            raise DataError(name, item, "is not an object")
        for key in ("image_id", "category_id", "score"):
            if key not in ann:
                raise DataError(name, item, f"missing '{key}'")
        image_id, cat_id = ann["image_id"], ann["category_id"]
        if not _hashable(image_id) or image_id not in gt_images:
            raise DataError(name, item, f"image_id {_short(image_id)} is not in the ground truth")
        if not _hashable(cat_id) or cat_id not in all_cats:
            raise DataError(name, item, f"category_id {_short(cat_id)} is not in the ground truth")
        score = _number(ann["score"], "score", name, item)
        ii = img_index.get(image_id)
        ci = cat_index.get(cat_id)
        if ii is None or ci is None:
            continue
        try:
            g, area = _dt_geometry(ann, box_mode, iou_type, gt_images, name, item, masks)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(name, item, f"invalid {'bbox' if box_mode else 'segmentation'} ({exc})") from None
        geom.append(g)
        scores.append(score)
        rows.append((ii, ci, area, False, True))
    if not box_mode and rows:
        # loadRes: area = maskUtils.area(segm), bbox = maskUtils.toBbox(segm) if absent
        areas = _areas(masks)
        if iou_type == "bbox":
            need = [k for k, g in enumerate(geom) if g is None]
            if need:
                boxes = mask_utils.toBbox([masks[k] for k in need])
                for k, box in zip(need, boxes):
                    geom[k] = box
        rows = [(r[0], r[1], float(a), r[3], r[4]) for r, a in zip(rows, areas)]
    return _pack(rows, geom, iou_type, use_cats, np.asarray(scores, dtype=np.float64))


def _hashable(value: Any) -> bool:
    """A JSON value that can be an id (not a list or an object)."""
    return not isinstance(value, (list, dict))


def _areas(rles: list) -> np.ndarray:
    """``maskUtils.area`` of many RLEs (chunks of 255: pycocotools 2.0.11 overflows above)."""
    parts = [mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(parts).astype(np.float64)


def _dt_geometry(
    ann: dict, box_mode: bool, iou_type: str, gt_images: dict, name: str, item: str, masks: list
) -> tuple[Any, float]:
    """(geometry used for the IoU, area) of one detection, as loadRes + _prepare compute them.

    In mask mode the RLE is appended to ``masks`` and area (and a missing bbox) come later.
    """
    if box_mode:
        if "bbox" not in ann:
            raise DataError(name, item, "missing 'bbox' (the first result has one)")
        bb = _dt_box(ann, name, item)
        area = bb[2] * bb[3]
        if iou_type == "bbox":
            return bb, area
        segm = ann.get("segmentation")
        h, w = _image_hw(gt_images, ann["image_id"], name, item)
        if segm is None:  # the box's polygon, clamped to the image +-1 px: the same pixels
            x1, x2 = (min(max(v, -1.0), float(w) + 1.0) for v in (bb[0], bb[0] + bb[2]))
            y1, y2 = (min(max(v, -1.0), float(h) + 1.0) for v in (bb[1], bb[1] + bb[3]))
            segm = [[x1, y1, x1, y2, x2, y2, x2, y1]]
        return _to_rle(segm, h, w), area
    if "segmentation" not in ann:
        raise DataError(name, item, "missing 'segmentation' (and the first result has no 'bbox')")
    segm = ann["segmentation"]
    if not isinstance(segm, dict) or isinstance(segm.get("counts"), list):
        # pycocotools accepts only compressed RLE here; we rasterize like ground truth
        h, w = _image_hw(gt_images, ann["image_id"], name, item)
        segm = _to_rle(segm, h, w)
    img = gt_images[ann["image_id"]]
    size = list(segm["size"])
    if "height" in img and "width" in img and size != [img["height"], img["width"]]:
        raise DataError(name, item, f"mask size {size} differs from the image's {[img['height'], img['width']]}")
    masks.append(segm)
    if iou_type == "bbox":
        return (_dt_box(ann, name, item) if "bbox" in ann else None), 0.0
    return segm, 0.0
