"""The model zoo: one plain dict, name -> :class:`ModelSpec`. No registry, no decorators.

``build_model(name, num_classes, **overrides)`` builds a variant; the model's ``config``
(``{"name", "num_classes", **overrides}``, JSON-serialisable) rebuilds the same architecture:
``build_model(**model.config)``. No pretrained weights are bundled or downloaded: every
variant except ``maskrcnn_r50_fpn_torchvision`` is designed to train from scratch
(GroupNorm everywhere); ``hyperparams`` holds the recommended from-scratch recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from instseg.models import mask_rcnn_gn, solov2_variants, torchvision_compat

__all__ = ["MODELS", "ModelSpec", "build_model", "list_models"]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry. ``builder(num_classes, **overrides) -> nn.Module``; ``family`` is
    ``"maskrcnn"`` or ``"solov2"``; ``recommended`` marks the CPU default of its family;
    ``hyperparams``: recommended training recipe (keys like ``optimizer``, ``lr`` for
    ``batch_size`` images, ``weight_decay``, ``epochs`` (on a ~100-image dataset),
    ``warmup_iters``, ``grad_clip``, ``augmentation``)."""

    builder: Callable[..., nn.Module]
    family: str
    description: str
    recommended: bool = False
    hyperparams: dict[str, Any] = field(default_factory=dict)


# From-scratch GN recipe after He et al. 2019 ("Rethinking ImageNet Pre-training": GN
# everywhere, no pretraining, schedules several times longer than fine-tuning), with AdamW.
# `training_recipe` merges the device's entry over the base: on a CPU one image per step
# (15 minutes on 2 cores buy ~1100 steps; on nuclei 1 image/step beat 2 and 4 at equal time,
# bench/README.md), on a GPU 8 (the lr follows the batch: engine.optim.scale_lr).
_SCRATCH: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "batch_size": 2,
    "weight_decay": 1e-4,
    "epochs": 60,
    "warmup_iters": 200,
    "schedule": "cosine",
    "grad_clip": 10.0,
    "augmentation": "hflip, vflip for microscopy, scale jitter 0.75-1.25, random crop",
    "cpu": {"batch_size": 1, "lr": 1e-3},
    "cuda": {"batch_size": 8},
}
# SOLOv2: its Dice loss through a sigmoid stops learning once the mask logits saturate, which
# AdamW at 1e-3 does within ~100 steps (kernel norms grow 5x): 10x lower lr, real weight
# decay, a longer warm-up and the paper's clip at 35. On a CPU one image per step at the same
# lr, as for Mask R-CNN.
_SOLOV2_SCRATCH: dict[str, Any] = {
    **_SCRATCH,
    "lr": 1e-4,
    "weight_decay": 0.05,
    "warmup_iters": 500,
    "grad_clip": 35.0,
    "cpu": {"batch_size": 1},
}

MODELS: dict[str, ModelSpec] = {
    "maskrcnn_r18_fpn": ModelSpec(
        mask_rcnn_gn.maskrcnn_r18_fpn,
        "maskrcnn",
        "ResNet-18-FPN Mask R-CNN, GroupNorm, 128-ch FPN, 2fc box head: the CPU default",
        recommended=True,
        hyperparams=dict(_SCRATCH),
    ),
    "maskrcnn_mnv3_fpn": ModelSpec(
        mask_rcnn_gn.maskrcnn_mnv3_fpn,
        "maskrcnn",
        "MobileNetV3-Large-FPN Mask R-CNN, GroupNorm, 96-ch FPN, 2fc box head: fewest FLOPs",
        hyperparams=dict(_SCRATCH),
    ),
    "maskrcnn_r50_fpn": ModelSpec(
        mask_rcnn_gn.maskrcnn_r50_fpn,
        "maskrcnn",
        "ResNet-50-FPN Mask R-CNN, GroupNorm, 4conv1fc box head: GPU",
        hyperparams={
            **_SCRATCH,
            "cpu": {},
            "cuda": {},
            "optimizer": "sgd",
            "lr": 0.02,
            "momentum": 0.9,
            "batch_size": 16,
            "epochs": 100,
            "warmup_iters": 1000,
            "schedule": "step (x0.1 at 75% and 90%)",
        },
    ),
    "maskrcnn_r50_fpn_torchvision": ModelSpec(
        torchvision_compat.maskrcnn_r50_fpn_torchvision,
        "maskrcnn",
        "torchvision's maskrcnn_resnet50_fpn layout (FrozenBN): load its checkpoints",
        hyperparams={"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "batch_size": 16,
                     "weight_decay": 1e-4, "epochs": 26, "note": "fine-tuning only"},
    ),  # fmt: skip
    "solov2_r18_fpn": ModelSpec(
        solov2_variants.solov2_r18_fpn,
        "solov2",
        "ResNet-18-FPN SOLOv2, GroupNorm, 128-ch heads, E=128, 512 px: the CPU default",
        recommended=True,
        hyperparams=dict(_SOLOV2_SCRATCH),
    ),
    "solov2_light_r18": ModelSpec(
        solov2_variants.solov2_light_r18,
        "solov2",
        "light ResNet-18-FPN SOLOv2: 2 head convs, E=64, 448 px input",
        hyperparams=dict(_SOLOV2_SCRATCH),
    ),
    "solov2_light_mnv3": ModelSpec(
        solov2_variants.solov2_light_mnv3,
        "solov2",
        "real-time MobileNetV3-FPN SOLOv2: 64-ch FPN/heads, 2 head convs, E=64, 512 px",
        # one image per CPU step takes a higher lr (nuclei, 15 CPU minutes, bench/README.md:
        # 1e-4 < 3e-4 < 6e-4 ~ 1e-3; 6e-4 over seeds 0-2: 0.356 / 0.315 / 0.339 mask AP)
        hyperparams={**_SOLOV2_SCRATCH, "cpu": {"batch_size": 1, "lr": 6e-4}},
    ),
    "solov2_r50_fpn": ModelSpec(
        solov2_variants.solov2_r50_fpn,
        "solov2",
        "the paper's ResNet-50-FPN SOLOv2 (512-ch heads, E=256, 800/1333 input): GPU",
        hyperparams={**_SOLOV2_SCRATCH, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                     "weight_decay": 1e-4, "cpu": {}, "cuda": {},
                     "batch_size": 16, "epochs": 100, "warmup_iters": 500,
                     "schedule": "step (x0.1 at 75% and 90%)"},
    ),  # fmt: skip
}

_FAMILIES = ("maskrcnn", "solov2")


def list_models() -> list[str]:
    """Zoo names grouped by family (maskrcnn, solov2, others), recommended entry first."""

    def key(item: tuple[int, tuple[str, ModelSpec]]) -> tuple[int, int, int]:
        i, (_, spec) = item
        fam = _FAMILIES.index(spec.family) if spec.family in _FAMILIES else len(_FAMILIES)
        return fam, 0 if spec.recommended else 1, i

    return [name for _, (name, _) in sorted(enumerate(MODELS.items()), key=key)]


def training_recipe(name: str, device: str = "cpu") -> dict[str, Any]:
    """Zoo model ``name``'s recipe for ``device`` (``"cpu"``, ``"cuda"``...): the base keys with
    the device type's entry merged over them; ``{}`` for a name outside the zoo."""
    spec = MODELS.get(name)
    if spec is None:
        return {}
    hp = dict(spec.hyperparams)
    per_device: dict[str, dict[str, Any]] = {k: hp.pop(k) for k in ("cpu", "cuda") if k in hp}
    return {**hp, **per_device.get(device.split(":")[0], {})}


def build_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
    """Build zoo model ``name`` for ``num_classes`` foreground classes (labels 0..K-1).

    ``overrides`` are builder/constructor arguments (e.g. ``min_size``, ``anchor_sizes``,
    ``score_threshold``); the result has ``num_classes`` and ``config`` attributes.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = MODELS[name].builder(num_classes, **overrides)
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not config:
        model.config = {"name": name, "num_classes": int(num_classes), **overrides}  # type: ignore[assignment]
    return model
