"""SOLOv2 mask targets of one image, computed inside each object's box.

The mask target of an object is its full-resolution mask resized to the network input
(bilinear, ``align_corners=False``, no antialiasing: ``F.interpolate``), zero-padded to the
padded batch and average-pooled by the mask stride ``s``: a soft mask ``(Hp/s, Wp/s)``.
Resizing, padding and pooling are linear and separable, so the soft mask is
``Ay @ M @ Ax^T`` with per-axis matrices ``Ay (Hp/s, h)`` and ``Ax (Wp/s, w)``
(:func:`axis_weights`). A mask is zero outside its box, so only the box's columns of
``Ay``/``Ax`` and the band of rows they reach take part: per object two small matmuls on
its box crop instead of resizing and pooling ``(N, H, W)`` full-size masks (the previous
way, ~10% of a light model's CPU step on crowded nuclei crops). The mass centers of the
resized masks (what center sampling uses) come from the same crop with the weighted row /
column sums of the resize matrices. :func:`soft_masks_dense` is the direct way (resize,
pad and pool every full-size mask, in chunks), kept for accelerators, where a few large
kernels beat a Python loop over objects, and as the reference of the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.masks import masks_to_boxes
from instseg.models.solov2 import assign

__all__ = ["axis_weights", "bilinear_weights", "soft_masks", "soft_masks_dense"]


def bilinear_weights(n_in: int, n_out: int) -> Tensor:
    """``(n_out, n_in)`` float32 weights of ``F.interpolate(mode="bilinear",
    align_corners=False)`` from ``n_in`` to ``n_out`` samples along one axis (no antialias):
    output ``i`` reads input ``(i + 0.5) * n_in / n_out - 0.5`` (clamped at 0), linearly."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)  # float32 as torch's kernel
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    w = torch.zeros(n_out, n_in)
    rows = torch.arange(n_out)
    w.index_put_((rows, i0), 1 - frac, accumulate=True)
    w.index_put_((rows, i1), frac, accumulate=True)
    return w


def _resize(n_in: int, n_out: int) -> Tensor:
    """:func:`bilinear_weights`, or the identity when the sizes are equal."""
    return torch.eye(n_in) if n_in == n_out else bilinear_weights(n_in, n_out)


def _pool(n_size: int, n_padded: int, stride: int) -> Tensor:
    """``(n_padded // stride, n_size)``: zero-pad to ``n_padded``, average-pool by ``stride``."""
    pool = torch.zeros(n_padded // stride, n_size)
    cols = torch.arange(n_size)
    cols = cols[cols // stride < pool.shape[0]]  # avg_pool drops a remainder < stride
    pool[cols // stride, cols] = 1.0 / stride
    return pool


def axis_weights(n_in: int, n_size: int, n_padded: int, stride: int) -> Tensor:
    """``(n_padded // stride, n_in)``: resize ``n_in -> n_size`` (:func:`bilinear_weights`,
    the identity when equal), zero-pad to ``n_padded``, average-pool by ``stride``."""
    return _pool(n_size, n_padded, stride) @ _resize(n_in, n_size)


def _bands(weights: Tensor) -> tuple[list[int], list[int]]:
    """Per input index of ``weights (n_out, n_in)``: the first output row it reaches and one
    past the last (``n_out`` / ``0`` where it reaches none: skipped by a downscale)."""
    nz = weights != 0
    n_out = weights.shape[0]
    rows = torch.arange(n_out).unsqueeze(1)
    first = torch.where(nz, rows, n_out).amin(0)
    last = torch.where(nz, rows + 1, 0).amax(0)
    return first.tolist(), last.tolist()


def soft_masks(
    masks: Tensor, size: tuple[int, int], padded: tuple[int, int], stride: int
) -> tuple[Tensor, Tensor]:
    """Bool masks ``(N, h, w)`` -> soft targets ``(N, Hp/stride, Wp/stride)`` float32 (the
    masks resized to ``size = (H, W)``, zero-padded to ``padded = (Hp, Wp)``, average-pooled
    by ``stride``) and the mass centers ``(N, 2)`` ``(y, x)`` of the resized masks in
    input pixels (pixel centers at ``+0.5``; NaN for an empty mask); on ``masks``' device."""
    n, h, w = masks.shape
    device = masks.device
    soft = torch.zeros(n, padded[0] // stride, padded[1] // stride)
    centers = torch.full((n, 2), float("nan"))
    if n == 0:
        return soft.to(device), centers.to(device)
    ry, rx = _resize(h, size[0]), _resize(w, size[1])
    ay, ax = _pool(size[0], padded[0], stride) @ ry, _pool(size[1], padded[1], stride) @ rx
    # resized-mask sums along an axis: (total, position-weighted) of each input row / column
    ys = torch.arange(size[0], dtype=torch.float32) + 0.5
    xs = torch.arange(size[1], dtype=torch.float32) + 0.5
    moments_y = torch.stack([ry.sum(0), ys @ ry])  # (2, h)
    moments_x = torch.stack([rx.sum(0), xs @ rx], 1)  # (w, 2)
    y_first, y_last = _bands(ay)
    x_first, x_last = _bands(ax)
    boxes = masks_to_boxes(masks).long().tolist()
    cpu_masks = masks.cpu()
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if x2 <= x1 or y2 <= y1:
            continue  # empty mask: zero target, NaN center
        crop = cpu_masks[i, y1:y2, x1:x2].float()
        m = moments_y[:, y1:y2] @ crop @ moments_x[x1:x2]  # [[sum, sum x], [sum y, -]]
        if m[0, 0] > 0:
            centers[i, 0], centers[i, 1] = m[1, 0] / m[0, 0], m[0, 1] / m[0, 0]
        r0, r1 = min(y_first[y1:y2]), max(y_last[y1:y2])
        c0, c1 = min(x_first[x1:x2]), max(x_last[x1:x2])
        if r1 > r0 and c1 > c0:
            soft[i, r0:r1, c0:c1] = ay[r0:r1, y1:y2] @ crop @ ax[c0:c1, x1:x2].T
    return soft.to(device), centers.to(device)


def soft_masks_dense(
    masks: Tensor, size: tuple[int, int], padded: tuple[int, int], stride: int
) -> tuple[Tensor, Tensor]:
    """:func:`soft_masks` by resizing, padding and pooling the full-size masks (32 at a
    time, to bound memory), on ``masks``' device."""
    n, h, w = masks.shape
    soft = torch.zeros(n, padded[0] // stride, padded[1] // stride, device=masks.device)
    centers = torch.zeros(n, 2, device=masks.device)
    for k in range(0, n, 32):
        m = masks[k : k + 32].to(torch.float32)
        if (h, w) != size:
            m = F.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0]
        centers[k : k + 32] = assign.center_of_mass(m)
        m = F.pad(m, (0, padded[1] - size[1], 0, padded[0] - size[0]))
        soft[k : k + 32] = F.avg_pool2d(m[None], stride)[0]
    return soft, centers
