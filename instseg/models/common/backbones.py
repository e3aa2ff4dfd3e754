"""Backbones with a feature pyramid: ResNet / MobileNetV3 (torchvision, ``weights=None``) or
MobileNetV2 (ImageNet weights by default, :mod:`.imagenet`) + FPN.

Every backbone is an :class:`FPNBackbone`: ``forward(x (B, 3, H, W)) -> OrderedDict`` of
feature maps ``(B, out_channels, H / s, W / s)`` for the strides in ``backbone.strides``
(pyramid levels ``P{min_level}..P5`` plus ``P6 = maxpool(P5)``, named ``"0", "1", ..., "pool"``).

Normalization (``norm``):
    ``"gn"``        GroupNorm in the body and the FPN: trains from scratch with 1-4 images per
                    batch (He et al. 2019, "Rethinking ImageNet Pre-training").
    ``"bn"``        BatchNorm (needs large batches), FPN without norm.
    ``"frozen_bn"`` FrozenBatchNorm2d, FPN without norm: torchvision's Mask R-CNN layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from instseg.models.common.group_norm import GroupNorm
from instseg.models.common.imagenet import load_pretrained

__all__ = [
    "FPNBackbone",
    "group_norm",
    "mobilenet_v2_fpn",
    "mobilenet_v3_fpn",
    "norm_layer",
    "resnet_fpn",
]

_RESNETS: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
}


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the width allows (else gcd(32, C), >= 2 channels/group);
    :class:`instseg.models.common.group_norm.GroupNorm`, whose channels-last CPU backward is faster."""
    groups = math.gcd(32, num_channels)
    while groups > 1 and num_channels // groups < 2:
        groups //= 2
    return GroupNorm(groups, num_channels)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """``"gn" | "bn" | "frozen_bn"`` -> a callable ``channels -> nn.Module``."""
    if norm == "gn":
        return group_norm
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    raise ValueError(f"norm must be 'gn', 'bn' or 'frozen_bn', got {norm!r}")


class FPNBackbone(BackboneWithFPN):
    """torchvision's ``BackboneWithFPN`` (same state-dict keys) that also reports its strides.

    Attributes: ``out_channels`` (int), ``strides`` (list[int], one per output map, the last
    one is the ``"pool"`` level), ``feature_names`` (the output keys without ``"pool"``).
    """

    def __init__(
        self,
        body: nn.Module,
        return_layers: dict[str, str],
        in_channels_list: list[int],
        strides: list[int],
        out_channels: int,
        fpn_norm: Callable[[int], nn.Module] | None,
    ) -> None:
        super().__init__(
            body,
            return_layers,
            in_channels_list,
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=fpn_norm,
        )
        self.strides: list[int] = [*strides, strides[-1] * 2]
        self.feature_names: list[str] = list(return_layers.values())


def _check_min_level(min_level: int) -> None:
    if min_level not in (2, 3, 4):
        raise ValueError(f"min_level must be 2, 3 or 4 (P2 = stride 4), got {min_level}")


def resnet_fpn(
    depth: str = "resnet50",
    norm: str = "gn",
    min_level: int = 2,
    fpn_channels: int = 256,
    trainable_layers: int = 5,
    pretrained: str = "none",
) -> FPNBackbone:
    """ResNet (``weights=None``) + FPN on ``P{min_level}..P5`` + ``P6`` (max pool).

    ``trainable_layers`` (0-5) freezes the stem and early stages, as torchvision does.
    ``pretrained`` (``"imagenet"``, ``"none"`` or a torchvision weights file) loads the body
    (:mod:`instseg.models.common.imagenet`; ImageNet weights need ``norm="frozen_bn"`` or
    ``"bn"``).
    """
    if depth not in _RESNETS:
        raise ValueError(f"unknown ResNet {depth!r}; choose from {sorted(_RESNETS)}")
    _check_min_level(min_level)
    gn = norm == "gn"
    body = _RESNETS[depth](weights=None, norm_layer=norm_layer(norm), zero_init_residual=gn)
    if pretrained != "none" and gn:
        raise ValueError("pretrained ResNet weights need BatchNorm (norm='frozen_bn' or 'bn')")
    load_pretrained(body, depth, pretrained)
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers.append("bn1")
    for name, param in body.named_parameters():
        if all(not name.startswith(layer) for layer in layers):
            param.requires_grad_(False)
    c2 = 64 if depth in ("resnet18", "resnet34") else 256
    levels = list(range(min_level, 6))
    return_layers = {f"layer{lv - 1}": str(i) for i, lv in enumerate(levels)}
    in_channels = [c2 * 2 ** (lv - 2) for lv in levels]
    strides = [2**lv for lv in levels]
    fpn_norm = group_norm if gn else None
    return FPNBackbone(body, return_layers, in_channels, strides, fpn_channels, fpn_norm)


def mobilenet_v3_fpn(
    width_mult: float = 1.0,
    norm: str = "gn",
    min_level: int = 2,
    fpn_channels: int = 128,
) -> FPNBackbone:
    """MobileNetV3-Large (``weights=None``) + FPN on ``P{min_level}..P5`` + ``P6``.

    Taps the last block of each stride (4, 8, 16, 32), before the 960-channel classifier
    expansion, so small objects keep a stride-4/8 feature map (torchvision's detection
    variant only taps strides 16 and 32).
    """
    _check_min_level(min_level)
    net = mobilenet_v3_large(weights=None, width_mult=width_mult, norm_layer=norm_layer(norm))
    return _tapped_fpn(net.features[:-1], min_level, fpn_channels, norm)


def mobilenet_v2_fpn(
    pretrained: str = "imagenet",
    norm: str = "frozen_bn",
    min_level: int = 2,
    fpn_channels: int = 128,
    trainable_layers: int = 6,
) -> FPNBackbone:
    """MobileNetV2 + FPN on ``P{min_level}..P5`` + ``P6``, the body loaded with ``pretrained``
    weights (``"imagenet"``: torchvision's IMAGENET1K_V1, ``"none"``, or a weights file; see
    :mod:`instseg.models.common.imagenet`). ``norm`` ``"frozen_bn"`` keeps the ImageNet
    statistics (small batches); the FPN then has no norm. Taps the last block of each stride
    (4, 8, 16, 32) before the 1280-channel expansion, as :func:`mobilenet_v3_fpn`.
    ``trainable_layers`` (0-6, torchvision's ``_mobilenet_extractor`` count: stages start at
    the stem and at each stride-2 block) keeps that many stages from the top trainable and
    freezes the rest."""
    _check_min_level(min_level)
    net = mobilenet_v2(weights=None, norm_layer=norm_layer(norm))
    load_pretrained(net, "mobilenet_v2", pretrained)
    features = net.features[:-1]
    starts = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
    starts.append(len(features))  # torchvision counts the dropped expansion as the last stage
    if not 0 <= trainable_layers <= len(starts):
        raise ValueError(f"trainable_layers must be in [0, {len(starts)}], got {trainable_layers}")
    first_trainable = starts[len(starts) - trainable_layers] if trainable_layers else len(features)
    for block in features[:first_trainable]:
        block.requires_grad_(False)
    return _tapped_fpn(features, min_level, fpn_channels, norm)


def _tapped_fpn(
    features: nn.Sequential, min_level: int, fpn_channels: int, norm: str
) -> FPNBackbone:
    """An FPN on the last block of ``features`` at each stride of ``P{min_level}..P5``."""
    last_at_stride: dict[int, tuple[int, int]] = {}
    x = torch.zeros(1, 3, 64, 64)
    was_training = features.training
    features.eval()  # no BatchNorm statistics change on the probe
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            last_at_stride[64 // x.shape[-1]] = (i, x.shape[1])
    features.train(was_training)
    levels = list(range(min_level, 6))
    return_layers = {str(last_at_stride[2**lv][0]): str(k) for k, lv in enumerate(levels)}
    in_channels = [last_at_stride[2**lv][1] for lv in levels]
    strides = [2**lv for lv in levels]
    return FPNBackbone(
        features,
        return_layers,
        in_channels,
        strides,
        fpn_channels,
        group_norm if norm == "gn" else None,
    )
