"""SOLOv2 inference post-processing of one image (what :meth:`SOLOv2.detect` runs per image).

Steps, as in the official SOLOv2 code: top ``nms_pre`` cells over the score threshold ->
masks ``sigmoid(kernel . mask_features)`` at 1/4 scale -> binary at ``mask_threshold``,
min-area (cell stride) filter, maskness rescoring -> Matrix NMS on the 1/4-scale binary masks
-> ``update_threshold``, top ``max_detections`` -> only those soft masks upsampled (one
bilinear step, 1/4 scale -> original size) and thresholded.

Cost notes (CPU): every candidate's mask lives only at 1/4 scale; the big tensors are indexed
once with integer indices (no boolean-mask copies of all candidates); only the kept masks are
upsampled. Fixed-size top-k, then masked/boolean tensor ops only: no Python loops over data,
so :meth:`SOLOv2.detect` traces and exports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.models import ops

__all__ = ["CHUNK_PIXELS", "PostConfig", "postprocess", "up_scale"]

#: output pixels upsampled at a time in eager mode (8 masks of 512 x 512)
CHUNK_PIXELS = 1 << 21


@dataclass(frozen=True)
class PostConfig:
    """Inference thresholds (SOLOv2 paper defaults in :class:`SOLOv2`)."""

    score_threshold: float = 0.1
    mask_threshold: float = 0.5
    nms_pre: int = 500
    update_threshold: float = 0.05
    max_detections: int = 100
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0


def up_scale(cells: int, out: int, resized: int) -> float:
    """``4 * out / resized``, nudged up by ulps until ``floor(cells * scale) >= out`` (the
    output size interpolate computes in double precision)."""
    scale = 4.0 * out / resized
    while math.floor(cells * scale) < out:
        scale = math.nextafter(scale, math.inf)
    return scale


def postprocess(
    scores: Tensor,
    kernels: Tensor,
    mask_feat: Tensor,
    cell_strides: Tensor,
    size: tuple[int, int],
    orig_size: tuple[int, int] | torch.Size,
    cfg: PostConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image: ``scores (C, K)`` (after point NMS), ``kernels (C, E)``, ``mask_feat
    (E, h, w)`` (1/4 of the padded input), ``cell_strides (C,)``, resized size ``size`` and
    original ``orig_size`` ``(H, W)`` -> bool masks ``(N, H, W)`` in original pixels, their
    xyxy boxes ``(N, 4)`` (:func:`ops.mask_boxes`), labels ``(N,)`` int64, scores ``(N,)``
    descending."""
    num_classes = scores.shape[1]
    fh, fw = int(mask_feat.shape[-2]), int(mask_feat.shape[-1])
    top_scores, top_idx = scores.reshape(-1).topk(min(cfg.nms_pre, scores.numel()))
    keep = top_scores > cfg.score_threshold
    top_scores, top_idx = top_scores[keep], top_idx[keep]
    cells, labels = top_idx // num_classes, top_idx % num_classes
    probs = torch.sigmoid(kernels[cells] @ mask_feat.reshape(mask_feat.shape[0], -1))  # (M, hw)
    binary = probs > cfg.mask_threshold
    # uint8 -> int32 sum: a bool sum is ~50x slower on CPU
    area = binary.to(torch.uint8).sum(1, dtype=torch.int32).to(probs.dtype)
    maskness = (probs * binary).sum(1) / area.clamp(min=1)
    # min-area filter as integer indices: the (M, hw) tensors are gathered, not mask-copied
    idx = torch.nonzero(area > cell_strides[cells]).reshape(-1)
    sc = top_scores[idx] * maskness[idx]
    sc = ops.matrix_nms(binary[idx].view(-1, fh, fw), labels[idx], sc, cfg.nms_kernel, cfg.nms_sigma)
    keep = sc >= cfg.update_threshold
    sc, order = sc[keep].sort(descending=True)
    order = idx[keep][order[: cfg.max_detections]]
    sc, labels = sc[: cfg.max_detections], labels[order]
    h, w = int(orig_size[0]), int(orig_size[1])
    soft = probs[order].view(-1, fh, fw)[:, : math.ceil(size[0] / 4), : math.ceil(size[1] / 4)]
    scale = (up_scale(soft.shape[-2], h, size[0]), up_scale(soft.shape[-1], w, size[1]))
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        masks = _upsample(torch.cat([soft, soft.new_zeros(1, *soft.shape[1:])]), scale, h, w, cfg)
        masks = masks[:-1]  # a dummy last mask keeps the input non-empty without a branch
        return masks, ops.mask_boxes(masks), labels, sc
    # eager: chunks of <= CHUNK_PIXELS floats, so the float temporaries stay small and are
    # reused by the allocator instead of page-faulting 100 x H x W x 4 fresh bytes each call
    # (2x faster on CPU); the chunk count depends on the config only
    masks = torch.empty(soft.shape[0], h, w, dtype=torch.bool, device=soft.device)
    boxes = torch.empty(soft.shape[0], 4, device=soft.device)
    step = max(1, CHUNK_PIXELS // max(h * w, 1))
    for i in range(0, cfg.max_detections, step):
        chunk = _upsample(soft[i : i + step], scale, h, w, cfg)
        masks[i : i + step] = chunk
        boxes[i : i + step] = ops.mask_boxes(chunk)
    return masks, boxes, labels, sc


def _upsample(
    soft: Tensor, scale: tuple[float, float], h: int, w: int, cfg: PostConfig
) -> Tensor:
    """Soft 1/4-scale masks ``(N, h', w')`` (cropped to the resized image) -> bool ``(N, H, W)``
    at the original size, in one bilinear step: original pixel ``(y + 0.5)`` samples the 1/4
    grid at ``(y + 0.5) * resized / (4 * original)``, then ``> mask_threshold`` (as the paper)."""
    up = F.interpolate(
        soft[:, None],
        scale_factor=scale,
        mode="bilinear",
        align_corners=False,
        recompute_scale_factor=False,
    )
    return up[:, 0, :h, :w] > cfg.mask_threshold
