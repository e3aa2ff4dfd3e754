"""Interop with torchvision's own Mask R-CNN checkpoints (e.g. ``maskrcnn_resnet50_fpn``
COCO weights downloaded elsewhere): the exact torchvision layout as a zoo variant, and a
loader that gives the same detections as torchvision's model."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from instseg.errors import DataError
from instseg.models.common.backbones import resnet_fpn
from instseg.models.mask_rcnn.model import MaskRCNN, _json_config


def maskrcnn_r50_fpn_torchvision(
    num_classes: int = 90, pretrained: str = "none", **overrides: Any
) -> MaskRCNN:
    """Exactly torchvision's ``maskrcnn_resnet50_fpn`` (FrozenBN ResNet-50, FPN without norm,
    TwoMLPHead, 4 x 256 mask head, 800/1333 input): its state dicts load with ``strict=True``.
    ``num_classes`` counts foreground classes (torchvision's ``num_classes`` minus 1);
    ``pretrained`` (``"imagenet"``, ``"none"`` or a torchvision ResNet-50 weights file)
    initialises the backbone, as ``weights_backbone=`` does (not part of ``config``)."""
    body = resnet_fpn("resnet50", "frozen_bn", 2, 256, trainable_layers=3, pretrained=pretrained)
    model = MaskRCNN(body, num_classes, **overrides)
    model.config = _json_config("maskrcnn_r50_fpn_torchvision", num_classes, overrides)
    return model


def load_torchvision_maskrcnn(
    path_or_state_dict: str | Path | dict[str, Tensor],
    num_classes: int | None = None,
    **overrides: Any,
) -> MaskRCNN:
    """Load a torchvision ``maskrcnn_resnet50_fpn`` checkpoint (a state dict, or a dict with a
    ``"model"`` state dict as torchvision's reference scripts save) into our ``MaskRCNN``.

    ``num_classes`` is torchvision's count *including* background (91 for COCO); ``None``
    reads it from the checkpoint. Our labels are torchvision's minus 1 (COCO: 0 = person).
    ``overrides`` as for :func:`maskrcnn_r50_fpn_torchvision` (e.g. ``score_threshold``).
    """
    source = "<state_dict>"
    state: Any = path_or_state_dict
    if not isinstance(state, dict):
        source = str(path_or_state_dict)
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError) as err:
            raise DataError(source, None, f"cannot read checkpoint: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    key = "roi_heads.box_predictor.cls_score.weight"
    if not isinstance(state, dict) or key not in state:
        raise DataError(source, key, "not a torchvision Mask R-CNN state dict (key missing)")
    found = int(state[key].shape[0])
    if num_classes is not None and num_classes != found:
        raise DataError(source, key, f"checkpoint has {found} classes, num_classes={num_classes}")
    model = maskrcnn_r50_fpn_torchvision(found - 1, **overrides)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = " ".join(str(err).split())[:300]
        raise DataError(source, None, f"does not match maskrcnn_resnet50_fpn: {msg}") from None
    return model.eval()
