"""Mask codecs and mask geometry: bool masks <-> COCO RLE <-> polygons (pycocotools), tight
boxes, label images. No torch import here (``masks_to_boxes`` also takes torch tensors).

Conventions: masks are bool arrays ``(N, H, W)`` or ``(H, W)``; RLEs are pycocotools dicts
``{"size": [H, W], "counts": bytes|str|list[int]}`` (column-major runs); polygons are COCO
lists ``[[x1, y1, x2, y2, ...], ...]`` in absolute pixel coordinates. Boxes are xyxy
(exclusive right/bottom edge, like pycocotools' ``toBbox`` converted to xyxy). Label images
paint the highest-scoring instance on top (:func:`paint_label_image`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from numpy.typing import DTypeLike
from pycocotools import mask as mask_utils

if TYPE_CHECKING:
    from torch import Tensor

RLE = dict[str, Any]
Polygons = list[list[float]]


def encode(masks: np.ndarray) -> list[RLE]:
    """Encode bool masks ``(N, H, W)`` (or one ``(H, W)``) as compressed RLEs (counts: str)."""
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(arr.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return list(rles)


def decode(rles: list[RLE] | RLE, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Decode RLE(s) (compressed or uncompressed) to bool masks ``(N, H, W)``.

    ``height``/``width`` are needed only for an empty list.
    """
    if isinstance(rles, dict):
        rles = [rles]
    if len(rles) == 0:
        if height is None or width is None:
            raise ValueError("decode([]) needs height and width")
        return np.zeros((0, height, width), dtype=bool)
    compressed = [to_compressed(r) for r in rles]
    out = mask_utils.decode(compressed)  # (H, W, N) uint8 0/1, Fortran order
    # a view, not a copy: (N, H, W) with each mask column-major (callers that crop first
    # never touch the rest of a large image's masks)
    return out.view(np.bool_).transpose(2, 0, 1)


def to_compressed(rle: RLE) -> RLE:
    """Return a compressed RLE (counts as bytes) for pycocotools; accepts uncompressed lists."""
    counts = rle["counts"]
    h, w = (int(v) for v in rle["size"])
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts.encode("ascii")}
    return {"size": [h, w], "counts": counts}


def rle_runs(counts: str | bytes) -> np.ndarray:
    """Run lengths ``(K,)`` int64 of a compressed RLE string (pycocotools' format: each number
    in 5-bit groups, least significant first, as characters ``'0'`` + group, ``+ 32`` while more
    follow; from the third number on, a difference to the number two before). ValueError for a
    string that is not one; runs are not checked (see :func:`check_rle`)."""
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    v = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if v.size == 0:
        return np.zeros(0, np.int64)
    if v.min() < 0 or v.max() > 63:
        raise ValueError("character outside '0'..'o'")
    last = (v & 0x20) == 0  # a number's last character
    if not last[-1]:
        raise ValueError("the string ends inside a number")
    start = np.r_[0, np.flatnonzero(last)[:-1] + 1]
    group = np.cumsum(np.r_[0, last[:-1]])
    shift = 5 * (np.arange(len(v)) - start[group])
    if shift.max() > 55:
        raise ValueError("a number has too many digits")
    x = np.bitwise_or.reduceat((v & 0x1F) << shift, start)
    negative = (v[last] & 0x10) != 0
    x[negative] |= -1 << (shift[last][negative] + 5)
    x[1::2] = np.cumsum(x[1::2])
    x[2::2] = np.cumsum(x[2::2])
    return x


def check_rle(counts: str | bytes, height: int, width: int) -> str | None:
    """Why a compressed RLE string is not a ``height x width`` mask (None when it is one)."""
    try:
        runs = rle_runs(counts)
    except ValueError as err:
        return f"malformed RLE: {err}"
    if runs.min(initial=0) < 0:
        return "malformed RLE: a negative run"
    if int(runs.sum()) != height * width:
        return f"RLE covers {int(runs.sum())} pixels, not {height}x{width}"
    return None


def from_polygons(polygons: Polygons, height: int, width: int) -> RLE:
    """Rasterize COCO polygons exactly as pycocotools does, merged into one compressed RLE."""
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    merged = mask_utils.merge(rles)
    merged["counts"] = merged["counts"].decode("ascii")
    return merged


def segmentation_to_rle(segm: Polygons | RLE, height: int, width: int) -> RLE:
    """Any COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> compressed RLE."""
    if isinstance(segm, list):
        return from_polygons(segm, height, width)
    rle = to_compressed(segm)
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def area(rles: list[RLE]) -> np.ndarray:
    """Pixel areas ``(N,)`` float64 of RLEs."""
    if not rles:
        return np.zeros((0,), dtype=np.float64)
    return np.asarray(mask_utils.area([to_compressed(r) for r in rles]), dtype=np.float64)


def rle_boxes_xywh(rles: list[RLE]) -> np.ndarray:
    """Tight boxes ``(N, 4)`` in COCO xywh of RLEs (zeros for empty masks)."""
    if not rles:
        return np.zeros((0, 4), dtype=np.float64)
    return np.asarray(mask_utils.toBbox([to_compressed(r) for r in rles]), dtype=np.float64).reshape(-1, 4)


@overload
def masks_to_boxes(masks: np.ndarray) -> np.ndarray: ...
@overload
def masks_to_boxes(masks: Tensor) -> Tensor: ...
def masks_to_boxes(masks: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Tight xyxy boxes ``(N, 4)`` float32 of masks ``(N, H, W)`` (bool, or nonzero = set).

    Convention: ``x1``/``y1`` are the first set column/row and ``x2``/``y2`` are exclusive
    (last set column/row + 1), so ``x2 - x1`` is the mask's width in pixels (pycocotools'
    ``toBbox`` as xyxy). Empty masks give ``[0, 0, 0, 0]``. A numpy array gives a numpy
    array; a torch tensor gives a float32 tensor on its device (traceable for export).
    """
    torch = sys.modules.get("torch")  # a tensor implies torch is imported: none imported here
    if torch is not None and isinstance(masks, torch.Tensor):
        return _tensor_masks_to_boxes(masks)
    arr = np.asarray(masks, dtype=bool)
    n = arr.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    rows: np.ndarray = np.any(arr, axis=2)  # (N, H)
    cols: np.ndarray = np.any(arr, axis=1)  # (N, W)
    nonempty: np.ndarray = np.any(rows, axis=1)
    h, w = arr.shape[1:]
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    boxes[:] = np.stack([x1, y1, x2, y2], axis=1)
    boxes[~nonempty] = 0
    return boxes


def _tensor_masks_to_boxes(masks: Tensor) -> Tensor:
    """:func:`masks_to_boxes` of a torch tensor ``(N, H, W)``, on its device."""
    torch = sys.modules["torch"]  # imported already: the caller holds a tensor

    n, h, w = masks.shape
    if h == 0 or w == 0:
        return torch.zeros(n, 4, device=masks.device)
    # uint8 max-reductions: much faster than bool any() on CPU; a bool cast, not ``!= 0``
    # (bool != int promotes to int64: 40x slower on 100 512x512 masks)
    if masks.dtype != torch.bool:
        m = (masks != 0).to(torch.uint8)
    elif torch.jit.is_tracing() or torch.jit.is_scripting():
        m = masks.to(torch.uint8)
    else:  # eager: reinterpret, no copy
        m = masks.view(torch.uint8)
    rows, cols = m.amax(2).bool(), m.amax(1).bool()  # (N, H), (N, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, h).amin(1)
    y2 = torch.where(rows, ar_h + 1, 0).amax(1)
    x1 = torch.where(cols, ar_w, w).amin(1)
    x2 = torch.where(cols, ar_w + 1, 0).amax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).to(torch.float32)
    return boxes * rows.any(1, keepdim=True)


def crop_to_mask(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """A bool mask ``(H, W)`` cut to its tight box -> ``(crop, (y0, x0))``; an empty mask
    gives a ``(0, 0)`` crop at ``(0, 0)``."""
    x0, y0, x1, y1 = (int(v) for v in masks_to_boxes(mask[None])[0])
    return np.ascontiguousarray(mask[y0:y1, x0:x1]), (y0, x0)


def paint_label_image(
    size: tuple[int, int],
    masks: Sequence[np.ndarray] | np.ndarray,
    values: Sequence[int] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    offsets: Sequence[Sequence[int]] | np.ndarray | None = None,
    dtype: DTypeLike = np.int32,
) -> np.ndarray:
    """Paint bool masks into a label image ``(H, W)`` of ``dtype``: 0 background,
    ``values[i]`` (default ``i + 1``) where mask ``i`` is set.

    Order: the highest-scoring instance is painted on top (it wins overlapping pixels); on
    equal scores (or without ``scores``) the later instance wins. Mask ``i`` is the whole
    image ``(H, W)``, or a crop placed with its top-left corner at ``offsets[i] = (y0, x0)``.
    """
    n = len(masks)
    out = np.zeros(size, dtype=dtype)
    vals = np.arange(1, n + 1) if values is None else np.asarray(values)
    keys = np.zeros(n) if scores is None else np.asarray(scores, dtype=np.float64)
    for i in np.argsort(keys, kind="stable").tolist():  # ascending: the best is painted last
        m = masks[i]
        y0, x0 = (0, 0) if offsets is None else (int(v) for v in offsets[i])
        out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m] = vals[i]
    return out


def to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> Polygons:
    """Outer contours of a bool mask ``(H, W)`` as COCO polygons (pixel-corner coordinates).

    Traces the boundary between pixels, so ``from_polygons(to_polygons(m))`` reproduces
    hole-free masks; holes are not representable as COCO polygons (use RLE for those).
    Components whose contour has fewer than 3 points are dropped. ``tolerance`` > 0
    simplifies with Douglas-Peucker (lossy).
    """
    import cv2  # local: only polygon export needs OpenCV

    m = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    # Upsample by 2 so the traced pixel-centre contour lands on pixel corners.
    big = np.kron(m, np.ones((2, 2), dtype=np.uint8))
    big = np.pad(big, 1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys: Polygons = []
    for c in contours:
        if tolerance > 0:
            c = cv2.approxPolyDP(c, tolerance * 2, True)
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            continue
        # padded, doubled pixel-centre coords -> pixel-corner coords
        pts = (pts - 1 + 0.5) / 2.0
        polys.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polys
