"""Validation of single COCO fields: ids, sizes, segmentations, ``bbox``, ``area``, and the
agreement of a segmentation with its ``bbox``. Each check returns why a value is invalid (a
short message for a :class:`~instseg.errors.DataError`), or None. The whole list of checks
is in ``docs/validation.md``.
"""

from __future__ import annotations

from typing import Any

from instseg import masks as mask_codec

#: a segmentation's tight box and the ``bbox`` "disagree" when their IoU is below this and
#: neither contains the other (after :data:`CONTAIN_SLACK`): far from any rounding or
#: annotation-tool difference, so only swapped or corrupt boxes trip it
MIN_BOX_IOU = 0.1
#: pixels a box may stick out of the other and still "contain" it (pixel-edge conventions)
CONTAIN_SLACK = 2.0
#: largest coordinate / size accepted anywhere (beyond it pycocotools' int32 runs overflow)
MAX_COORD = 1e9


def is_number(v: Any) -> bool:
    """A JSON number (int or float, not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
    """A finite JSON number (not NaN, not +-Infinity; at most :data:`MAX_COORD` in size)."""
    return is_number(v) and abs(v) <= MAX_COORD


def check_id(value: Any, what: str) -> str | None:
    """Why ``value`` is not a usable integer id (COCO ids are integers), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{what} {value!r} is not an integer"
    return None


def check_size(height: Any, width: Any) -> str | None:
    """Why an image's ``height``/``width`` (either may be None: read from the file) are bad."""
    for name, v in (("height", height), ("width", width)):
        if v is None:
            continue
        if not is_finite(v) or v != int(v) or v <= 0:
            return f"{name} {v!r} is not a positive integer"
    return None


def _polygon_area(flat: list[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return 0.5 * abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n)))


def check_polygon_extent(poly: list[float], height: int, width: int) -> str | None:
    """Why a polygon reaches absurdly far outside its image (x in ``[-W, 2W]`` and y in
    ``[-H, 2H]`` pass), or None: rasterizing (pycocotools) costs memory in proportion to the
    polygon's length, so coordinates like 1e8 would exhaust the machine."""
    xs, ys = poly[0::2], poly[1::2]
    if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
        return f"has points far outside the {height}x{width} image"
    return None


def _check_polygons(segm: list[Any], height: int, width: int) -> str | None:
    if len(segm) == 0:
        return "empty segmentation"
    for k, poly in enumerate(segm):
        if not isinstance(poly, list) or not all(is_number(v) for v in poly):
            return f"polygon {k} is not a list of numbers"
        if not all(is_finite(v) for v in poly):
            return f"polygon {k} has non-finite or huge coordinates"
        if len(poly) % 2:
            return f"polygon {k} has an odd number of coordinates ({len(poly)})"
        if len(poly) < 6:
            return f"polygon {k} has {len(poly) // 2} points (needs at least 3)"
        if not _polygon_area(poly) > 0:
            return f"polygon {k} has zero area"
        far = check_polygon_extent(poly, height, width)
        if far:
            return f"polygon {k} {far}"
    return None


def _check_rle(segm: dict[str, Any], height: int, width: int) -> str | None:
    if "counts" not in segm or "size" not in segm:
        return "RLE needs 'counts' and 'size'"
    size = segm["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(is_finite(v) for v in size)):
        return f"RLE size {size!r} is not [height, width]"
    if (size[0], size[1]) != (height, width):
        return f"mask size {size[0]}x{size[1]} differs from image size {height}x{width}"
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "RLE counts must be non-negative integers"
        if sum(counts) != height * width:
            return f"RLE counts sum to {sum(counts)}, expected {height * width}"
        return None
    if isinstance(counts, str):
        return mask_codec.check_rle(counts, height, width)
    return "RLE counts must be a list or a string"


def check_segmentation(segm: Any, height: int, width: int) -> str | None:
    """Why a COCO ``segmentation`` is invalid for an image of ``height`` x ``width``, or None."""
    if isinstance(segm, list):
        return _check_polygons(segm, height, width)
    if isinstance(segm, dict):
        return _check_rle(segm, height, width)
    return f"segmentation must be polygons or RLE, got {type(segm).__name__}"


def check_bbox(bbox: Any) -> str | None:
    """Why a COCO ``bbox`` (``[x, y, w, h]``) is invalid, or None."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        return f"bbox {_short(bbox)} is not [x, y, width, height]"
    if not all(is_finite(v) for v in bbox):
        return f"bbox {bbox} has non-finite or huge values"
    if bbox[2] < 0:
        return f"bbox has negative width {bbox[2]:g}"
    if bbox[3] < 0:
        return f"bbox has negative height {bbox[3]:g}"
    return None


def check_area(area: Any) -> str | None:
    """Why a COCO ``area`` is invalid (not a finite number >= 0), or None."""
    if not is_number(area):
        return f"area {_short(area)} is not a number"
    if not is_finite(area):
        return f"area is {area}"
    if area < 0:
        return f"area is negative ({area:g})"
    return None


def segmentation_box(segm: Any, height: int, width: int) -> list[float]:
    """Tight xywh box of a valid segmentation (polygons: their extent clipped to the image)."""
    if isinstance(segm, list):
        xs = [min(max(float(v), 0.0), width) for p in segm for v in p[0::2]]
        ys = [min(max(float(v), 0.0), height) for p in segm for v in p[1::2]]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    rle = mask_codec.segmentation_to_rle(segm, height, width)
    return [float(v) for v in mask_codec.rle_boxes_xywh([rle])[0]]


def _contains(outer: list[float], inner: list[float]) -> bool:
    s = CONTAIN_SLACK
    return (
        inner[0] >= outer[0] - s
        and inner[1] >= outer[1] - s
        and inner[0] + inner[2] <= outer[0] + outer[2] + s
        and inner[1] + inner[3] <= outer[1] + outer[3] + s
    )


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two xywh boxes (0 when both are empty)."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def check_agreement(bbox: list[float], segm_box: list[float]) -> str | None:
    """Why ``bbox`` and the segmentation's tight box disagree (see :data:`MIN_BOX_IOU`)."""
    iou = box_iou(bbox, segm_box)
    if iou >= MIN_BOX_IOU or _contains(bbox, segm_box) or _contains(segm_box, bbox):
        return None
    shown = ", ".join(f"{v:.1f}" for v in segm_box)
    return f"bbox {[round(v, 1) for v in bbox]} disagrees with the segmentation's box [{shown}] (IoU {iou:.2f})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
