"""Crops give the same overlaps, IoUs and shifts as full-frame masks."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.masks import masks_to_boxes
from instseg.tracking.crops import crops_from, iou, overlaps, shifted


def blobs(rng: np.random.Generator, n: int, size: tuple[int, int] = (60, 80)) -> np.ndarray:
    """``n`` random ellipses, some touching the frame's edges, some empty."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    out = np.zeros((n, *size), bool)
    for k in range(n):
        if k % 7 == 6:
            continue  # an empty mask
        cy, cx = rng.uniform(-5, size[0] + 5), rng.uniform(-5, size[1] + 5)
        ry, rx = rng.uniform(2, 15, size=2)
        out[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return out


def full_shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        if 0 <= y + dy < h and 0 <= x + dx < w:
            out[y + dy, x + dx] = True
    return out


def paste(c, size: tuple[int, int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.zeros(size, bool)
    out[c.y0 : c.y1, c.x0 : c.x1] = c.mask
    return out


@pytest.mark.parametrize("seed", range(5))
def test_overlaps_and_iou_equal_full_frame(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = blobs(rng, 9), blobs(rng, 12)
    ca, cb = crops_from(a, masks_to_boxes(a)), crops_from(b, masks_to_boxes(b))
    inter = (a.reshape(9, -1).astype(np.int64) @ b.reshape(12, -1).T.astype(np.int64))
    assert np.array_equal(overlaps(ca, cb), inter)
    union = a.sum((1, 2))[:, None] + b.sum((1, 2))[None] - inter
    got, _ = iou(ca, cb)
    assert np.allclose(got, inter / np.clip(union, 1, None))
    for c, m in zip(ca, a):
        assert np.array_equal(paste(c, m.shape), m) and c.area == m.sum()
        if m.any():
            ys, xs = np.nonzero(m)
            assert np.allclose(c.centroid(), [ys.mean(), xs.mean()])


@pytest.mark.parametrize("dy,dx", [(0, 0), (3, -4), (-20, 7), (70, 0), (5, 90)])
def test_shifted_equals_full_frame_shift(dy: int, dx: int) -> None:
    m = blobs(np.random.default_rng(1), 6)
    for c, mask in zip(crops_from(m, masks_to_boxes(m)), m):
        s = shifted(c, dy, dx, mask.shape)
        assert np.array_equal(paste(s, mask.shape), full_shift(mask, dy, dx))
        assert s.area == full_shift(mask, dy, dx).sum()


def test_mask_spilling_out_of_its_box_is_kept() -> None:
    """A Mask R-CNN mask may reach a little past its box: the crop still holds all of it."""
    m = np.zeros((1, 50, 50), bool)
    m[0, 10:31, 10:31] = True
    crop = crops_from(m, np.array([[12.0, 12.0, 29.0, 29.0]]))[0]
    assert crop.area == m.sum() and (crop.y0, crop.x0, crop.y1, crop.x1) == (10, 10, 31, 31)
