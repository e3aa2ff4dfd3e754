"""Flip and transpose test-time augmentation for :class:`~instseg.models.solov2.SOLOv2`,
cell by cell.

Every view mirrors the *padded* input batch (``Hp``, ``Wp`` are multiples of 32, so the
mirror maps the cell grids and the mask-feature pixels exactly onto themselves), and in the
``"hvt"`` set also transposes it (swaps H and W: a grid of ``rows x cols`` cells becomes
``cols x rows``, cell ``(r, c)`` becomes ``(c, r)``), and its outputs are mapped back: the
class probabilities of each level (the grid mirrored / transposed), the kernel operands
re-indexed so that row ``c`` is the kernel the view predicted for the image of cell ``c``,
and the mask operands mirrored / transposed spatially (a mask is a per-pixel product, so
mapping the features maps the mask). Class probabilities are averaged over views per cell
and a candidate's mask probability is the mean of its views' masks; the usual
post-processing (:func:`solov2_post.postprocess`) then runs once. There is no merging of
separate detection sets (as :mod:`mask_rcnn_tta` averages per RoI).

Views should be symmetries the model was trained with or that the objects have (``--augment
microscopy`` trains both flips: ``"hv"``; the default augmentation flips horizontally only:
``"h"``; ``"hvt"`` adds the transposes, for objects without a preferred orientation such as
nuclei). Cost: one network pass per view (4x for ``"hv"``, 8x for ``"hvt"``) and one
candidate-mask matmul per view.

Images are float ``(3, H, W)`` in [0, 1]; outputs as :meth:`SOLOv2.detect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from instseg.models import ops
from instseg.models.solov2_post import PostConfig, postprocess

if TYPE_CHECKING:
    from instseg.models.solov2 import SOLOv2

__all__ = [
    "ViewOutputs",
    "augmented_outputs",
    "detect_augmented",
    "mirror_cells",
    "postprocess_views",
    "view_cells",
]


@dataclass
class ViewOutputs:
    """Network outputs of a batch under every view, mapped back to the image's own frame."""

    scores: Tensor  # (B, C, K) cell-class probabilities, mean over views (point NMS applied)
    quality: Tensor | None  # (B, C) predicted mask IoUs, mean over views (mask_quality models)
    kernels: list[Tensor]  # per view (B, C, E'') kernel operands of each image cell
    feats: list[Tensor]  # per view (B, E'', h, w) mask operands, mapped back
    cell_strides: Tensor  # (C,) min-area filter per cell
    sizes: list[tuple[int, int]]  # resized image sizes (before padding)


def _dims(fx: bool, fy: bool) -> list[int]:
    return ([-2] if fy else []) + ([-1] if fx else [])


def to_view(x: Tensor, fx: bool, fy: bool, t: bool) -> Tensor:
    """``(..., H, W)`` -> the view: mirrored (``fx`` along W, ``fy`` along H), then
    transposed (``t``) -> ``(..., W, H)``."""
    dims = _dims(fx, fy)
    x = x.flip(dims) if dims else x
    return x.transpose(-2, -1) if t else x


def from_view(x: Tensor, fx: bool, fy: bool, t: bool) -> Tensor:
    """The inverse of :func:`to_view`: un-transposed, then mirrored back."""
    x = x.transpose(-2, -1) if t else x
    dims = _dims(fx, fy)
    return x.flip(dims) if dims else x


def view_cells(
    shapes: list[tuple[int, int]], fx: bool, fy: bool, t: bool, device: torch.device
) -> Tensor:
    """``(C,)`` flat index in the view's grids (levels concatenated, ``r * cols + c`` within
    a level; a transposed view's level has ``cols x rows`` cells) of the image under the view
    (:func:`to_view`) of every cell of the grids ``shapes``."""
    out, offset = [], 0
    for r, c in shapes:
        idx = torch.arange(r * c, device=device).view((c, r) if t else (r, c))
        out.append(from_view(idx, fx, fy, t).reshape(-1) + offset)
        offset += r * c
    return torch.cat(out)


def mirror_cells(shapes: list[tuple[int, int]], fx: bool, fy: bool, device: torch.device) -> Tensor:
    """``(C,)`` flat index of the mirror image of every cell of the grids ``shapes`` (its
    own inverse): :func:`view_cells` without transpose."""
    return view_cells(shapes, fx, fy, False, device)


@torch.no_grad()
def augmented_outputs(model: SOLOv2, images: list[Tensor], views: str) -> ViewOutputs:
    """Run ``model``'s network on ``images`` under the views of ``views`` (``"none" "h" "v"
    "hv" "hvt"``, :func:`ops.check_views`) and map the outputs back (module docstring)."""
    batch, sizes = model._preprocess(images)
    padded = (int(batch.shape[-2]), int(batch.shape[-1]))
    shapes = model.grid_shapes(padded)
    prob_sum: list[Tensor] = []
    kernels, feats = [], []
    for fx, fy, t in ops.check_views(views):
        cates, kern, feat = model._forward(to_view(batch, fx, fy, t))
        probs = [from_view(torch.sigmoid(c), fx, fy, t) for c in cates]
        prob_sum = probs if not prob_sum else [a + b for a, b in zip(prob_sum, probs)]
        # the prior's cell centers belong to the view's own cells: expand before re-indexing
        k, f = model._mask_operands(model._flatten(kern), feat)
        if fx or fy or t:
            k, f = k[:, view_cells(shapes, fx, fy, t, k.device)], from_view(f, fx, fy, t)
        kernels.append(k)
        feats.append(f.contiguous())
    probs = [p / len(kernels) for p in prob_sum]
    scores, quality = model.cell_scores(probs)
    strides = model.cell_strides(padded, batch.device)
    return ViewOutputs(scores, quality, kernels, feats, strides, sizes)


def postprocess_views(
    out: ViewOutputs,
    images: list[Tensor],
    cfg: PostConfig,
    caches: list[dict[str, Tensor]] | None = None,
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """:func:`solov2_post.postprocess` of every image of ``out`` with thresholds ``cfg`` (the
    network outputs can be post-processed under several thresholds without rerunning it;
    ``caches``, one dict per image kept across such calls, saves recomputing the candidates'
    mask probabilities when only ``mask_threshold`` changes)."""
    return [
        postprocess(out.scores[b], [k[b] for k in out.kernels], [f[b] for f in out.feats],
                    out.cell_strides, out.sizes[b], img.shape[-2:], cfg,
                    None if out.quality is None else out.quality[b],
                    None if caches is None else caches[b])
        for b, img in enumerate(images)
    ]  # fmt: skip


def detect_augmented(
    model: SOLOv2, images: list[Tensor], views: str
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """:meth:`SOLOv2.detect` with TTA: per image ``(masks (N, H, W) bool, boxes (N, 4),
    labels (N,), scores (N,))`` in original coordinates. ``views="none"`` equals ``detect``."""
    return postprocess_views(augmented_outputs(model, images, views), images, model.post_config())
