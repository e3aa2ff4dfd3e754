"""Test-time augmentation as wrappers around a model (the model knows nothing of them).

A wrapped model keeps the public tensor API of the models (``forward_raw``, ``post_config``,
``postprocess``, ``predict``), so wrappers nest and calibration (:mod:`.calibrate`) works on
any of them:

* :class:`FlipTTA`: the image and its mirror images, averaged inside the network's outputs
  (Mask R-CNN per RoI, with optional box refinement: :mod:`.tta_mask_rcnn`; SOLOv2 per grid
  cell: :mod:`.tta_solov2`).
* :class:`ScaleTTA`: the wrapped model at several input scales of a fixed-scale model, each
  view's instances fused per object (:mod:`.fusion`).
* :class:`Wrapper`, their base, is also that of :class:`.object_size.Rescaled` (objects at
  the learnt size); :func:`base_model` unwraps any of them.

``with_tta(model, flips, scales, agreement, box_refine)`` builds the usual nesting
(``ScaleTTA(FlipTTA(model))``) and returns the model itself when nothing is asked.

Images are float ``(3, H, W)`` in [0, 1]; outputs ``Instances`` in original coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from instseg.inference import tta_mask_rcnn, tta_solov2
from instseg.inference.fusion import FUSION_IOU, fuse_instances
from instseg.structures import Instances

__all__ = [
    "FLIPS",
    "FlipTTA",
    "ScaleTTA",
    "Wrapper",
    "base_model",
    "check_flips",
    "check_scales",
    "with_tta",
]

#: flip view sets: (mirror x, mirror y) per view; the first view is always the image itself
FLIPS: dict[str, tuple[tuple[bool, bool], ...]] = {
    "none": ((False, False),),
    "h": ((False, False), (True, False)),
    "v": ((False, False), (False, True)),
    "hv": ((False, False), (True, False), (False, True), (True, True)),
}

#: model families whose network outputs flip views can average
FAMILIES = ("maskrcnn", "solov2")


def check_flips(flips: str) -> tuple[tuple[bool, bool], ...]:
    """The views of a flip set name (``"none" "h" "v" "hv"``); ValueError names the others."""
    if flips not in FLIPS:
        raise ValueError(f"tta: unknown view set {flips!r}; choose from {', '.join(FLIPS)}")
    return FLIPS[flips]


def check_scales(factors: Sequence[float]) -> tuple[float, ...]:
    """Validated scale factors (each > 0, no repeats) as a tuple; ``()`` means no scale TTA."""
    out = tuple(float(f) for f in factors)
    if any(not f > 0.0 for f in out):
        raise ValueError(f"scale factors must be > 0, got {list(out)}")
    if len(set(out)) != len(out):
        raise ValueError(f"scale factors repeat: {list(out)}")
    return out


def base_model(model: nn.Module) -> nn.Module:
    """The model inside any nesting of wrappers (the model itself when unwrapped)."""
    while isinstance(model, Wrapper):
        model = model.model
    return model


def _family(model: nn.Module) -> str:
    family = getattr(base_model(model), "family", None)
    if family not in FAMILIES:
        raise TypeError(
            f"test-time augmentation needs a Mask R-CNN or SOLOv2, got {type(model).__name__}"
        )
    return str(family)


class Wrapper(nn.Module):
    """The shared part of the wrappers: the wrapped model as a submodule (so ``eval()``,
    ``to()`` and ``parameters()`` reach it) and the model API delegated to it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def num_classes(self) -> int:
        return int(base_model(self).num_classes)  # type: ignore[arg-type]

    @property
    def input_scale(self) -> float | None:
        return base_model(self).input_scale  # type: ignore[return-value]

    def post_config(self) -> Any:
        return self.model.post_config()  # type: ignore[operator]

    def forward_raw(self, images: list[Tensor], input_scale: float | None = None) -> Any:
        raise NotImplementedError

    def postprocess(self, raw: Any, cfg: Any = None, cache: bool = False) -> list[Instances]:
        return self.model.postprocess(raw, cfg, cache)  # type: ignore[operator,no-any-return]

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[Instances]:
        """One ``Instances`` per image, as the wrapped model's ``predict``."""
        if not images:
            return []
        return self.postprocess(self.forward_raw(images))


class FlipTTA(Wrapper):
    """Flip views averaged inside the network's outputs; ``box_refine`` extra box-head passes
    (Mask R-CNN only). ``flips="none"`` with no refinement reproduces the model's own
    ``predict``. Use the flips the model trained with (``hv`` after ``--augment microscopy``,
    ``h`` otherwise)."""

    def __init__(self, model: nn.Module, flips: str = "hv", box_refine: int = 0) -> None:
        super().__init__(model)
        self.family = _family(model)
        self.views = check_flips(flips)
        self.flips = flips
        if box_refine < 0:
            raise ValueError(f"box_refine must be >= 0, got {box_refine}")
        if box_refine and self.family != "maskrcnn":
            raise ValueError(f"box refinement: Mask R-CNN models only, got {type(model).__name__}")
        self.box_refine = int(box_refine)

    def forward_raw(self, images: list[Tensor], input_scale: float | None = None) -> Any:
        """The model's raw-output type, every view mapped back and averaged."""
        if self.family == "maskrcnn":
            return tta_mask_rcnn.augmented_raw(
                self.model, images, self.views, self.box_refine, input_scale  # type: ignore[arg-type]
            )
        return tta_solov2.augmented_raw(self.model, images, self.views, input_scale)  # type: ignore[arg-type]


class ScaleTTA(Wrapper):
    """The wrapped model at each factor of a fixed-scale model's ``input_scale``, the views'
    instances of each image fused per object (:func:`~.fusion.fuse_instances`: ``iou``,
    ``vote``, and ``agreement``, the power of the views' mask agreement in fused scores)."""

    def __init__(
        self,
        model: nn.Module,
        scales: Sequence[float] = (1.0, 1.2, 1.4),
        agreement: float = 0.0,
        iou: float = FUSION_IOU,
        vote: float = 0.5,
    ) -> None:
        super().__init__(model)
        self.scales = check_scales(scales)
        if not self.scales:
            raise ValueError("scale TTA needs at least one scale factor")
        if base_model(model).input_scale is None:  # type: ignore[attr-defined]
            raise ValueError(
                f"scale TTA needs a fixed-scale model (input_scale set); "
                f"{type(base_model(model)).__name__} resizes every image's short side to min_size"
            )
        if not agreement >= 0.0:
            raise ValueError(f"agreement power must be >= 0, got {agreement}")
        self.agreement, self.iou, self.vote = float(agreement), float(iou), float(vote)

    def forward_raw(self, images: list[Tensor], input_scale: float | None = None) -> list[Any]:
        """One raw output of the wrapped model per scale factor (of ``input_scale`` when
        given, else of the model's own)."""
        base = float(input_scale if input_scale is not None else self.input_scale)  # type: ignore[arg-type]
        return [self.model.forward_raw(images, base * f) for f in self.scales]  # type: ignore[operator]

    def view_sets(self, raws: list[Any], cfg: Any = None, cache: bool = False) -> list[list[Instances]]:
        """Per image, the instances of every scale view (before fusion)."""
        per_view = [self.model.postprocess(r, cfg, cache) for r in raws]  # type: ignore[operator]
        return [[v[i] for v in per_view] for i in range(len(per_view[0]))]

    def postprocess(self, raws: list[Any], cfg: Any = None, cache: bool = False) -> list[Instances]:
        limit = int(base_model(self).max_detections)  # type: ignore[arg-type]
        return [
            fuse_instances(sets, self.iou, self.vote, limit, self.agreement)
            for sets in self.view_sets(raws, cfg, cache)
        ]


def with_tta(
    model: nn.Module,
    flips: str = "none",
    scales: Sequence[float] = (),
    agreement: float = 0.0,
    box_refine: int = 0,
) -> nn.Module:
    """``model`` wrapped for test-time augmentation: :class:`FlipTTA` when ``flips`` is not
    ``"none"`` or ``box_refine`` > 0, inside :class:`ScaleTTA` when ``scales`` are given; the
    model itself when nothing is asked."""
    check_flips(flips)
    out = model
    if flips != "none" or box_refine:
        out = FlipTTA(out, flips, box_refine)
    if check_scales(scales):
        out = ScaleTTA(out, scales, agreement)
    return out
