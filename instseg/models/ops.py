"""Tensor ops of SOLOv2: Matrix NMS, Dice and focal losses, center-region target helpers.

Conventions: masks are ``(N, H, W)`` (bool or soft in [0, 1]); coordinates are absolute
pixels of the (resized, padded) network input, ``(y, x)`` order where noted; grid cells are
``(row, col)`` of an ``S x S`` grid laid over the whole input. The inference ops (Matrix NMS,
point NMS, boxes) are vectorized, with no Python loops over data, so they trace and export;
:func:`assign_targets` (training only) loops over objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

__all__ = [
    "assign_targets",
    "binary_mask_iou",
    "center_of_mass",
    "center_regions",
    "grid_shapes",
    "dice_loss",
    "focal_loss",
    "mask_boxes",
    "mask_iou_matrix",
    "matrix_nms",
    "points_nms",
]


# -- NMS ------------------------------------------------------------------------------------
def _exact_int_mm(masks: Tensor) -> bool:
    """Whether bool masks can take the int8 x int8 -> int32 matmul (exact, ~3x faster than
    float32 on CPU): eager CPU only (``torch._int_mm`` neither traces to ONNX nor takes odd
    shapes on CUDA)."""
    return (
        masks.dtype == torch.bool
        and masks.numel() > 0
        and masks.device.type == "cpu"
        and hasattr(torch, "_int_mm")
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
    )


def _int_inter_upper(flat8: Tensor, blocks: int = 4) -> Tensor:
    """Exact intersections ``(N, N)`` of int8 0/1 rows ``(N, D)`` on and above the diagonal
    (row blocks against the columns from their own start on: 5/8 of the full product for 4
    blocks); below it 0."""
    n = flat8.shape[0]
    inter = torch.zeros(n, n, dtype=torch.int32, device=flat8.device)
    bounds = [n * k // blocks for k in range(blocks + 1)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # a fixed number of blocks
        if hi > lo:
            inter[lo:hi, lo:] = torch._int_mm(flat8[lo:hi], flat8[lo:].t())
    return inter


def mask_iou_matrix(masks: Tensor, upper: bool = False) -> Tensor:
    """Pairwise IoU ``(N, N)`` float32 of masks ``(N, H, W)`` (bool or soft), via one matmul.
    ``upper``: only entries on/above the diagonal are needed (those below may be 0)."""
    if _exact_int_mm(masks):
        flat8 = masks.reshape(masks.shape[0], -1).view(torch.int8)  # bool -> int8: no copy
        if upper:
            inter = _int_inter_upper(flat8).to(torch.float32)
        else:
            inter = torch._int_mm(flat8, flat8.t()).to(torch.float32)  # exact counts
        area = inter.diagonal()
        union = area[:, None] + area[None, :] - inter
        return inter / union.clamp(min=1e-6)
    flat = masks.reshape(masks.shape[0], -1).to(torch.float32)
    inter = flat @ flat.t()
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp(min=1e-6)


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
) -> Tensor:
    """Matrix NMS (SOLOv2, Wang et al. 2020): decayed scores ``(N,)`` in the input order.

    For candidate ``j``, with ``i`` ranging over same-class candidates of higher score,
    ``decay_j = min(1, min_i f(iou_ij) / f(max_{k: s_k > s_i} iou_ki))`` where
    ``f(x) = exp(-sigma x^2)`` (gaussian) or ``1 - x`` (linear); equal scores rank in any
    order. ``masks (N, H, W)`` bool or soft, ``labels (N,)`` int, ``scores (N,)``.
    """
    n = scores.shape[0]
    if n == 0:
        return scores.clone()
    order = scores.argsort(descending=True)  # not stable=True: ONNX has no stable sort
    iou = mask_iou_matrix(masks[order], upper=True)  # only i ranked above j is used
    same = labels[order][:, None] == labels[order][None, :]
    higher = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(diagonal=1)
    # iou[i, j] for i ranked above j and of the same class; 0 elsewhere
    decay_iou = torch.where(same & higher, iou, torch.zeros_like(iou))
    compensate = decay_iou.max(0).values[:, None]  # (N, 1): max IoU of row i with any higher one
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * (decay_iou**2 - compensate**2))
    elif kernel == "linear":
        ratio = (1.0 - decay_iou) / (1.0 - compensate).clamp(min=1e-6)
    else:
        raise ValueError(f"matrix_nms: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    ratio = torch.where(higher, ratio, torch.ones_like(ratio))
    decay = ratio.min(0).values.clamp(max=1.0)
    out = torch.empty_like(scores)
    out[order] = scores[order] * decay
    return out


def points_nms(heat: Tensor, kernel: int = 2) -> Tensor:
    """Keep grid scores ``(B, K, S, S)`` that are the max of their 2x2 window (SOLO's point NMS)."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=1)
    keep = hmax[:, :, :-1, :-1] == heat
    return heat * keep


def binary_mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of paired bool masks ``a[i]``, ``b[i]`` (``(N, H, W)`` each) -> ``(N,)`` float32
    (0 where both are empty)."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    inter = (a & b).sum(1, dtype=torch.float32)
    union = (a | b).sum(1, dtype=torch.float32)
    return inter / union.clamp(min=1.0)


# -- losses ---------------------------------------------------------------------------------
def dice_loss(probs: Tensor, targets: Tensor, eps: float = 1e-3) -> Tensor:
    """Per-instance Dice loss ``(N,)``: ``1 - 2 sum(pt) / (sum(p^2) + sum(t^2))`` (SOLO's form).

    ``probs`` and ``targets`` are ``(N, H, W)`` in [0, 1] (targets may be soft).
    """
    p = probs.reshape(probs.shape[0], -1)
    t = targets.reshape(targets.shape[0], -1).to(p.dtype)
    inter = (p * t).sum(1)
    denom = (p * p).sum(1) + eps + (t * t).sum(1) + eps
    return 1.0 - 2.0 * inter / denom


def focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Summed sigmoid focal loss (torchvision) of ``logits (M, K)``.

    ``labels (M,)`` int64: ``0..K-1`` positive class, ``K`` background, ``-1`` ignored.
    """
    num_classes = logits.shape[1]
    valid = labels >= 0
    onehot = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes].to(logits.dtype)
    loss = sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="none")
    return (loss * valid[:, None].to(loss.dtype)).sum()


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes ``(N, 4)`` float32 of bool masks ``(N, H, W)``; right/bottom edges are
    exclusive (``x2 = last column + 1``); an empty mask gives ``(0, 0, 0, 0)``."""
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


# -- targets --------------------------------------------------------------------------------
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
