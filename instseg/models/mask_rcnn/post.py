"""Mask R-CNN's raw outputs and their post-processing: torchvision's detections (soft
28 x 28 masks of the detected class, boxes in network-input pixels) -> ``Instances`` in the
original image's pixels, masks pasted and thresholded."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import resize_boxes

from instseg.structures import Instances

__all__ = ["MaskPostConfig", "MaskRCNNRaw", "paste_detections"]


@dataclass(frozen=True)
class MaskPostConfig:
    """Mask post-processing of :meth:`MaskRCNN.postprocess` (the score threshold and the
    detection cap act earlier, in the RoI heads)."""

    mask_threshold: float = 0.5
    mask_scoring: bool = False  # score x mean mask probability inside the mask
    mask_chunk: int = 32  # masks pasted at a time


@dataclass
class MaskRCNNRaw:
    """A batch's detections before mask pasting (:meth:`MaskRCNN.forward_raw`): per image
    torchvision's dict (``boxes`` xyxy in network-input pixels, ``scores``, ``labels`` 1..K,
    soft ``masks`` (N, 1, 28, 28) of the detected class), the network-input and original
    sizes."""

    detections: list[dict[str, Tensor]]
    input_sizes: list[tuple[int, int]]
    image_sizes: list[tuple[int, int]]


def paste_detections(
    det: dict[str, Tensor], in_size: tuple[int, int], size: tuple[int, int], cfg: MaskPostConfig
) -> Instances:
    """torchvision's detections of one image (input coordinates, soft (N, 1, 28, 28) masks)
    -> ``Instances`` in the original ``size``, masks pasted and thresholded, scores
    descending (times the mask confidence with ``mask_scoring``)."""
    boxes = resize_boxes(det["boxes"], in_size, size)
    scores, soft, chunk = det["scores"], det["masks"], cfg.mask_chunk
    masks = torch.zeros((len(boxes), *size), dtype=torch.bool)
    confidence = torch.ones_like(scores)
    for i in range(0, len(boxes), chunk):
        pasted = paste_masks_in_image(soft[i : i + chunk], boxes[i : i + chunk], size)[:, 0]
        binary = pasted > cfg.mask_threshold
        if cfg.mask_scoring:
            inside = (pasted * binary).flatten(1).sum(1)
            confidence[i : i + chunk] = inside / binary.flatten(1).sum(1).clamp(min=1)
        masks[i : i + chunk] = binary.cpu()
    scores = scores * confidence
    order = torch.sort(scores, descending=True, stable=True).indices.cpu()
    if not torch.equal(order, torch.arange(len(order))):  # torchvision's order is kept
        masks = masks[order]  # unless mask scores reorder: only then copy the stack
    return Instances(
        image_size=size,
        boxes=boxes[order].cpu(),
        labels=(det["labels"][order] - 1).cpu(),
        scores=scores[order].cpu(),
        masks=masks,
    )
