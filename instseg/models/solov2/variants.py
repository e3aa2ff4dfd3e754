"""The SOLOv2 variants of the zoo: GroupNorm ResNet/MobileNetV3 + FPN and SOLOv2 heads.

``solov2_r18_fpn`` / ``solov2_light_r18`` / ``solov2_light_mnv3`` (CPU) and ``solov2_r50_fpn``
(the paper's, GPU) are :class:`instseg.models.solov2.SOLOv2` with the architecture of
``SOLOV2_VARIANTS[name]``; ``build_solov2`` builds any other combination.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from instseg.models.common.backbones import mobilenet_v3_fpn, resnet_fpn
from instseg.models.solov2.model import SOLOv2

__all__ = [
    "SOLOV2_VARIANTS",
    "build_solov2",
    "solov2_light_mnv3",
    "solov2_light_r18",
    "solov2_r18_fpn",
    "solov2_r50_fpn",
]

#: architecture defaults of the zoo variants (overrides win); ``backbone`` is a torchvision
#: ResNet name or ``"mobilenet_v3"``, everything else goes to :class:`SOLOv2`.
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
    **model_kwargs: Any,
) -> SOLOv2:
    """SOLOv2 on a GroupNorm (by default) ResNet/MobileNetV3 + FPN P2..P6 from
    :mod:`instseg.models.common.backbones`; ``model_kwargs`` go to :class:`SOLOv2`."""
    if backbone == "mobilenet_v3":
        body: nn.Module = mobilenet_v3_fpn(width_mult, norm, 2, fpn_channels)
    else:
        body = resnet_fpn(backbone, norm, 2, fpn_channels)
    return SOLOv2(body, num_classes, **model_kwargs)


def _variant(name: str, num_classes: int, overrides: dict[str, Any]) -> SOLOv2:
    model = build_solov2(num_classes, **{**SOLOV2_VARIANTS[name], **overrides})
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


def solov2_r50_fpn(num_classes: int, **overrides: Any) -> SOLOv2:
    """The paper's ResNet-50-FPN SOLOv2 (512-ch heads, 4 convs, E=256, 800/1333 input): GPU."""
    return _variant("solov2_r50_fpn", num_classes, overrides)
