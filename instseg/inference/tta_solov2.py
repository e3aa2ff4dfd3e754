"""Flip test-time augmentation of a :class:`~instseg.models.solov2.SOLOv2`, cell by cell,
through the model's public tensor API (``preprocess``, ``network``, ``mask_operands``,
``cell_scores``, ``flatten``, ``grid_shapes``, ``cell_strides``); the model knows nothing of it.

Every view mirrors the *padded* input batch (``Hp``, ``Wp`` are multiples of 32, so the
mirror maps the cell grids and the mask-feature pixels exactly onto themselves), and its
outputs are mapped back: the class probabilities of each level (the grid mirrored), the
kernel operands re-indexed so that row ``c`` is the kernel the view predicted for the mirror
image of cell ``c``, and the mask operands mirrored spatially (a mask is a per-pixel product,
so mirroring the features mirrors the mask). Class probabilities are averaged over views per
cell and a candidate's mask probability is the mean of its views' masks; the usual
post-processing then runs once. There is no merging of separate detection sets.

Views should be flips the model was trained with (``--augment microscopy`` trains both flips:
``"hv"``; the default augmentation flips horizontally only: ``"h"``). Cost: one network pass
per view (4x for ``"hv"``) and one candidate-mask matmul per view.

Images are float ``(3, H, W)`` in [0, 1]; outputs as :meth:`SOLOv2.forward_raw`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instseg.models.solov2 import SOLOv2, SOLOv2Raw

__all__ = ["augmented_raw", "mirror", "mirror_cells"]


def mirror(x: Tensor, fx: bool, fy: bool) -> Tensor:
    """``(..., H, W)`` mirrored along W (``fx``) and / or H (``fy``); its own inverse."""
    dims = ([-2] if fy else []) + ([-1] if fx else [])
    return x.flip(dims) if dims else x


def mirror_cells(shapes: list[tuple[int, int]], fx: bool, fy: bool, device: torch.device) -> Tensor:
    """``(C,)`` flat index (levels concatenated, ``r * cols + c`` within a level) of the mirror
    image of every cell of the grids ``shapes`` (its own inverse)."""
    out, offset = [], 0
    for r, c in shapes:
        idx = torch.arange(r * c, device=device).view(r, c)
        out.append(mirror(idx, fx, fy).reshape(-1) + offset)
        offset += r * c
    return torch.cat(out)


@torch.no_grad()
def augmented_raw(
    model: SOLOv2,
    images: list[Tensor],
    views: tuple[tuple[bool, bool], ...],
    input_scale: float | None = None,
) -> SOLOv2Raw:
    """Run ``model``'s network on ``images`` under every ``(mirror x, mirror y)`` view and map
    the outputs back (module docstring) -> one :class:`SOLOv2Raw` with a kernel and feature
    operand per view (``model.postprocess`` averages their masks)."""
    batch, sizes = model.preprocess(images, input_scale)
    padded = (int(batch.shape[-2]), int(batch.shape[-1]))
    shapes = model.grid_shapes(padded)
    prob_sum: list[Tensor] = []
    kernels, feats = [], []
    for fx, fy in views:
        cates, kern, feat = model.network(mirror(batch, fx, fy))
        probs = [mirror(torch.sigmoid(c), fx, fy) for c in cates]
        prob_sum = probs if not prob_sum else [a + b for a, b in zip(prob_sum, probs)]
        # the prior's cell centers belong to the view's own cells: expand before re-indexing
        k, f = model.mask_operands(model.flatten(kern), feat)
        if fx or fy:
            k, f = k[:, mirror_cells(shapes, fx, fy, k.device)], mirror(f, fx, fy)
        kernels.append(k)
        feats.append(f.contiguous())
    scores = model.cell_scores([p / len(kernels) for p in prob_sum])
    strides = model.cell_strides(padded, batch.device)
    originals = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    return SOLOv2Raw(scores, kernels, feats, strides, sizes, originals)
