"""SOLOv2 inference post-processing: the network's raw outputs -> instances.

Steps, as in the official SOLOv2 code: top ``nms_pre`` cells over the score threshold ->
masks ``sigmoid(kernel . mask_features)`` at 1/4 scale -> binary at ``mask_threshold``,
min-area (cell stride) filter, maskness rescoring -> Matrix NMS on the 1/4-scale binary masks
-> ``update_threshold``, top ``max_detections`` -> only those soft masks upsampled (one
bilinear step, mask-feature scale -> original size) and thresholded. :class:`SOLOv2Raw` may
hold several views' kernels and features
(flip test-time augmentation, :mod:`instseg.inference.tta`), mapped back to the image's cells
and pixels; a mask's probability is then the mean of the views' sigmoids.

Cost: candidates' masks exist only at 1/4 scale and only as bool (their float probabilities
are made in cache-sized row chunks, in place, and dropped; the kept masks' probabilities are
recomputed, <= max_detections rows); the IoU of Matrix NMS is an exact int8 matmul over its
upper triangle (:func:`nms.mask_iou_matrix`); only the kept masks are upsampled, a few at a
time into the output. Eager loops run over a config-sized number of chunks, never over data;
under tracing (ONNX export) whole-tensor equivalents are used instead, so
:meth:`SOLOv2.detect` still exports (tests check both paths agree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.masks import masks_to_boxes
from instseg.models.solov2 import nms

__all__ = [
    "MASK_STRIDE",
    "CACHE_BYTES",
    "CHUNK_PIXELS",
    "PostConfig",
    "SOLOv2Raw",
    "mean_probs",
    "matrix_nms_select",
    "paste_masks",
    "postprocess",
    "select_cells",
    "up_scale",
]

#: float elements per eager chunk (4 MiB: 64 candidate masks of 128 x 128, 4 output masks
#: of 512 x 512): temporaries stay cache-sized and are reused instead of page-faulted
CHUNK_PIXELS = 1 << 20
#: input pixels per mask-feature pixel
MASK_STRIDE = 4
#: largest candidate-probability cache ``postprocess(cache=...)`` keeps (float32 bytes)
CACHE_BYTES = 1 << 30


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


@dataclass
class SOLOv2Raw:
    """A batch's network outputs, ready for :func:`postprocess` (:meth:`SOLOv2.forward_raw`).

    ``kernels`` / ``feats`` hold one entry per view: one for a plain pass, several for flip
    test-time augmentation (each mapped back to the image's own cells and pixels)."""

    scores: Tensor  # (B, C, K) cell-class probabilities (point NMS applied; mean over views)
    kernels: list[Tensor]  # per view (B, C, E) kernel operands of each cell
    feats: list[Tensor]  # per view (B, E, h, w) mask operands at 1 / MASK_STRIDE of the input
    cell_strides: Tensor  # (C,) min-area filter value per cell
    sizes: list[tuple[int, int]]  # resized image sizes (before padding)
    image_sizes: list[tuple[int, int]]  # original image sizes (H, W)
    #: per image, candidate mask probabilities kept across :func:`postprocess` calls that change
    #: only ``mask_threshold`` (calibration); filled only when a caller asks for it
    caches: list[dict[str, Tensor]] = field(default_factory=list)


def _tracing() -> bool:
    """True while TorchScript traces or scripts (ONNX export): the eager-only fast paths
    (fused threshold, chunked upsampling) are then replaced by exportable equivalents."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def up_scale(cells: int, out: int, resized: int, stride: int = 4) -> float:
    """``stride * out / resized``, nudged up by ulps until ``floor(cells * scale) >= out``
    (the output size interpolate computes in double precision)."""
    scale = float(stride) * out / resized
    while math.floor(cells * scale) < out:
        scale = math.nextafter(scale, math.inf)
    return scale


def postprocess(
    scores: Tensor,
    kernels: Sequence[Tensor],
    mask_feats: Sequence[Tensor],
    cell_strides: Tensor,
    size: tuple[int, int],
    orig_size: tuple[int, int] | torch.Size,
    cfg: PostConfig,
    cache: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image: ``scores (C, K)`` (after the optional point NMS), per view ``kernels (C, E)``
    and ``mask_feats (E, h, w)`` (1/4 of the padded input; one view, or
    several for flip TTA, mirrored back to the image's cells and pixels: a mask's probability
    is the mean of the views' sigmoids), ``cell_strides (C,)`` (min-area filter), resized size
    ``size`` and original ``orig_size`` ``(H, W)`` -> bool masks ``(N, H, W)`` in original
    pixels, their xyxy boxes ``(N, 4)`` (:func:`instseg.masks.masks_to_boxes`), labels ``(N,)`` int64,
    scores ``(N,)`` descending. ``cache`` (a dict kept by the caller across calls on the same
    outputs with other mask thresholds, e.g. calibration): the candidates' mask probabilities
    are kept there and reused, the same values, not recomputed (up to ``CACHE_BYTES``)."""
    top_scores, cells, labels = select_cells(scores, cfg)
    kerns = [k[cells] for k in kernels]  # (M, E) per view
    binary, area, maskness = _candidate_masks(kerns, [_flat(f) for f in mask_feats], cfg, cache)
    order, sc = matrix_nms_select(
        binary, area, maskness, top_scores, labels, cell_strides[cells], mask_feats[0].shape[-2:], cfg
    )
    # only the kept masks' probabilities, at the mask features' scale
    soft = mean_probs([k[order] for k in kerns], [_flat(f) for f in mask_feats])
    masks = paste_masks(soft.view(-1, *mask_feats[0].shape[-2:]), size, orig_size, cfg)
    return masks, masks_to_boxes(masks), labels[order], sc


def _flat(feat: Tensor) -> Tensor:
    return feat.reshape(feat.shape[0], -1)


def mean_probs(kernels: Sequence[Tensor], feats: Sequence[Tensor]) -> Tensor:
    """Per view kernels ``(M, E)`` and flat features ``(E, hw)`` -> mask probabilities
    ``(M, hw)``: the views' mean of ``sigmoid(kernels @ feats)``."""
    probs = torch.sigmoid(kernels[0] @ feats[0])
    for k, f in zip(kernels[1:], feats[1:]):
        probs = probs + torch.sigmoid(k @ f)
    return probs / len(kernels) if len(kernels) > 1 else probs


def select_cells(scores: Tensor, cfg: PostConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Cell-class scores ``(C, K)`` -> the top ``nms_pre`` pairs over ``score_threshold``:
    ``(scores (M,), cells (M,), labels (M,))``."""
    num_classes = scores.shape[1]
    top_scores, top_idx = scores.reshape(-1).topk(min(cfg.nms_pre, scores.numel()))
    keep = top_scores > cfg.score_threshold
    top_scores, top_idx = top_scores[keep], top_idx[keep]
    return top_scores, top_idx // num_classes, top_idx % num_classes


def matrix_nms_select(
    binary: Tensor,
    area: Tensor,
    maskness: Tensor,
    scores: Tensor,
    labels: Tensor,
    min_area: Tensor,
    shape: tuple[int, int] | torch.Size,
    cfg: PostConfig,
) -> tuple[Tensor, Tensor]:
    """Candidates (binary masks ``(M, h*w)`` at 1/4 scale of ``shape (h, w)``, areas,
    maskness, cell scores, labels, min areas, all ``(M,)``) -> ``(order (N,), scores (N,))``:
    the kept candidates' indices, best first, and their rescored, decayed scores. Steps:
    min-area filter (area > cell stride), maskness rescoring, Matrix NMS, ``update_threshold``,
    top ``max_detections``."""
    fh, fw = int(shape[0]), int(shape[1])
    idx = torch.nonzero(area > min_area).reshape(-1)  # integer indices (exportable)
    sc = scores[idx] * maskness[idx]
    sc = nms.matrix_nms(
        binary[idx].view(-1, fh, fw), labels[idx], sc, cfg.nms_kernel, cfg.nms_sigma
    )
    keep = sc >= cfg.update_threshold
    sc, order = sc[keep].sort(descending=True)
    return idx[keep][order[: cfg.max_detections]], sc[: cfg.max_detections]


def paste_masks(
    soft: Tensor, size: tuple[int, int], orig_size: tuple[int, int] | torch.Size, cfg: PostConfig
) -> Tensor:
    """Kept soft masks ``(N, h, w)`` at 1/4 of the padded input -> bool
    ``(N, H, W)`` at the original size (crop to the resized ``size``, one bilinear step,
    ``> mask_threshold``)."""
    st = MASK_STRIDE
    h, w = int(orig_size[0]), int(orig_size[1])
    soft = soft[:, : math.ceil(size[0] / st), : math.ceil(size[1] / st)]
    scale = (up_scale(soft.shape[-2], h, size[0], st), up_scale(soft.shape[-1], w, size[1], st))
    if _tracing():
        masks = _upsample(torch.cat([soft, soft.new_zeros(1, *soft.shape[1:])]), scale, h, w, cfg)
        return masks[:-1]  # a dummy last mask keeps the input non-empty without a branch
    # eager: chunks of <= CHUNK_PIXELS floats, so the float temporaries stay small and are
    # reused by the allocator instead of page-faulting 100 x H x W x 4 fresh bytes each call
    # (about 2x faster upsampling on CPU); the chunk count depends on the config only
    masks = torch.empty(soft.shape[0], h, w, dtype=torch.bool, device=soft.device)
    step = max(1, CHUNK_PIXELS // max(h * w, 1))
    for i in range(0, min(cfg.max_detections, cfg.nms_pre), step):
        _upsample(soft[i : i + step], scale, h, w, cfg, out=masks[i : i + step])
    return masks


def _candidate_masks(
    kernels: Sequence[Tensor],
    feats: Sequence[Tensor],
    cfg: PostConfig,
    cache: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per view kernels ``(M, E)`` x features ``(E, hw)`` -> binary masks ``(M, hw)`` bool
    (mean probability ``> mask_threshold``, :func:`mean_probs`), areas ``(M,)`` and maskness
    ``(M,)`` (mean probability inside the mask). Eager: in row chunks of <= CHUNK_PIXELS, in
    place, so the (M, hw) float probabilities are never materialized (the chunk count depends
    on the config only), unless ``cache`` asks to keep them (:func:`postprocess`)."""
    m, hw = kernels[0].shape[0], feats[0].shape[1]
    if _tracing():  # exportable: whole tensors, no in-place ops, no threshold op
        probs = mean_probs(kernels, feats)
        binary = probs > cfg.mask_threshold
        area = binary.to(torch.int32).sum(1).to(probs.dtype)
        inside = torch.where(binary, probs, torch.zeros_like(probs)).sum(1)
        return binary, area, inside / area.clamp(min=1)
    device = feats[0].device
    binary = torch.empty(m, hw, dtype=torch.bool, device=device)
    area = torch.empty(m, device=device)
    inside = torch.empty(m, device=device)
    kept = cache.get("candidate_probs") if cache is not None else None
    if kept is not None and kept.shape != (m, hw):
        raise ValueError(f"cache holds {tuple(kept.shape)} probabilities, expected {(m, hw)}")
    fill = kept is None and cache is not None and m * hw * 4 <= CACHE_BYTES
    if fill:
        kept = cache["candidate_probs"] = torch.empty(m, hw, device=device)  # type: ignore[index]
    step = max(1, CHUNK_PIXELS // max(hw, 1))
    for i in range(0, cfg.nms_pre, step):  # M <= nms_pre rows; empty chunks are no-ops
        if kept is not None and not fill:
            probs = kept[i : i + step].clone()
        elif len(kernels) == 1:
            probs = torch.sigmoid_(kernels[0][i : i + step] @ feats[0])
        else:
            probs = mean_probs([k[i : i + step] for k in kernels], feats)
        if fill:
            kept[i : i + step] = probs  # type: ignore[index]
        torch.gt(probs, cfg.mask_threshold, out=binary[i : i + step])
        # bool -> uint8 view, int32 sum: a bool sum is ~50x slower on CPU
        area[i : i + step] = binary[i : i + step].view(torch.uint8).sum(1, dtype=torch.int32)
        inside[i : i + step] = F.threshold(probs, cfg.mask_threshold, 0.0, inplace=True).sum(1)
    return binary, area, inside / area.clamp(min=1)


def _upsample(
    soft: Tensor,
    scale: tuple[float, float],
    h: int,
    w: int,
    cfg: PostConfig,
    out: Tensor | None = None,
) -> Tensor:
    """Soft masks ``(N, h', w')`` at stride ``s`` (cropped to the resized image) -> bool
    ``(N, H, W)`` at the original size (into ``out`` if given), in one interpolation step:
    original pixel ``(y + 0.5)`` samples the mask grid at ``(y + 0.5) * resized / (s *
    original)``, then ``> mask_threshold`` (the paper's order: threshold after upsampling)."""
    up = F.interpolate(
        soft[:, None], scale_factor=scale, mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )  # fmt: skip
    if out is None:
        return up[:, 0, :h, :w] > cfg.mask_threshold
    return torch.gt(up[:, 0, :h, :w], cfg.mask_threshold, out=out)


def postprocess_batch(
    raw: SOLOv2Raw, cfg: PostConfig, cache: bool = False
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """:func:`postprocess` of every image of ``raw`` -> per image ``(masks (N, H, W) bool,
    boxes (N, 4), labels (N,), scores (N,))``. ``cache``: keep the candidates' mask
    probabilities in ``raw.caches`` and reuse them (several calls that change only
    ``mask_threshold``)."""
    if cache and len(raw.caches) != len(raw.sizes):
        raw.caches = [{} for _ in raw.sizes]
    return [
        postprocess(raw.scores[b], [k[b] for k in raw.kernels], [f[b] for f in raw.feats],
                    raw.cell_strides, raw.sizes[b], raw.image_sizes[b], cfg,
                    raw.caches[b] if cache else None)
        for b in range(len(raw.sizes))
    ]  # fmt: skip
