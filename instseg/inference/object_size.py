"""Objects at the size the model learnt: rescaling wrappers (the model knows nothing of them).

A checkpoint stores ``object_size``, the size (pixels of the images a user gives) at which
the model saw its training objects (:mod:`instseg.engine.learnt`). Images whose objects are
``PX`` pixels across are rescaled by ``object_size / PX`` before the model, so their objects
reach it at the learnt size; outputs come back in the input image's pixels.

* :class:`Rescaled` (PyTorch models): the wrapped model (or test-time augmentation wrapper)
  run at ``factor`` x its fixed input scale through the public ``forward_raw(images,
  input_scale)``; the model's own post-processing pastes masks and maps boxes into the input
  image's pixels, exactly as at factor 1 (one resize, the model's). The model's ``max_size``
  still caps its input's long side: enlarging big images past it gives smaller objects than
  learnt (predict with ``--tile``).
* :class:`ResizedInput` (exported ``.onnx`` files, whose graph resizes by a fixed scale):
  the image is resized by ``factor`` (bilinear, antialiased when shrinking) before the
  model; boxes are mapped back exactly (per-axis factors of the rounded size), masks are
  resampled bilinearly to the input size and thresholded at 0.5.

:func:`rescale` picks the wrapper; :func:`parse_object_size` / :func:`check_object_size`
validate a requested size (alone / against a model).
The ``auto`` estimate lives in :mod:`.size_estimate`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.errors import InstsegError
from instseg.inference.tta import Wrapper, base_model
from instseg.structures import Instances

__all__ = [
    "ObjectSizeError",
    "ResizedInput",
    "Rescaled",
    "check_object_size",
    "fixed_input_scale",
    "parse_object_size",
    "rescale",
]


class ObjectSizeError(InstsegError):
    """An object size that cannot be used (bad value, or a model that cannot take it); the
    CLI prints it as one line and exits 2 (usage)."""


def fixed_input_scale(model: Any) -> float | None:
    """The fixed input scale of a model, wrapper or exported file (``None``: the model
    resizes every image to a fixed short side, which undoes any rescaling)."""
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and "family" in meta:  # an exported file (OnnxModel)
        scale = meta.get("input_scale")
    else:
        scale = getattr(base_model(model), "input_scale", None)
    return None if scale is None else float(scale)


def parse_object_size(value: float | str | None) -> float | str | None:
    """An object size as given (``"auto"``, a number of pixels > 0, or ``None``) -> ``"auto"``,
    the float or ``None``; :class:`ObjectSizeError` (one line) otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        px = float(value)
    except (TypeError, ValueError):
        raise ObjectSizeError(
            f"--object-size: expected a size in pixels (> 0) or auto, got {value!r}"
        ) from None
    if not (math.isfinite(px) and px > 0):
        raise ObjectSizeError(f"--object-size: expected a size in pixels > 0, got {value!r}")
    return px


def check_object_size(
    value: float | str | None, learnt: float | None, model: Any, name: str = "the model"
) -> float | str | None:
    """``value`` (:func:`parse_object_size`) checked against ``model`` (a model, wrapper or
    exported file) that learnt objects of ``learnt`` pixels -> the number, ``"auto"`` or
    ``None``; :class:`ObjectSizeError` (one line) for a bad value, a model that does not know
    its object size, or one that resizes every image to a fixed short side."""
    value = parse_object_size(value)
    if value is None:
        return None
    if learnt is None:
        raise ObjectSizeError(
            f"--object-size: {name} does not know the object size it learnt (a checkpoint "
            "saved before instseg stored it); rescale the images yourself or retrain"
        )
    if fixed_input_scale(model) is None:
        raise ObjectSizeError(
            f"--object-size: {name} resizes every image to a fixed short side, which undoes "
            "any rescaling; it needs a fixed-scale model (input_scale)"
        )
    return value


class Rescaled(Wrapper):
    """``model`` (a fixed-scale model or a wrapper of one) at ``factor`` x its input scale:
    objects of ``PX`` pixels reach the network at ``PX * factor * input_scale`` pixels.
    Outputs are in the input image's pixels (see module doc)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__(model)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"rescale factor must be > 0, got {factor}")
        if fixed_input_scale(model) is None:
            raise ValueError(
                f"rescaling needs a fixed-scale model (input_scale set); "
                f"{type(base_model(model)).__name__} resizes every image's short side"
            )
        self.factor = float(factor)
        self.family = getattr(base_model(model), "family", None)

    def forward_raw(self, images: list[Tensor], input_scale: float | None = None) -> Any:
        """The wrapped model's raw outputs at ``factor`` x ``input_scale`` (default: the
        model's own scale)."""
        own = fixed_input_scale(self.model)
        base = float(input_scale if input_scale is not None else own)  # type: ignore[arg-type]
        return self.model.forward_raw(images, base * self.factor)  # type: ignore[operator]


class ResizedInput:
    """Any ``predict(list[Tensor])`` model (e.g. :class:`~.onnx_model.OnnxModel`) on images
    resized by ``factor``, its outputs mapped back to the input's pixels (module doc)."""

    def __init__(self, model: Any, factor: float) -> None:
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"rescale factor must be > 0, got {factor}")
        self.model, self.factor = model, float(factor)

    #: the contract's module flags: an exported file only predicts
    training = False

    def eval(self) -> ResizedInput:
        return self

    def train(self, mode: bool = True) -> ResizedInput:
        return self

    def predict(self, images: list[Tensor]) -> list[Instances]:
        out = []
        for img in images:
            h, w = int(img.shape[-2]), int(img.shape[-1])
            size = (max(1, round(h * self.factor)), max(1, round(w * self.factor)))
            small = F.interpolate(img[None].float(), size=size, mode="bilinear",
                                  align_corners=False, antialias=self.factor < 1)[0]  # fmt: skip
            pred = self.model.predict([small.clamp(0, 1)])[0]
            out.append(_map_back(pred, (h, w)))
        return out


def _map_back(pred: Instances, size: tuple[int, int]) -> Instances:
    """Instances predicted on a resized image -> the same instances in an image of ``size``:
    boxes scaled per axis, masks resampled bilinearly (> 0.5)."""
    (h, w), (rh, rw) = size, pred.image_size
    boxes = pred.boxes * torch.tensor([w / rw, h / rh, w / rw, h / rh], dtype=pred.boxes.dtype)
    masks = pred.masks
    if masks is not None:
        if len(masks):
            soft = F.interpolate(masks[:, None].float(), size=(h, w), mode="bilinear",
                                 align_corners=False)[:, 0]  # fmt: skip
            masks = soft > 0.5
        else:
            masks = torch.zeros((0, h, w), dtype=torch.bool)
    return Instances(image_size=(h, w), boxes=boxes, labels=pred.labels, scores=pred.scores,
                     masks=masks, track_ids=pred.track_ids)  # fmt: skip


def rescale(model: Any, factor: float) -> Any:
    """``model`` (a model, a test-time augmentation wrapper or an exported file) seeing
    images ``factor`` times larger: :class:`Rescaled` when it has ``forward_raw``, else
    :class:`ResizedInput`; ``model`` itself at factor 1."""
    if factor == 1.0:
        return model
    if callable(getattr(model, "forward_raw", None)):
        return Rescaled(model, factor)
    return ResizedInput(model, factor)
