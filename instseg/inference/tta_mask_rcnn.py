"""Flip test-time augmentation and box refinement of a
:class:`~instseg.models.mask_rcnn.MaskRCNN`, through its public modules (``transform``,
``backbone``, ``rpn``, ``roi_heads``) and its raw-output type; the model knows nothing of it.

RoI-level flip TTA: the RPN proposes boxes on the unflipped image only; every view (the
image mirrored horizontally and/or vertically) then scores and regresses *the same* RoIs,
mirrored into that view. Class probabilities are averaged over views and the box deltas
(dx, dy mirrored back) are averaged too, so there is no merging of separate detection sets.
The final boxes are segmented in every view and the mask probabilities (mirrored back) are
averaged before pasting. ``box_refine`` extra passes re-pool the regressed boxes and
regress again (a test-time cascade with shared weights), averaging the class probabilities
of all passes.

Views should be flips the model was trained with (``--augment microscopy`` trains both
flips: use ``"hv"``; the default augmentation flips horizontally only: use ``"h"``).
Cost: one backbone pass per view (4x for ``"hv"``), one box-head pass per view and pass.

Images are float (3, H, W) in [0, 1]; boxes xyxy absolute pixels of the resized input.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import maskrcnn_inference
from torchvision.ops import boxes as box_ops

from instseg.models.mask_rcnn import MaskRCNN, MaskRCNNRaw

__all__ = ["augmented_raw", "mirror_boxes", "mirror_deltas"]

#: one view: (mirror x, mirror y)
View = tuple[bool, bool]


def mirror_boxes(boxes: Tensor, size: tuple[int, int], fx: bool, fy: bool) -> Tensor:
    """(N, 4) xyxy boxes of an (h, w) image -> the same boxes in the mirrored image."""
    h, w = size
    out = boxes.clone()
    if fx:
        out[:, [0, 2]] = w - boxes[:, [2, 0]]
    if fy:
        out[:, [1, 3]] = h - boxes[:, [3, 1]]
    return out


def mirror_deltas(deltas: Tensor, fx: bool, fy: bool) -> Tensor:
    """(R, C, 4) box deltas (dx, dy, dw, dh) predicted in a mirrored view -> the deltas of the
    unmirrored image (mirroring is its own inverse: the shifts change sign)."""
    out = deltas.clone()
    if fx:
        out[..., 0] = -out[..., 0]
    if fy:
        out[..., 1] = -out[..., 1]
    return out


def _box_pass(
    model: MaskRCNN,
    feats: list[dict[str, Tensor]],
    views: tuple[View, ...],
    rois: Tensor,
    size: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Mean class probabilities (R, K+1) and box deltas (R, (K+1)*4) of ``rois`` (R, 4)
    over ``views`` (deltas mirrored back into the unflipped image)."""
    rh = model.roi_heads
    probs, deltas = [], []
    for f, (fx, fy) in zip(feats, views):
        x = rh.box_head(rh.box_roi_pool(f, [mirror_boxes(rois, size, fx, fy)], [size]))
        logits, d = rh.box_predictor(x)
        probs.append(logits.softmax(-1))
        deltas.append(mirror_deltas(d.reshape(len(rois), -1, 4), fx, fy).reshape(len(rois), -1))
    return torch.stack(probs).mean(0), torch.stack(deltas).mean(0)


def _refine(
    model: MaskRCNN, probs: Tensor, deltas: Tensor, rois: Tensor, size: tuple[int, int]
) -> Tensor:
    """(R, 4) boxes regressed from ``rois`` for each RoI's most likely foreground class."""
    decoded = model.roi_heads.box_coder.decode(deltas, [rois])  # (R, K+1, 4)
    cls = probs[:, 1:].argmax(1) + 1
    boxes = decoded[torch.arange(len(rois), device=rois.device), cls]
    return box_ops.clip_boxes_to_image(boxes, size)


@torch.no_grad()
def _augmented_detections(
    model: MaskRCNN,
    image: Tensor,
    views: tuple[View, ...],
    box_refine: int,
    input_scale: float | None,
) -> tuple[dict[str, Tensor], tuple[int, int]]:
    """One image (3, H, W) -> torchvision-style detections in input coordinates (``boxes
    scores labels``, soft ``masks`` (N, 1, 28, 28)) and the input size. Eval mode only."""
    mirrored = []
    for fx, fy in views:
        dims = ([-1] if fx else []) + ([-2] if fy else [])
        mirrored.append(image.flip(dims) if dims else image)
    image_list, _ = model.transform.at_scale(input_scale)(mirrored)
    features = model.backbone(image_list.tensors)
    feats = [{k: v[i : i + 1] for k, v in features.items()} for i in range(len(views))]
    in_size = (int(image_list.image_sizes[0][0]), int(image_list.image_sizes[0][1]))
    first = type(image_list)(image_list.tensors[:1], [in_size])
    rois = model.rpn(first, feats[0])[0][0]
    probs, deltas = _box_pass(model, feats, views, rois, in_size)
    for k in range(box_refine):
        rois = _refine(model, probs, deltas, rois, in_size)
        p, deltas = _box_pass(model, feats, views, rois, in_size)
        probs = (probs * (k + 1) + p) / (k + 2)  # mean over all passes
    rh = model.roi_heads
    boxes, scores, labels = (
        t[0] for t in rh.postprocess_detections(probs.log(), deltas, [rois], [in_size])
    )
    masks = boxes.new_zeros((0, 1, 28, 28))
    if len(boxes):
        probs_per_view = []
        for f, (fx, fy) in zip(feats, views):
            pooled = rh.mask_roi_pool(f, [mirror_boxes(boxes, in_size, fx, fy)], [in_size])
            logits = rh.mask_predictor(rh.mask_head(pooled))
            dims = ([-1] if fx else []) + ([-2] if fy else [])
            probs_per_view.append(
                maskrcnn_inference(logits.flip(dims) if dims else logits, [labels])[0]
            )
        masks = torch.stack(probs_per_view).mean(0)
    return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks}, in_size


def augmented_raw(
    model: MaskRCNN,
    images: list[Tensor],
    views: tuple[View, ...],
    box_refine: int = 0,
    input_scale: float | None = None,
) -> MaskRCNNRaw:
    """:meth:`MaskRCNN.forward_raw` with flip views (the first one the image itself) and
    ``box_refine`` extra box-head passes; images are processed one at a time (all views of
    one image in one batch). ``model.postprocess`` turns the result into instances."""
    if box_refine < 0:
        raise ValueError(f"box_refine must be >= 0, got {box_refine}")
    device = next(model.parameters()).device
    dets, input_sizes = [], []
    with model.inference_modes():
        for im in images:
            det, in_size = _augmented_detections(
                model, im.to(device), views, box_refine, input_scale
            )
            dets.append(det)
            input_sizes.append(in_size)
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    return MaskRCNNRaw(dets, input_sizes, sizes)
