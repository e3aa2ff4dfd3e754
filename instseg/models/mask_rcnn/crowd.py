"""Crowd-aware target assignment for Mask R-CNN's RPN and RoI heads (torchvision subclasses).

Crowd regions (``target["crowd_boxes"]``, xyxy) are ignored, as COCO's evaluation ignores
them: anchors / proposals lying mostly inside one (intersection over their own area >=
``crowd_ioa_threshold``) are neither positives nor negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_area

__all__ = ["CrowdAwareRPN", "CrowdAwareRoIHeads"]


def _ioa(boxes: Tensor, crowd: Tensor) -> Tensor:
    """Intersection over the area of ``boxes`` (N, 4) with ``crowd`` (M, 4) -> (N, M)."""
    lt = torch.max(boxes[:, None, :2], crowd[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], crowd[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1] / box_area(boxes)[:, None].clamp(min=1e-6)


class CrowdAwareRPN(RegionProposalNetwork):
    """RPN whose negatives exclude anchors inside crowd boxes (``target["crowd_boxes"]``)."""

    crowd_ioa_threshold: float = 0.5

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        labels, matched = super().assign_targets_to_anchors(anchors, targets)
        for lab, anchors_img, target in zip(labels, anchors, targets):
            crowd = target.get("crowd_boxes")
            if crowd is not None and crowd.numel() > 0:
                inside = _ioa(anchors_img, crowd).amax(dim=1) >= self.crowd_ioa_threshold
                lab[inside & (lab == 0)] = -1.0
        return labels, matched


class CrowdAwareRoIHeads(RoIHeads):
    """RoI heads whose background proposals exclude those inside crowd boxes."""

    crowd_ioa_threshold: float = 0.5
    _crowd: list[Tensor | None] | None = None

    def select_training_samples(  # type: ignore[override]
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]] | None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        self._crowd = [t.get("crowd_boxes") for t in targets] if targets is not None else None
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._crowd = None

    def assign_targets_to_proposals(  # type: ignore[override]
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        matched, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for i, (props, lab) in enumerate(zip(proposals, labels)):
            crowd = self._crowd[i] if self._crowd is not None else None
            if crowd is not None and crowd.numel() > 0:
                inside = _ioa(props, crowd).amax(dim=1) >= self.crowd_ioa_threshold
                lab[inside & (lab == 0)] = -1
        return matched, labels
