"""The SOLOv2 variants of the zoo: GroupNorm ResNet/MobileNetV3 + FPN and SOLOv2 heads trained
from scratch, or an ImageNet MobileNetV2 (frozen BatchNorm) + FPN with the same heads.

``solov2_r18_fpn`` / ``solov2_light_r18`` / ``solov2_light_mnv3`` (CPU), ``solov2_mnv2``
(ImageNet backbone, CPU) and ``solov2_r50_fpn`` (the paper's, GPU) are :class:`instseg.models.solov2.SOLOv2` with the architecture of
``SOLOV2_VARIANTS[name]``; ``build_solov2`` builds any other combination.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from instseg.models.common.backbones import mobilenet_v2_fpn, mobilenet_v3_fpn, resnet_fpn
from instseg.models.solov2.model import SOLOv2

__all__ = [
    "SOLOV2_VARIANTS",
    "build_solov2",
    "solov2_light_mnv3",
    "solov2_light_r18",
    "solov2_mnv2",
    "solov2_r18_fpn",
    "solov2_r50_fpn",
]

#: architecture defaults of the zoo variants (overrides win); ``backbone`` is a torchvision
#: ResNet name, ``"mobilenet_v3"`` or ``"mobilenet_v2"`` (ImageNet weights), everything else goes to :class:`SOLOv2`.
SOLOV2_VARIANTS: dict[str, dict[str, Any]] = {
    "solov2_r18_fpn": {"backbone": "resnet18", "fpn_channels": 128, "head_channels": 128,
                       "stacked_convs": 3, "kernel_channels": 128, "mask_channels": 128,
                       "min_size": 512, "max_size": 853},
    "solov2_light_r18": {"backbone": "resnet18", "fpn_channels": 128, "head_channels": 128,
                         "stacked_convs": 2, "kernel_channels": 64, "mask_channels": 64,
                         "min_size": 448, "max_size": 768},
    "solov2_light_mnv3": {"backbone": "mobilenet_v3", "fpn_channels": 64, "head_channels": 64,
                          "stacked_convs": 2, "kernel_channels": 64, "mask_channels": 64,
                          "min_size": 512, "max_size": 512},
    # the light MobileNetV3 variant's heads on an ImageNet MobileNetV2 (frozen BatchNorm, the
    # stem and stride-4/8 stages frozen as in maskrcnn_mnv2_fpn)
    "solov2_mnv2": {"backbone": "mobilenet_v2", "trainable_layers": 3, "fpn_channels": 64, "head_channels": 64,
                    "stacked_convs": 2, "kernel_channels": 64, "mask_channels": 64,
                    "min_size": 512, "max_size": 512},
    "solov2_r50_fpn": {"backbone": "resnet50", "fpn_channels": 256, "head_channels": 512,
                       "stacked_convs": 4, "kernel_channels": 256, "mask_channels": 128,
                       "min_size": 800, "max_size": 1333},
}  # fmt: skip


def build_solov2(
    num_classes: int,
    *,
    backbone: str = "resnet18",
    norm: str = "gn",
    fpn_channels: int = 256,
    width_mult: float = 1.0,
    pretrained: str = "none",
    trainable_layers: int = 6,
    **model_kwargs: Any,
) -> SOLOv2:
    """SOLOv2 on a GroupNorm (by default) ResNet/MobileNetV3 + FPN P2..P6, or on MobileNetV2
    with frozen BatchNorm, ``pretrained`` weights (``"imagenet"``, ``"none"``, a file) and its
    top ``trainable_layers`` stages trained, from
    :mod:`instseg.models.common.backbones`; ``model_kwargs`` go to :class:`SOLOv2`."""
    if pretrained != "none" and backbone != "mobilenet_v2":
        raise ValueError(f"pretrained={pretrained!r}: only the mobilenet_v2 backbone has weights")
    if backbone == "mobilenet_v2":
        body: nn.Module = mobilenet_v2_fpn(
            pretrained, "frozen_bn", 2, fpn_channels, trainable_layers
        )
    elif backbone == "mobilenet_v3":
        body = mobilenet_v3_fpn(width_mult, norm, 2, fpn_channels)
    else:
        body = resnet_fpn(backbone, norm, 2, fpn_channels)
    return SOLOv2(body, num_classes, **model_kwargs)


def _variant(
    name: str, num_classes: int, overrides: dict[str, Any], pretrained: str = "none"
) -> SOLOv2:
    """Zoo variant ``name``; ``pretrained`` weights are not part of its ``config``."""
    kwargs = {**SOLOV2_VARIANTS[name], **overrides}
    model = build_solov2(num_classes, pretrained=pretrained, **kwargs)
    try:
        model.config = {
            "name": name,
            "num_classes": int(num_classes),
            **json.loads(json.dumps(overrides)),
        }
    except TypeError as err:
        raise TypeError(f"{name}: overrides must be JSON-serialisable ({err})") from None
    return model


def solov2_r18_fpn(num_classes: int, **overrides: Any) -> SOLOv2:
    """ResNet-18-FPN SOLOv2, GroupNorm, 128-ch FPN/heads (3 convs), E=128, 512 px: CPU default."""
    return _variant("solov2_r18_fpn", num_classes, overrides)


def solov2_light_r18(num_classes: int, **overrides: Any) -> SOLOv2:
    """Light ResNet-18-FPN SOLOv2: 2 head convs, E=64, 448 px input."""
    return _variant("solov2_light_r18", num_classes, overrides)


def solov2_light_mnv3(num_classes: int, **overrides: Any) -> SOLOv2:
    """Real-time MobileNetV3-Large-FPN SOLOv2: 64-ch FPN/heads, 2 head convs, E=64, 512 px."""
    return _variant("solov2_light_mnv3", num_classes, overrides)


def solov2_mnv2(num_classes: int, pretrained: str = "none", **overrides: Any) -> SOLOv2:
    """ImageNet MobileNetV2-FPN SOLOv2 (frozen BatchNorm; ``pretrained``: ``"imagenet"``,
    ``"none"`` or a weights file): the light MobileNetV3 variant's heads, 512 px."""
    return _variant("solov2_mnv2", num_classes, overrides, pretrained)


def solov2_r50_fpn(num_classes: int, **overrides: Any) -> SOLOv2:
    """The paper's ResNet-50-FPN SOLOv2 (512-ch heads, 4 convs, E=256, 800/1333 input): GPU."""
    return _variant("solov2_r50_fpn", num_classes, overrides)
