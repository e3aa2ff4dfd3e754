"""Flip test-time augmentation for :class:`~instseg.models.solov2.SOLOv2`, cell by cell.

Every view mirrors the *padded* input batch (``Hp``, ``Wp`` are multiples of 32, so the
mirror maps the cell grids and the mask-feature pixels exactly onto themselves) and its
outputs are mirrored back: the class probabilities of each level (the grid flipped), the
kernel operands re-indexed so that row ``c`` is the kernel the view predicted for the mirror
of cell ``c``, and the mask operands flipped spatially (a mask is a per-pixel product, so
flipping the features flips the mask). Class probabilities are averaged over views per cell
and a candidate's mask probability is the mean of its views' masks; the usual
post-processing (:func:`solov2_post.postprocess`) then runs once. There is no merging of
separate detection sets (as :mod:`mask_rcnn_tta` averages per RoI).

Views should be flips the model was trained with (``--augment microscopy`` trains both:
``"hv"``; the default augmentation flips horizontally only: ``"h"``). Cost: one network pass
per view (4x for ``"hv"``) and one candidate-mask matmul per view.

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
]


@dataclass
class ViewOutputs:
    """Network outputs of a batch under every view, in the unmirrored frame."""

    scores: Tensor  # (B, C, K) cell-class probabilities, mean over views (point NMS applied)
    quality: Tensor | None  # (B, C) predicted mask IoUs, mean over views (mask_quality models)
    kernels: list[Tensor]  # per view (B, C, E'') kernel operands of each unmirrored cell
    feats: list[Tensor]  # per view (B, E'', h, w) mask operands, flipped back
    cell_strides: Tensor  # (C,) min-area filter per cell
    sizes: list[tuple[int, int]]  # resized image sizes (before padding)


def _dims(fx: bool, fy: bool) -> list[int]:
    return ([-2] if fy else []) + ([-1] if fx else [])


def mirror_cells(shapes: list[tuple[int, int]], fx: bool, fy: bool, device: torch.device) -> Tensor:
    """``(C,)`` flat cell index (levels concatenated, ``r * cols + c`` within a level) of the
    mirror image of every cell of the grids ``shapes`` (its own inverse)."""
    out, offset = [], 0
    for r, c in shapes:
        idx = torch.arange(r * c, device=device).view(r, c)
        dims = _dims(fx, fy)
        out.append((idx.flip(dims) if dims else idx).reshape(-1) + offset)
        offset += r * c
    return torch.cat(out)


@torch.no_grad()
def augmented_outputs(model: SOLOv2, images: list[Tensor], flips: str) -> ViewOutputs:
    """Run ``model``'s network on ``images`` under the views of ``flips`` (``"none" "h" "v"
    "hv"``, :data:`ops.FLIPS`) and mirror the outputs back (see the module docstring)."""
    views = ops.check_flips(flips)
    batch, sizes = model._preprocess(images)
    padded = (int(batch.shape[-2]), int(batch.shape[-1]))
    shapes = model.grid_shapes(padded)
    prob_sum: list[Tensor] = []
    kernels, feats = [], []
    for fx, fy in views:
        dims = _dims(fx, fy)
        cates, kern, feat = model._forward(batch.flip(dims) if dims else batch)
        probs = [torch.sigmoid(c) for c in cates]
        if dims:
            probs = [p.flip(dims) for p in probs]
        prob_sum = probs if not prob_sum else [a + b for a, b in zip(prob_sum, probs)]
        # the prior's cell centers belong to the view's own cells: expand before re-indexing
        k, f = model._mask_operands(model._flatten(kern), feat)
        if dims:
            k, f = k[:, mirror_cells(shapes, fx, fy, k.device)], f.flip(dims)
        kernels.append(k)
        feats.append(f.contiguous())
    probs = [p / len(views) for p in prob_sum]
    scores, quality = model.cell_scores(probs)
    strides = model.cell_strides(padded, batch.device)
    return ViewOutputs(scores, quality, kernels, feats, strides, sizes)


def postprocess_views(
    out: ViewOutputs, images: list[Tensor], cfg: PostConfig
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """:func:`solov2_post.postprocess` of every image of ``out`` with thresholds ``cfg`` (the
    network outputs can be post-processed under several thresholds without rerunning it)."""
    return [
        postprocess(out.scores[b], [k[b] for k in out.kernels], [f[b] for f in out.feats],
                    out.cell_strides, out.sizes[b], img.shape[-2:], cfg,
                    None if out.quality is None else out.quality[b])
        for b, img in enumerate(images)
    ]  # fmt: skip


def detect_augmented(
    model: SOLOv2, images: list[Tensor], flips: str
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """:meth:`SOLOv2.detect` with flip TTA: per image ``(masks (N, H, W) bool, boxes (N, 4),
    labels (N,), scores (N,))`` in original coordinates. ``flips="none"`` equals ``detect``."""
    return postprocess_views(augmented_outputs(model, images, flips), images, model.post_config())
