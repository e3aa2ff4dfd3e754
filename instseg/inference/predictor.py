"""``Predictor``: image files, PIL images, arrays or tensors in; ``Instances`` out.

Every input becomes RGB uint8 ``(H, W, 3)`` the same way the datasets read images
(:func:`instseg.data.io.read_image` / :func:`~instseg.data.io.to_rgb_uint8`: grayscale is
repeated, alpha dropped, 16-bit / float stretched per image, EXIF orientation applied), then a
float32 ``(3, H, W)`` tensor in [0, 1] goes to ``model.predict``. Results are ``Instances`` on
the CPU in the (EXIF-rotated) input image's coordinates: boxes xyxy absolute pixels, masks
bool ``(N, H, W)``, labels 0..K-1, scores sorted descending.

What a model stores (:mod:`instseg.engine.learnt`) sets two defaults. ``score_cutoff``: with
no ``score_threshold`` given, results keep detections scoring >= the model's calibrated
cut-off (``None`` for older checkpoints: every detection); ``predict_arrays(...,
apply_cutoff=False)`` keeps them all (COCO results for AP, see :func:`.batch.run_batch`).
``object_size``: images are rescaled so their objects reach the model at the size it learnt
(:mod:`.object_size`; ``"auto"`` estimates the size on the first image, :mod:`.size_estimate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from instseg.data.io import read_image, to_rgb_uint8
from instseg.device import resolve_device
from instseg.inference.object_size import check_object_size, rescale
from instseg.inference.onnx_model import OnnxModel
from instseg.inference.size_estimate import MIN_SCORE, SizeEstimate, estimate_object_size
from instseg.inference.tta import base_model, with_tta
from instseg.structures import Instances

__all__ = ["ImageInput", "Predictor", "load_input", "resolve_device"]

ImageInput = str | Path | np.ndarray | Image.Image | torch.Tensor


def load_input(x: ImageInput) -> np.ndarray:
    """Any supported input -> RGB uint8 ``(H, W, 3)`` (a tensor ``(3, H, W)`` float in [0, 1]
    or uint8 is accepted too). Paths raise :class:`DataError` naming the file when unreadable."""
    if isinstance(x, (str, Path)):
        return read_image(x)
    if isinstance(x, Image.Image):
        img: Image.Image = ImageOps.exif_transpose(x) or x
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
            img = img.convert("RGB")
        return to_rgb_uint8(np.asarray(img))
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        return to_rgb_uint8(t.numpy())
    if isinstance(x, np.ndarray):
        return to_rgb_uint8(x)
    raise TypeError(
        f"unsupported input type {type(x).__name__} (path, PIL image, numpy array or tensor)"
    )


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` in [0, 1] on ``device``."""
    arr = np.ascontiguousarray(img)
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image)
        arr = arr.copy()
    t = torch.from_numpy(arr).to(device)
    return t.permute(2, 0, 1).to(torch.float32).div_(255.0)


def _plain(t: torch.Tensor | None) -> torch.Tensor | None:
    """An ordinary CPU tensor (not an inference tensor, so callers may edit it in place)."""
    return None if t is None else t.detach().cpu().clone()


class Predictor:
    """Run a contract-following model (``model.predict(list[Tensor]) -> list[Instances]``).

    ``model_or_path``: an ``nn.Module``, a checkpoint file / training folder (loaded with
    :func:`instseg.inference.loading.load_model`), an exported ``.onnx`` file or a shipped
    model name (``"nuclei"``). ``score_threshold``, ``max_detections`` and
    ``mask_threshold``, when given, are set on the model (it is changed in place) and the
    returned instances are filtered by them as well; ``score_cutoff`` is ``score_threshold``
    when given, else the model's stored cut-off (module doc). ``object_size`` (pixels, or
    ``"auto"``): the size of the objects in the images to come; they are rescaled by the
    model's learnt size over it (``scale_factor``); ``log`` receives the one-line report of
    an ``auto`` estimate (e.g. ``print``). ``batch_size`` images go through one
    forward pass. ``class_names`` / ``cat_ids`` (a label's dataset category id) default to the
    checkpoint's, else ``"0".."K-1"`` and ``1..K``. ``tta`` (flips ``"h" "v" "hv"``),
    ``tta_scales`` (factors of a fixed-scale model's input scale), ``tta_agreement`` and
    ``box_refine`` wrap the model for test-time augmentation (:func:`.tta.with_tta`):
    ``self.model`` stays the model, ``self.runner`` is what predicts. A ``.onnx`` file written
    by ``instseg export`` runs with ``backend`` (``"onnxruntime"`` or ``"openvino"``) on
    ``threads`` CPU threads (default all cores): :class:`.onnx_model.OnnxModel`.
    """

    def __init__(
        self,
        model_or_path: torch.nn.Module | str | Path,
        device: str | torch.device | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        batch_size: int = 1,
        mask_threshold: float | None = None,
        class_names: Sequence[str] | None = None,
        cat_ids: Sequence[int] | None = None,
        *,
        tta: str = "none",
        tta_scales: Sequence[float] = (),
        tta_agreement: float = 0.0,
        box_refine: int = 0,
        backend: str = "onnxruntime",
        threads: int | None = None,
        object_size: float | str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.meta: dict[str, Any] = {}
        if isinstance(model_or_path, torch.nn.Module):
            model: Any = model_or_path.to(self.device)
        elif str(model_or_path).lower().endswith(".onnx"):
            model = OnnxModel(model_or_path, backend, threads)
            self.meta = {**model.meta, "path": str(model.path)}
            if tta != "none" or tta_scales or box_refine:
                raise ValueError(
                    f"{model_or_path}: test-time augmentation needs the PyTorch checkpoint; "
                    "an exported file runs as exported"
                )
        else:
            model, self.meta = self._load(model_or_path)
        if not callable(getattr(model, "predict", None)):
            raise TypeError(
                f"{type(model).__name__} has no predict(images) method (see the model contract)"
            )
        model.eval()
        self.model: Any = model
        self.runner: Any = with_tta(model, tta, tta_scales, tta_agreement, box_refine)
        self.batch_size = int(batch_size)
        self.score_threshold = score_threshold
        self._stored_settings(object_size, log)
        self.max_detections = max_detections
        for name, value in (
            ("score_threshold", score_threshold),
            ("max_detections", max_detections),
            ("mask_threshold", mask_threshold),
        ):
            if value is not None and hasattr(model, name):
                setattr(model, name, value)
        k = int(getattr(model, "num_classes", 0) or 0)
        names = class_names if class_names is not None else self.meta.get("class_names")
        self.class_names: list[str] = (
            [str(n) for n in names] if names else [str(i) for i in range(k)]
        )
        ids = cat_ids if cat_ids is not None else self.meta.get("cat_ids")
        self.cat_ids: list[int] = (
            [int(c) for c in ids] if ids else list(range(1, max(k, len(self.class_names)) + 1))
        )

    def _stored_settings(
        self, object_size: float | str | None, log: Callable[[str], None] | None
    ) -> None:
        """``score_cutoff``, ``learnt_size`` and the checked ``object_size`` from the
        arguments and the model's stored keys (``None`` where the model has none)."""
        stored = self.meta.get("score_cutoff")
        self.score_cutoff: float | None = (
            self.score_threshold if self.score_threshold is not None
            else None if stored is None else float(stored)
        )  # fmt: skip
        learnt = self.meta.get("object_size")
        self.learnt_size: float | None = None if learnt is None else float(learnt)
        source = str(self.meta.get("path") or type(self.model).__name__)
        self.object_size = check_object_size(object_size, self.learnt_size, self.model, source)
        self.size_estimate: SizeEstimate | None = None
        self.log = log

    def _load(self, path: str | Path) -> tuple[Any, dict[str, Any]]:
        from instseg.inference.loading import load_model, resolve_model_path

        model, meta = load_model(resolve_model_path(path), device=self.device)
        return model, meta

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", len(self.class_names)))

    @property
    def scale_factor(self) -> float | None:
        """Images are rescaled by this before the model: learnt size / object size (1 without
        ``object_size``; ``None`` while an ``auto`` size waits for its first image)."""
        if self.object_size is None:
            return 1.0
        px = self.object_size if self.object_size != "auto" else (
            self.size_estimate.object_size if self.size_estimate else None
        )  # fmt: skip
        assert self.learnt_size is not None  # checked in __init__
        return None if px is None else self.learnt_size / float(px)

    def estimate_object_size(self, images: Sequence[ImageInput]) -> SizeEstimate:
        """Estimate the object size on ``images`` (the model without test-time augmentation,
        :func:`.size_estimate.estimate_object_size`) and use it from now on (``object_size``
        becomes ``"auto"``); reported through ``log``."""
        source = str(self.meta.get("path") or "the model")
        check_object_size("auto", self.learnt_size, self.model, source)
        assert self.learnt_size is not None
        arrays = [load_input(x) for x in images]
        stored = self.meta.get("score_cutoff")  # what the model calls confident
        with torch.inference_mode():
            found = estimate_object_size(
                base_model(self.model), [_to_tensor(a, self.device) for a in arrays],
                self.learnt_size, MIN_SCORE if stored is None else float(stored),
            )  # fmt: skip
        self.object_size, self.size_estimate = "auto", found
        if self.log is not None:
            self.log(found.summary(self.learnt_size))
        return found

    def __call__(self, x: ImageInput) -> Instances:
        """Predict one image -> ``Instances`` in its own (EXIF-rotated) pixel coordinates,
        scoring >= ``score_cutoff``."""
        return self.predict_arrays([load_input(x)])[0]

    def predict_batch(self, inputs: Sequence[ImageInput]) -> list[Instances]:
        """Predict several images (any mix of input kinds and sizes), ``batch_size`` per pass."""
        out: list[Instances] = []
        for i in range(0, len(inputs), self.batch_size):
            out += self.predict_arrays([load_input(x) for x in inputs[i : i + self.batch_size]])
        return out

    def predict_arrays(
        self, images: Sequence[np.ndarray], apply_cutoff: bool = True
    ) -> list[Instances]:
        """RGB uint8 ``(H, W, 3)`` arrays -> one ``Instances`` each, ``batch_size`` per pass;
        ``apply_cutoff=False`` keeps the detections below ``score_cutoff`` (not those below
        an explicit ``score_threshold``)."""
        if images and self.scale_factor is None:  # "auto": measured on the first image
            self.estimate_object_size(images[:1])
        runner = rescale(self.runner, float(self.scale_factor or 1.0))
        out: list[Instances] = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            with torch.inference_mode():
                preds = runner.predict([_to_tensor(im, self.device) for im in chunk])
            if len(preds) != len(chunk):
                raise RuntimeError(f"model returned {len(preds)} results for {len(chunk)} images")
            out += [self._finish(p, im.shape[:2], apply_cutoff) for p, im in zip(preds, chunk)]
        return out

    def _finish(self, pred: Instances, size: tuple[int, ...], apply_cutoff: bool) -> Instances:
        h, w = int(size[0]), int(size[1])
        if tuple(pred.image_size) != (h, w):
            raise RuntimeError(
                f"model returned image_size {pred.image_size} for an image of {(h, w)}"
            )
        inst = Instances(
            image_size=(h, w),
            boxes=_plain(pred.boxes),  # type: ignore[arg-type]
            labels=_plain(pred.labels),  # type: ignore[arg-type]
            scores=_plain(pred.scores),
            masks=_plain(pred.masks),
            track_ids=_plain(pred.track_ids),
        )
        if len(inst) and inst.scores is not None:
            order = torch.argsort(inst.scores, descending=True, stable=True)
            if not bool((order == torch.arange(len(inst))).all()):
                inst = inst[order]
        cut = self.score_cutoff if apply_cutoff else self.score_threshold
        if cut is not None:
            inst = inst.filter(score_threshold=cut)
        if self.max_detections is not None and len(inst) > self.max_detections:
            inst = inst[: self.max_detections]
        return inst
