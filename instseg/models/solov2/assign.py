"""SOLOv2 training targets: which grid cell learns which object (center sampling), and
the geometry they need (grid shapes, centers of mass). Coordinates are
absolute pixels of the (resized, padded) network input, ``(y, x)`` order where noted; grid
cells are ``(row, col)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["center_of_mass", "grid_shapes", "center_regions", "assign_targets"]


def center_of_mass(masks: Tensor) -> Tensor:
    """Mass centers ``(N, 2)`` as ``(y, x)`` pixel-center coordinates of masks ``(N, H, W)``.

    Pixel ``(r, c)`` has center ``(r + 0.5, c + 0.5)``; an empty mask gives NaN.
    """
    m = masks.to(torch.float32)
    total = m.sum((1, 2))
    ys = torch.arange(m.shape[1], dtype=torch.float32, device=m.device) + 0.5
    xs = torch.arange(m.shape[2], dtype=torch.float32, device=m.device) + 0.5
    cy = (m.sum(2) * ys).sum(1) / total
    cx = (m.sum(1) * xs).sum(1) / total
    return torch.stack([cy, cx], 1)


def grid_shapes(
    num_grids: Sequence[int], padded: tuple[int, int], canvas: int | None = None
) -> list[tuple[int, int]]:
    """SOLO grids ``(rows, cols)`` per level on a padded input ``(Hp, Wp)``: ``S x S`` (the
    paper), or with ``canvas`` cells of the size they have on a ``canvas x canvas`` input:
    ``round(Hp * S / canvas)`` x ``round(Wp * S / canvas)`` (at least 1)."""
    if canvas is None:
        return [(int(s), int(s)) for s in num_grids]
    hp, wp = int(padded[0]), int(padded[1])  # python ints (shape values under tracing)
    return [(max(1, round(hp * s / canvas)), max(1, round(wp * s / canvas))) for s in num_grids]


def center_regions(
    centers: Tensor,
    boxes: Tensor,
    grid: int | tuple[int, int],
    input_size: tuple[int, int],
    sigma: float = 0.2,
    radius: int = 1,
) -> Tensor:
    """Positive cells of each object on a ``grid x grid`` (or ``(rows, cols)``) grid: ``(N, 4)``
    int64 inclusive ``(top, bottom, left, right)`` rows/cols.

    The region is the box of half-size ``sigma * (w/2, h/2)`` around the mass center
    ``centers (N, 2)`` ``(y, x)``, clipped to ``radius`` cells around the center's cell
    (3x3 for radius 1, as in the official SOLO code); it always contains the center cell.
    ``boxes (N, 4)`` xyxy and ``centers`` are in pixels of ``input_size = (H, W)``.
    """
    h, w = input_size
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    cy, cx = centers[:, 0], centers[:, 1]
    half_h = 0.5 * sigma * (boxes[:, 3] - boxes[:, 1])
    half_w = 0.5 * sigma * (boxes[:, 2] - boxes[:, 0])

    def cell(v: Tensor, size: int, n: int) -> Tensor:
        return torch.floor(v * n / size).to(torch.int64).clamp(0, n - 1)

    row, col = cell(cy, h, gh), cell(cx, w, gw)
    top = torch.maximum(cell(cy - half_h, h, gh), row - radius)
    bottom = torch.minimum(cell(cy + half_h, h, gh), row + radius)
    left = torch.maximum(cell(cx - half_w, w, gw), col - radius)
    right = torch.minimum(cell(cx + half_w, w, gw), col + radius)
    return torch.stack([top, bottom, left, right], 1)


def assign_targets(
    boxes: Tensor,
    centers: Tensor,
    labels: Tensor,
    iscrowd: Tensor,
    input_size: tuple[int, int],
    num_classes: int,
    num_grids: Sequence[int | tuple[int, int]] = (40, 36, 24, 16, 12),
    scale_ranges: tuple[tuple[float, float], ...] = (
        (1.0, 96.0),
        (48.0, 192.0),
        (96.0, 384.0),
        (192.0, 768.0),
        (384.0, 2048.0),
    ),
    sigma: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Grid targets of one image, concatenated over levels (cell ``r * S + c`` of each level;
    a level's grid is ``S x S``, or ``(rows, cols)`` given as a pair: cell ``r * cols + c``).

    Inputs in pixels of the network input ``input_size = (H, W)``: ``boxes (N, 4)`` xyxy,
    ``centers (N, 2)`` mass centers ``(y, x)``, ``labels (N,)``, ``iscrowd (N,)``. An object
    goes to every level whose scale range holds ``sqrt(box area)``; its cells are
    :func:`center_regions`. Returns ``cell_labels (sum S^2,)`` int64 (class, ``num_classes``
    for background, -1 ignored: crowd regions) and ``cell_gt (sum S^2,)`` int64 (index of the
    object whose mask is the target, -1 if none). Later objects overwrite earlier ones.
    """
    scale = (
        (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    ).sqrt()
    order = torch.argsort(iscrowd.to(torch.int64), descending=True, stable=True)  # crowd first
    all_labels, all_gt = [], []
    for s, (lo, hi) in zip(num_grids, scale_ranges):
        shape = (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))
        cell_labels = torch.full(shape, num_classes, dtype=torch.int64)
        cell_gt = torch.full(shape, -1, dtype=torch.int64)
        hit = order[(scale[order] >= lo) & (scale[order] <= hi)]
        regions = center_regions(centers[hit], boxes[hit], s, input_size, sigma).tolist()
        for i, (top, bottom, left, right) in zip(hit.tolist(), regions):
            crowd = bool(iscrowd[i])
            cell_labels[top : bottom + 1, left : right + 1] = -1 if crowd else int(labels[i])
            cell_gt[top : bottom + 1, left : right + 1] = -1 if crowd else i
        all_labels.append(cell_labels.reshape(-1))
        all_gt.append(cell_gt.reshape(-1))
    return torch.cat(all_labels), torch.cat(all_gt)
