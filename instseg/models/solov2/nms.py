"""Non-maximum suppression of SOLOv2: Matrix NMS on mask IoUs (an exact int8 matmul on
the CPU) and the 2x2 point NMS on cell scores. Vectorized, no loops over data, so they
trace and export. Masks are ``(N, H, W)`` bool."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mask_iou_matrix", "matrix_nms", "points_nms"]


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
    iou_fn: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Matrix NMS (SOLOv2, Wang et al. 2020): decayed scores ``(N,)`` in the input order.

    For candidate ``j``, with ``i`` ranging over same-class candidates of higher score,
    ``decay_j = min(1, min_i f(iou_ij) / f(max_{k: s_k > s_i} iou_ki))`` where
    ``f(x) = exp(-sigma x^2)`` (gaussian) or ``1 - x`` (linear); equal scores rank in any
    order. ``masks (N, H, W)`` bool or soft, ``labels (N,)`` int, ``scores (N,)``.
    ``iou_fn(masks in score order) -> (N, N)`` IoU, at least on and above the diagonal
    (default :func:`mask_iou_matrix`; export passes an integer-matmul one).
    """
    n = scores.shape[0]
    if n == 0:
        return scores.clone()
    order = scores.argsort(descending=True)  # not stable=True: ONNX has no stable sort
    ranked = masks[order]
    # only i ranked above j is used
    iou = mask_iou_matrix(ranked, upper=True) if iou_fn is None else iou_fn(ranked)
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
