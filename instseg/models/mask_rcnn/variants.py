"""The Mask R-CNN variants of the zoo: GroupNorm FPN and heads on a GroupNorm backbone trained
from scratch, or on an ImageNet MobileNetV2 with frozen BatchNorm.

``maskrcnn_r18_fpn`` / ``maskrcnn_mnv3_fpn`` (CPU), ``maskrcnn_r50_fpn`` (GPU) and
``maskrcnn_mnv2_fpn`` (ImageNet backbone) are :class:`instseg.models.mask_rcnn.MaskRCNN` with
the architecture of ``GN_VARIANTS[name]``; ``build_gn_maskrcnn`` builds any other combination.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead as ConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from instseg.models.common.backbones import (
    group_norm,
    mobilenet_v2_fpn,
    mobilenet_v3_fpn,
    resnet_fpn,
)
from instseg.models.mask_rcnn.model import MaskRCNN, _json_config

__all__ = [
    "GN_VARIANTS",
    "build_gn_maskrcnn",
    "maskrcnn_mnv2_fpn",
    "maskrcnn_mnv3_fpn",
    "maskrcnn_r18_fpn",
    "maskrcnn_r50_fpn",
]


# -- variants ---------------------------------------------------------------------------------
#: architecture defaults of the from-scratch (GroupNorm everywhere) variants; any key, and any
#: ``MaskRCNN`` argument, can be overridden through ``build_model(name, K, **overrides)``.
GN_VARIANTS: dict[str, dict[str, Any]] = {
    "maskrcnn_r50_fpn": {"backbone": "resnet50", "fpn_channels": 256, "box_convs": 4,
                         "box_fc": 1024, "mask_convs": 4, "min_size": 800, "max_size": 1333,
                         "mask_scoring": True},
    # CPU variants: a 2fc box head on 256 RoIs/image (the 2-conv head on 512 RoIs was half
    # of all training FLOPs), 2-conv GN mask head. All: mask scoring (docs/experiments.md)
    "maskrcnn_r18_fpn": {"backbone": "resnet18", "fpn_channels": 128, "box_convs": 0,
                         "box_fc": 512, "mask_convs": 2, "min_size": 512, "max_size": 853,
                         "box_batch_size_per_image": 256, "mask_scoring": True},
    "maskrcnn_mnv3_fpn": {"backbone": "mobilenet_v3", "fpn_channels": 96, "box_convs": 0,
                          "box_fc": 512, "mask_convs": 2, "min_size": 512, "max_size": 853,
                          "box_batch_size_per_image": 256, "mask_scoring": True},
    # ImageNet MobileNetV2 (frozen BatchNorm), plain FPN, the CPU variants' GN heads; the stem
    # and stride-4/8 stages frozen as torchvision does (trainable_backbone_layers=3): 17-20%
    # cheaper CPU steps (bench/README.md)
    "maskrcnn_mnv2_fpn": {"backbone": "mobilenet_v2", "trainable_layers": 3, "fpn_channels": 128, "box_convs": 0,
                          "box_fc": 512, "mask_convs": 2, "min_size": 512, "max_size": 853,
                          "box_batch_size_per_image": 256, "mask_scoring": True},
}  # fmt: skip


def build_gn_maskrcnn(
    name: str,
    num_classes: int,
    *,
    backbone: str = "resnet18",
    min_level: int = 2,
    fpn_channels: int = 128,
    width_mult: float = 1.0,
    box_convs: int = 2,
    box_fc: int = 512,
    mask_convs: int = 2,
    pretrained: str = "none",
    trainable_layers: int = 6,
    **model_kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN with GroupNorm heads: GN backbone trained from scratch (``resnet18/34/50/101``
    or ``mobilenet_v3``) and GN FPN on ``P{min_level}..P6``, or ``mobilenet_v2`` with frozen
    BatchNorm, ``pretrained`` weights (``"imagenet"``, ``"none"``, a file), its top
    ``trainable_layers`` stages trained (:func:`mobilenet_v2_fpn`) and a plain FPN;
    GN conv box head (``box_convs`` x 3x3 + one fc of ``box_fc``; ``box_convs=0``: two fc), GN
    mask head (``mask_convs`` x 3x3), all ``fpn_channels`` wide."""
    if pretrained != "none" and backbone != "mobilenet_v2":
        raise ValueError(f"pretrained={pretrained!r}: only the mobilenet_v2 backbone has weights")
    if backbone == "mobilenet_v2":
        body = mobilenet_v2_fpn(pretrained, "frozen_bn", min_level, fpn_channels, trainable_layers)
    elif backbone == "mobilenet_v3":
        body = mobilenet_v3_fpn(width_mult, "gn", min_level, fpn_channels)
    else:
        body = resnet_fpn(backbone, "gn", min_level, fpn_channels)
    c = fpn_channels
    fcs = [box_fc] if box_convs else [box_fc, box_fc]
    box_head = ConvFCHead((c, 7, 7), [c] * box_convs, fcs, norm_layer=group_norm)
    mask_head = MaskRCNNHeads(c, [c] * mask_convs, 1, norm_layer=group_norm)
    model = MaskRCNN(
        body, num_classes, box_head=box_head, box_head_dim=box_fc, mask_head=mask_head,
        mask_head_dim=c, **model_kwargs,
    )  # fmt: skip
    predictor = model.roi_heads.box_predictor
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    return model


def _gn_variant(
    name: str, num_classes: int, overrides: dict[str, Any], pretrained: str = "none"
) -> MaskRCNN:
    """Zoo variant ``name``; ``pretrained`` weights are not part of its ``config`` (a
    checkpoint rebuilt from the config loads its own weights)."""
    kwargs = {**GN_VARIANTS[name], **overrides}
    model = build_gn_maskrcnn(name, num_classes, pretrained=pretrained, **kwargs)
    model.config = _json_config(name, num_classes, overrides)
    return model


def maskrcnn_r50_fpn(num_classes: int, **overrides: Any) -> MaskRCNN:
    """ResNet-50-FPN, GroupNorm everywhere, 4conv1fc box head, 256 channels (GPU)."""
    return _gn_variant("maskrcnn_r50_fpn", num_classes, overrides)


def maskrcnn_r18_fpn(num_classes: int, **overrides: Any) -> MaskRCNN:
    """ResNet-18-FPN, GroupNorm everywhere, 128-channel FPN/mask head, 2fc box head: CPU."""
    return _gn_variant("maskrcnn_r18_fpn", num_classes, overrides)


def maskrcnn_mnv2_fpn(num_classes: int, pretrained: str = "none", **overrides: Any) -> MaskRCNN:
    """ImageNet MobileNetV2-FPN (frozen BatchNorm; ``pretrained``: ``"imagenet"``, ``"none"``
    or a weights file), 128-channel plain FPN, GroupNorm heads: fine-tuning on a CPU."""
    return _gn_variant("maskrcnn_mnv2_fpn", num_classes, overrides, pretrained)


def maskrcnn_mnv3_fpn(num_classes: int, **overrides: Any) -> MaskRCNN:
    """MobileNetV3-Large-FPN (strides 4..32), GroupNorm everywhere, 96-channel FPN/heads."""
    return _gn_variant("maskrcnn_mnv3_fpn", num_classes, overrides)
