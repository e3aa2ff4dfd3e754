"""The model zoo: one plain dict, name -> :class:`ModelSpec`. No registry, no decorators.

``build_model(name, num_classes, pretrained, **overrides)`` builds a variant; the model's
``config`` (``{"name", "num_classes", **overrides}``, JSON-serialisable) rebuilds the same
architecture: ``build_model(**model.config)``. Models with an ImageNet backbone
(``ModelSpec.imagenet``: MobileNetV2, and torchvision's ResNet-50 layout) start from
torchvision's weights (``pretrained="imagenet"``, :mod:`instseg.models.common.imagenet`; never
bundled, never downloaded at run time where torchvision cannot); the others are designed to
train from scratch (GroupNorm everywhere). A :class:`Recipe` is a model's recommended
training recipe, ``training_recipe(name, device)`` the one for a device. The data-adaptive
architecture settings (input scale, anchors, grids, crops) come from
:mod:`instseg.models.autoconfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from instseg.models.mask_rcnn import torchvision_compat
from instseg.models.mask_rcnn import variants as mask_rcnn_variants
from instseg.models.solov2 import variants as solov2_variants

__all__ = ["MODELS", "ModelSpec", "Recipe", "build_model", "list_models", "training_recipe"]


@dataclass(frozen=True)
class Recipe:
    """A training recipe: optimizer (``"adamw"`` or ``"sgd"``), learning rate for
    ``batch_size`` images per step (``engine.optim.scale_lr`` follows another batch size),
    weight decay, linear warm-up steps, gradient-norm clip; ``cpu`` / ``cuda``: fields that
    differ on that device type."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    batch_size: int = 2
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    grad_clip: float = 10.0
    cpu: dict[str, Any] = field(default_factory=dict)
    cuda: dict[str, Any] = field(default_factory=dict)

    def on(self, device: str) -> Recipe:
        """This recipe with the entry of ``device``'s type (``"cpu"``, ``"cuda:1"``...)
        merged over it (and no per-device entries left)."""
        kind = device.split(":")[0]
        changes = {"cpu": self.cpu, "cuda": self.cuda}.get(kind, {})
        return dataclasses.replace(self, **changes, cpu={}, cuda={})


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry. ``builder(num_classes, **overrides) -> nn.Module``; ``family`` is
    ``"maskrcnn"`` or ``"solov2"``; ``recommended`` marks the CPU default of its family;
    ``recipe`` its recommended training recipe; ``imagenet`` the backbone architecture of its
    ImageNet weights (:mod:`instseg.models.common.imagenet`), if it has any."""

    builder: Callable[..., nn.Module]
    family: str
    description: str
    recommended: bool = False
    recipe: Recipe = field(default_factory=Recipe)
    #: the architecture whose ImageNet weights the backbone loads (``None``: from scratch only)
    imagenet: str | None = None


# From-scratch GN recipe after He et al. 2019 ("Rethinking ImageNet Pre-training": GN
# everywhere, no pretraining), with AdamW: on a CPU one image per step, on a GPU 8 (the lr
# follows the batch: engine.optim.scale_lr).
SCRATCH = Recipe(cpu={"batch_size": 1}, cuda={"batch_size": 8})
# SOLOv2: its Dice loss through a sigmoid stops learning once the mask logits saturate, which
# AdamW at 1e-3 does within ~100 steps: 10x lower lr, real weight decay, a longer warm-up and
# the paper's clip at 35.
SOLOV2_SCRATCH = dataclasses.replace(
    SCRATCH, lr=1e-4, weight_decay=0.05, warmup_iters=500, grad_clip=35.0
)
# the papers' GPU schedules for the ResNet-50 variants (batch 16, SGD)
MASK_RCNN_GPU = Recipe(optimizer="sgd", lr=0.02, batch_size=16, warmup_iters=1000)
# fine-tuning an ImageNet backbone: the common AdamW fine-tuning recipe (lr 1e-3, a 50-step
# warm-up, two images per step; set a priori, not tuned: bench/README.md has its figures)
FINE_TUNE = Recipe(lr=1e-3, batch_size=2, warmup_iters=50, cuda={"batch_size": 8})
# SOLOv2 on an ImageNet backbone: the light MobileNetV3 SOLOv2's CPU recipe (one image per
# step at lr 6e-4; its low lr keeps the Dice loss learning) with a shorter warm-up (set a
# priori, bench/README.md has its figures)
SOLOV2_FINE_TUNE = dataclasses.replace(
    SOLOV2_SCRATCH, warmup_iters=200, cpu={"batch_size": 1, "lr": 6e-4}
)
SOLOV2_GPU = Recipe(optimizer="sgd", lr=0.01, batch_size=16, warmup_iters=500, grad_clip=35.0)

MODELS: dict[str, ModelSpec] = {
    "maskrcnn_mnv2_fpn": ModelSpec(
        mask_rcnn_variants.maskrcnn_mnv2_fpn,
        "maskrcnn",
        "ImageNet MobileNetV2-FPN Mask R-CNN (frozen BatchNorm), GroupNorm heads: the CPU default",
        recommended=True,
        recipe=FINE_TUNE,
        imagenet="mobilenet_v2",
    ),
    "maskrcnn_r18_fpn": ModelSpec(
        mask_rcnn_variants.maskrcnn_r18_fpn,
        "maskrcnn",
        "ResNet-18-FPN Mask R-CNN, GroupNorm, 128-ch FPN, 2fc box head: from scratch",
        recipe=SCRATCH,
    ),
    "maskrcnn_mnv3_fpn": ModelSpec(
        mask_rcnn_variants.maskrcnn_mnv3_fpn,
        "maskrcnn",
        "MobileNetV3-Large-FPN Mask R-CNN, GroupNorm, 96-ch FPN, 2fc box head: fewest FLOPs",
        recipe=SCRATCH,
    ),
    "maskrcnn_r50_fpn": ModelSpec(
        mask_rcnn_variants.maskrcnn_r50_fpn,
        "maskrcnn",
        "ResNet-50-FPN Mask R-CNN, GroupNorm, 4conv1fc box head: GPU",
        recipe=MASK_RCNN_GPU,
    ),
    "maskrcnn_r50_fpn_torchvision": ModelSpec(
        torchvision_compat.maskrcnn_r50_fpn_torchvision,
        "maskrcnn",
        "torchvision's maskrcnn_resnet50_fpn layout (FrozenBN): load its checkpoints",
        recipe=Recipe(optimizer="sgd", lr=0.02, batch_size=16),  # fine-tuning
        imagenet="resnet50",
    ),
    "solov2_mnv2": ModelSpec(
        solov2_variants.solov2_mnv2,
        "solov2",
        "ImageNet MobileNetV2-FPN SOLOv2 (frozen BatchNorm), 64-ch FPN/heads, E=64: the CPU default",
        recommended=True,
        recipe=SOLOV2_FINE_TUNE,
        imagenet="mobilenet_v2",
    ),
    "solov2_r18_fpn": ModelSpec(
        solov2_variants.solov2_r18_fpn,
        "solov2",
        "ResNet-18-FPN SOLOv2, GroupNorm, 128-ch heads, E=128, 512 px: from scratch",
        recipe=SOLOV2_SCRATCH,
    ),
    "solov2_light_r18": ModelSpec(
        solov2_variants.solov2_light_r18,
        "solov2",
        "light ResNet-18-FPN SOLOv2: 2 head convs, E=64, 448 px input",
        recipe=SOLOV2_SCRATCH,
    ),
    "solov2_light_mnv3": ModelSpec(
        solov2_variants.solov2_light_mnv3,
        "solov2",
        "real-time MobileNetV3-FPN SOLOv2: 64-ch FPN/heads, 2 head convs, E=64, 512 px",
        # one image per CPU step takes a higher lr (bench/README.md, SOLOv2 on nuclei)
        recipe=dataclasses.replace(SOLOV2_SCRATCH, cpu={"batch_size": 1, "lr": 6e-4}),
    ),
    "solov2_r50_fpn": ModelSpec(
        solov2_variants.solov2_r50_fpn,
        "solov2",
        "the paper's ResNet-50-FPN SOLOv2 (512-ch heads, E=256, 800/1333 input): GPU",
        recipe=SOLOV2_GPU,
    ),
}

_FAMILIES = ("maskrcnn", "solov2")


def list_models() -> list[str]:
    """Zoo names grouped by family (maskrcnn, solov2, others), recommended entry first."""

    def key(item: tuple[int, tuple[str, ModelSpec]]) -> tuple[int, int, int]:
        i, (_, spec) = item
        fam = _FAMILIES.index(spec.family) if spec.family in _FAMILIES else len(_FAMILIES)
        return fam, 0 if spec.recommended else 1, i

    return [name for _, (name, _) in sorted(enumerate(MODELS.items()), key=key)]


def training_recipe(name: str, device: str = "cpu") -> Recipe | None:
    """Zoo model ``name``'s :class:`Recipe` for ``device`` (``"cpu"``, ``"cuda"``...);
    ``None`` for a name outside the zoo."""
    spec = MODELS.get(name)
    return None if spec is None else spec.recipe.on(device)


def build_model(
    name: str, num_classes: int, pretrained: str = "none", **overrides: Any
) -> nn.Module:
    """Build zoo model ``name`` for ``num_classes`` foreground classes (labels 0..K-1).

    ``overrides`` are builder/constructor arguments (e.g. ``min_size``, ``anchor_sizes``,
    ``score_threshold``); the result has ``num_classes`` and ``config`` attributes.
    ``pretrained`` (``"imagenet"``, ``"none"`` or a weights file) initialises the backbone of a
    model that has ImageNet weights (``ModelSpec.imagenet``); it is not part of ``config``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    spec = MODELS[name]
    if pretrained != "none" and spec.imagenet is None:
        with_weights = ", ".join(n for n, s in MODELS.items() if s.imagenet)
        raise ValueError(
            f"{name} trains from scratch (no pretrained backbone); models with ImageNet "
            f"weights: {with_weights}"
        )
    extra = {"pretrained": pretrained} if spec.imagenet else {}
    model = spec.builder(num_classes, **extra, **overrides)
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not config:
        model.config = {"name": name, "num_classes": int(num_classes), **overrides}  # type: ignore[assignment]
    return model
