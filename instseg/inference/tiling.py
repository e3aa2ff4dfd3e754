"""Tiled inference for images far larger than the model input (slides, aerial photos).

The image is cut into ``tile_size`` tiles that overlap by ``overlap`` pixels (the last tile
of a row/column is shifted back to end at the image edge, so every tile is full size when
the image is). Each tile is predicted on its own; every predicted instance is kept as a
*piece*: its label, score, and its mask cropped to its box with the crop's offset, so memory
grows with the objects, not with ``N x H x W``.

Overlapping tiles see objects that cross tile borders more than once;
:mod:`.tile_merge` merges those pieces so that each object comes out once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from instseg.inference.predictor import load_input
from instseg.inference.tile_merge import Box, Piece, merge_pieces, pieces_of
from instseg.masks import paint_label_image
from instseg.structures import Instances

__all__ = [
    "Piece",
    "TiledPrediction",
    "crop_to_rle",
    "predict_tiled",
    "predict_tiled_sparse",
    "tile_grid",
]



def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    return list(range(0, n - tile, stride)) + [n - tile]


def tile_grid(height: int, width: int, tile_size: int = 512, overlap: int = 128) -> list[Box]:
    """Tiles ``(y0, x0, y1, x1)`` (exclusive ends) covering an ``height x width`` image, row-major."""
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise ValueError(
            f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}"
        )
    stride = tile_size - overlap
    return [
        (y, x, min(y + tile_size, height), min(x + tile_size, width))
        for y in _starts(height, tile_size, stride)
        for x in _starts(width, tile_size, stride)
    ]


def crop_to_rle(mask: np.ndarray, y0: int, x0: int, height: int, width: int) -> dict[str, Any]:
    """Compressed COCO RLE (counts str) of a bool crop ``(h, w)`` placed at ``(y0, x0)`` in a
    ``height x width`` image, without building the full-image mask."""
    h, w = mask.shape
    strip = np.zeros((height, w), dtype=np.uint8)
    strip[y0 : y0 + h] = mask
    flat = strip.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    if not runs:
        runs = [0]
    runs[0] += x0 * height
    tail = (width - x0 - w) * height
    if len(runs) % 2 == 1:  # ends with a run of zeros
        runs[-1] += tail
    elif tail:
        runs.append(tail)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


@dataclass
class TiledPrediction:
    """Predictions kept sparse: per instance a bool crop ``(h, w)`` at an offset, best score first.

    ``offsets`` int ``(N, 2)`` as (y0, x0); ``labels`` int64 ``(N,)``; ``scores`` float32
    ``(N,)``; ``model_boxes`` float32 ``(N, 4)`` xyxy, or None (then :attr:`boxes` are the
    crops' boxes, i.e. the masks' tight boxes, as for merged tiled predictions).
    """

    image_size: tuple[int, int]
    crops: list[np.ndarray]
    offsets: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    model_boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def boxes(self) -> np.ndarray:
        """xyxy float32 ``(N, 4)`` in absolute pixels (see the class docstring)."""
        if self.model_boxes is not None:
            return self.model_boxes
        return self.mask_boxes

    @property
    def mask_boxes(self) -> np.ndarray:
        """Tight boxes of the masks, xyxy float32 ``(N, 4)`` (exclusive x2/y2)."""
        out = np.zeros((len(self), 4), dtype=np.float32)
        for i, (m, (y0, x0)) in enumerate(zip(self.crops, self.offsets.tolist())):
            out[i] = (x0, y0, x0 + m.shape[1], y0 + m.shape[0])
        return out

    def to_instances(self) -> Instances:
        """Full-image ``Instances`` (masks ``(N, H, W)``: only for images that fit in memory)."""
        h, w = self.image_size
        masks = torch.zeros((len(self), h, w), dtype=torch.bool)
        for i, (m, (y0, x0)) in enumerate(zip(self.crops, self.offsets.tolist())):
            masks[i, y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = torch.from_numpy(m)
        return Instances(
            image_size=(h, w),
            boxes=torch.from_numpy(self.boxes),
            labels=torch.from_numpy(self.labels.astype(np.int64)),
            scores=torch.from_numpy(self.scores.astype(np.float32)),
            masks=masks,
        )

    def to_rles(self) -> list[dict[str, Any]]:
        """Full-image compressed RLEs (counts str), one per instance."""
        h, w = self.image_size
        return [
            crop_to_rle(m, y0, x0, h, w) for m, (y0, x0) in zip(self.crops, self.offsets.tolist())
        ]

    def to_label_image(self) -> np.ndarray:
        """Label image ``(H, W)`` (uint16, or uint32 past 65535 instances): 0 background,
        ``i + 1`` for instance ``i``; a higher score is painted on top."""
        dtype = np.uint16 if len(self) <= 65535 else np.uint32
        return paint_label_image(
            self.image_size, self.crops, scores=self.scores, offsets=self.offsets, dtype=dtype
        )


Predict = Callable[[list[np.ndarray]], list[Instances]]


def _batch_fn(predictor_or_fn: Any, batch_size: int | None) -> tuple[Predict, int]:
    if hasattr(predictor_or_fn, "predict_arrays"):
        return predictor_or_fn.predict_arrays, batch_size or int(
            getattr(predictor_or_fn, "batch_size", 1)
        )
    if not callable(predictor_or_fn):
        raise TypeError("predict_tiled needs a Predictor or a callable image -> Instances")
    return (lambda tiles: [predictor_or_fn(t) for t in tiles]), batch_size or 1


def predict_tiled_sparse(
    predictor_or_fn: Any,
    image: Any,
    tile_size: int = 512,
    overlap: int = 128,
    merge_iou: float = 0.5,
    class_agnostic: bool = False,
    batch_size: int | None = None,
) -> TiledPrediction:
    """Tiled prediction of a large image -> :class:`TiledPrediction` (no full-image masks).

    ``predictor_or_fn``: a :class:`~instseg.inference.predictor.Predictor` (tiles go through
    ``predict_arrays``, ``batch_size`` at a time) or any callable ``RGB uint8 (h, w, 3) tile ->
    Instances`` in tile coordinates. ``image``: anything the Predictor accepts. See the module
    docstring for the merge rule.
    """
    img = load_input(image)
    h, w = img.shape[:2]
    tiles = tile_grid(h, w, tile_size, overlap)
    fn, bs = _batch_fn(predictor_or_fn, batch_size)
    pieces: list[Piece] = []
    for s in range(0, len(tiles), bs):
        chunk = tiles[s : s + bs]
        preds = fn([img[y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])
        for t, (tile, inst) in enumerate(zip(chunk, preds), start=s):
            if inst.image_size != (tile[2] - tile[0], tile[3] - tile[1]):
                raise RuntimeError(f"tile {tile}: predictions are for size {inst.image_size}")
            pieces += pieces_of(inst, t, tile, (h, w))
    merged = merge_pieces(pieces, tiles, merge_iou, class_agnostic)
    return TiledPrediction(
        image_size=(h, w),
        crops=[p.mask for p in merged],
        offsets=np.asarray([(p.y0, p.x0) for p in merged], dtype=np.int64).reshape(-1, 2),
        labels=np.asarray([p.label for p in merged], dtype=np.int64),
        scores=np.asarray([p.score for p in merged], dtype=np.float32),
    )


def predict_tiled(
    predictor_or_fn: Any,
    image: Any,
    tile_size: int = 512,
    overlap: int = 128,
    merge_iou: float = 0.5,
    class_agnostic: bool = False,
    batch_size: int | None = None,
) -> Instances:
    """Tiled prediction -> full-image ``Instances`` (see :func:`predict_tiled_sparse`; use that
    one, with ``to_rles()`` / ``to_label_image()``, for images whose N x H x W masks do not fit)."""
    return predict_tiled_sparse(
        predictor_or_fn, image, tile_size, overlap, merge_iou, class_agnostic, batch_size
    ).to_instances()
