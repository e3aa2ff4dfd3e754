"""Mask R-CNN on torchvision's detection components, with mode-independent ``losses``/``predict``.

``MaskRCNN`` is torchvision's ``GeneralizedRCNN`` assembled exactly as
``torchvision.models.detection.MaskRCNN`` assembles it (same submodule names, so torchvision
state dicts load with ``strict=True``), plus:

* ``losses(images, targets: list[Instances]) -> dict[str, Tensor]`` in train or eval mode;
  crowd instances are ignored: anchors/proposals lying mostly (IoA >= ``crowd_ioa_threshold``)
  inside a crowd box are neither positives nor negatives.
* ``predict(images) -> list[Instances]`` in original image coordinates, masks thresholded.
* a fixed-scale input mode (``input_scale``) besides torchvision's short-side resize.
* a public tensor API that test-time augmentation, calibration and export wrap:
  ``forward_raw(images) -> MaskRCNNRaw`` (detections with soft 28 x 28 masks; its network part
  ``network(ImageList)``, what export wraps) and
  ``postprocess(raw, MaskPostConfig) -> list[Instances]``; ``predict`` is the two in a row.

Images are float (3, H, W) RGB in [0, 1]; boxes xyxy absolute pixels; labels 0..K-1 (the
torchvision detector inside uses K + 1 classes, 0 = background).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from instseg.models.mask_rcnn.crowd import CrowdAwareRoIHeads, CrowdAwareRPN
from instseg.models.mask_rcnn.post import MaskPostConfig, MaskRCNNRaw, paste_detections
from instseg.structures import Instances

__all__ = ["MaskRCNN"]


class _Transform(GeneralizedRCNNTransform):
    """torchvision's transform (short side -> ``min_size``, long side <= ``max_size``), or,
    with ``input_scale``, a fixed scale factor for every image (long side still <= ``max_size``);
    ``train_input_scale``, when given, replaces it in training mode."""

    def __init__(
        self,
        min_size: int | Sequence[int],
        max_size: int,
        image_mean: list[float],
        image_std: list[float],
        input_scale: float | None = None,
        train_input_scale: float | None = None,
    ) -> None:
        sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        super().__init__(sizes, max_size, image_mean, image_std)
        if train_input_scale is not None and input_scale is None:
            raise ValueError("train_input_scale needs input_scale (the fixed-scale mode)")
        self.input_scale = input_scale
        self.train_input_scale = train_input_scale

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        if self.input_scale is None:
            return super().resize(image, target)
        h, w = image.shape[-2:]
        fixed = self.input_scale
        if self.training and self.train_input_scale is not None:
            fixed = self.train_input_scale
        scale = min(float(fixed), self.max_size / max(h, w))
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True
        )[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), tuple(image.shape[-2:]))
        return image, target

    def at_scale(self, input_scale: float | None) -> _Transform:
        """This transform, or a shallow copy of it at another fixed ``input_scale``."""
        if input_scale is None:
            return self
        if self.input_scale is None:
            raise ValueError(
                "another input scale needs a fixed-scale model (input_scale set); this one "
                "resizes every image's short side to min_size"
            )
        out = copy.copy(self)
        out.input_scale = float(input_scale)
        return out


def _anchor_generator(
    backbone: nn.Module, anchor_sizes: Sequence[Sequence[int]] | None, ratios: Sequence[float]
) -> AnchorGenerator:
    """Anchors of one size list per FPN level (default ``8 * stride``: torchvision's 32..512)
    and the same aspect ratios on every level."""
    strides = list(getattr(backbone, "strides", [4, 8, 16, 32, 64]))
    if anchor_sizes is None:
        anchor_sizes = [[8 * s] for s in strides]
    sizes = tuple(tuple(int(a) for a in level) for level in anchor_sizes)
    if len(sizes) != len(strides) or len({len(s) for s in sizes}) != 1:
        raise ValueError(
            f"anchor_sizes needs {len(strides)} levels (strides {strides}) of equal length, "
            f"got {[list(s) for s in sizes]}"
        )
    return AnchorGenerator(sizes, (tuple(float(r) for r in ratios),) * len(sizes))


def _roi_pool(names: Sequence[str], strides: Sequence[int], size: int) -> MultiScaleRoIAlign:
    """torchvision's ``MultiScaleRoIAlign`` with its level scales set from the backbone's
    strides: left unset, it infers them from the first image's feature-map sizes and keeps
    them, and a first image under about two strides of the coarsest level (a small tile, a
    downscaled view) rounds them wrong for every later image."""
    pool = MultiScaleRoIAlign(list(names), size, 2)
    levels = [int(s).bit_length() - 1 for s in strides[: len(names)]]  # log2 of each stride
    pool.scales = [2.0**-k for k in levels]
    pool.map_levels = initLevelMapper(levels[0], levels[-1])
    return pool


def _check_images(images: Sequence[Tensor]) -> None:
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            raise ValueError(
                f"image {i}: expected a float (3, H, W) tensor in [0, 1], got "
                f"{img.dtype} {tuple(img.shape)}"
            )


@contextlib.contextmanager
def _training_flags(modules: Sequence[nn.Module], value: bool) -> Iterator[None]:
    """Temporarily set ``.training`` on the given modules only (not their children)."""
    old = [m.training for m in modules]
    try:
        for m in modules:
            m.training = value
        yield
    finally:
        for m, flag in zip(modules, old):
            m.training = flag


class MaskRCNN(GeneralizedRCNN):
    """Mask R-CNN for ``num_classes`` foreground classes (labels 0..K-1).

    ``backbone`` returns an OrderedDict of FPN maps (``out_channels`` attribute); the RoI
    pools read ``backbone.feature_names`` (default ``"0".."3"``). ``box_head``/``mask_head``
    default to torchvision's (TwoMLPHead 1024, 4 x 256 convs, no norm); pass GN heads for
    from-scratch training with ``box_head_dim``/``mask_head_dim`` their output widths.
    ``anchor_sizes``: one list per feature map (default ``8 * stride``, torchvision's 32..512).
    ``input_scale``: every image resized by this factor (instead of ``min_size``);
    ``train_input_scale``: another factor for training mode only (cheaper CPU training steps
    at a smaller scale, inference at ``input_scale``).
    ``mask_scoring``: a detection's score is its class score times its mask's confidence
    (the mean probability over the pixels above ``mask_threshold``: SOLOv2's "maskness"), so
    detections with vague masks rank lower (off: torchvision's scores, e.g. to reproduce
    its detections). Other arguments mirror torchvision's ``MaskRCNN``; ``score_threshold``,
    ``max_detections``, ``mask_threshold`` and ``mask_scoring`` are also attributes that can
    be changed after construction.
    """

    #: model family (the zoo's and the test-time augmentation wrappers' key)
    family = "maskrcnn"

    def __init__(
        self,
        backbone: BackboneWithFPN,
        num_classes: int,
        *,
        box_head: nn.Module | None = None,
        box_head_dim: int = 1024,
        mask_head: nn.Module | None = None,
        mask_head_dim: int = 256,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        input_scale: float | None = None,
        train_input_scale: float | None = None,
        image_mean: Sequence[float] = (0.485, 0.456, 0.406),
        image_std: Sequence[float] = (0.229, 0.224, 0.225),
        anchor_sizes: Sequence[Sequence[int]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        box_nms_thresh: float = 0.5,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        score_threshold: float = 0.05,
        max_detections: int = 100,
        mask_threshold: float = 0.5,
        mask_scoring: bool = False,
        crowd_ioa_threshold: float = 0.5,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        channels = int(backbone.out_channels)
        names = list(getattr(backbone, "feature_names", ["0", "1", "2", "3"]))
        anchors = _anchor_generator(backbone, anchor_sizes, aspect_ratios)
        rpn = CrowdAwareRPN(
            anchors,
            RPNHead(channels, anchors.num_anchors_per_location()[0]),
            rpn_fg_iou_thresh,
            rpn_bg_iou_thresh,
            rpn_batch_size_per_image,
            rpn_positive_fraction,
            {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            rpn_nms_thresh,
            score_thresh=0.0,
        )
        if box_head is None:
            box_head, box_head_dim = TwoMLPHead(channels * 7 * 7, 1024), 1024
        if mask_head is None:
            mask_head, mask_head_dim = MaskRCNNHeads(channels, [256] * 4, 1), 256
        strides = list(getattr(backbone, "strides", [4, 8, 16, 32, 64]))
        roi_heads = CrowdAwareRoIHeads(
            _roi_pool(names, strides, 7),
            box_head,
            FastRCNNPredictor(box_head_dim, num_classes + 1),
            box_fg_iou_thresh,
            box_bg_iou_thresh,
            box_batch_size_per_image,
            box_positive_fraction,
            None,
            score_threshold,
            box_nms_thresh,
            max_detections,
            mask_roi_pool=_roi_pool(names, strides, 14),
            mask_head=mask_head,
            mask_predictor=MaskRCNNPredictor(mask_head_dim, mask_head_dim, num_classes + 1),
        )
        rpn.crowd_ioa_threshold = roi_heads.crowd_ioa_threshold = crowd_ioa_threshold
        transform = _Transform(
            min_size, max_size, list(image_mean), list(image_std), input_scale, train_input_scale
        )
        super().__init__(backbone, rpn, roi_heads, transform)
        self.num_classes = num_classes
        self.mask_threshold = mask_threshold
        self.mask_scoring = mask_scoring
        self.config: dict[str, Any] = {}

    # -- thresholds (live in torchvision's RoIHeads) -------------------------------------
    @property
    def score_threshold(self) -> float:
        return float(self.roi_heads.score_thresh)

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.roi_heads.score_thresh = float(value)

    @property
    def max_detections(self) -> int:
        return int(self.roi_heads.detections_per_img)

    @max_detections.setter
    def max_detections(self, value: int) -> None:
        self.roi_heads.detections_per_img = int(value)

    @property
    def input_scale(self) -> float | None:
        """The fixed input scale (``None``: torchvision's short-side resize)."""
        return self.transform.input_scale

    # -- training ---------------------------------------------------------------------------
    def _prepare_targets(
        self, images: list[Tensor], targets: list[Instances]
    ) -> tuple[Any, list[dict[str, Tensor]]]:
        """Resize images/boxes/masks like torchvision; split off crowd boxes."""
        if len(images) != len(targets):
            raise ValueError(f"losses: {len(images)} images but {len(targets)} targets")
        raw = []
        for img, t in zip(images, targets):
            if t.masks is None:
                raise ValueError("Mask R-CNN needs masks in every target Instances")
            if tuple(t.image_size) != tuple(img.shape[-2:]):
                raise ValueError(
                    f"target size {t.image_size} != image size {tuple(img.shape[-2:])}"
                )
            b = t.boxes.to(img.device, torch.float32)
            crowd = t.iscrowd if t.iscrowd is not None else torch.zeros(len(t), dtype=torch.bool)
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            raw.append({"boxes": b[keep], "iscrowd": crowd.to(img.device)[keep], "keep": keep})
        image_list, raw = self.transform(images, raw)
        out = []
        for t, d, size in zip(targets, raw, image_list.image_sizes):
            crowd = d["iscrowd"]
            assert t.masks is not None
            masks = t.masks[d["keep"].cpu()][~crowd.cpu()].to(image_list.tensors.device)
            if masks.shape[0] > 0:
                masks = F.interpolate(masks[:, None].to(torch.uint8), size=size)[:, 0]
            else:
                masks = torch.zeros((0, *size), dtype=torch.uint8, device=masks.device)
            labels = t.labels.to(crowd.device)[d["keep"]][~crowd] + 1
            out.append(
                {
                    "boxes": d["boxes"][~crowd],
                    "labels": labels,
                    "masks": masks,
                    "crowd_boxes": d["boxes"][crowd],
                }
            )
        return image_list, out

    def losses(self, images: list[Tensor], targets: list[Instances]) -> dict[str, Tensor]:
        """Scalar losses ``loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg,
        loss_mask`` for float images (3, H, W) in [0, 1] (moved to the model's device) and
        their ground truth (any device).

        Train or eval mode alike: the backbone and the input resize follow the module mode
        (eval: fixed input size, a validation loss), the RPN/RoI heads always sample targets.
        """
        _check_images(images)
        device = next(self.parameters()).device
        images = [im.to(device) for im in images]
        image_list, tv_targets = self._prepare_targets(images, targets)
        features = self.backbone(image_list.tensors)
        with _training_flags([self.rpn, self.roi_heads], True):
            proposals, rpn_losses = self.rpn(image_list, features, tv_targets)
            _, det_losses = self.roi_heads(features, proposals, image_list.image_sizes, tv_targets)
        return {**rpn_losses, **det_losses}

    # -- inference: the public tensor API ---------------------------------------------------
    @contextlib.contextmanager
    def inference_modes(self) -> Iterator[None]:
        """Every submodule in eval mode within the block, restored after."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield
        finally:
            for m, flag in modes:
                m.training = flag

    @torch.no_grad()
    def forward_raw(self, images: list[Tensor], input_scale: float | None = None) -> MaskRCNNRaw:
        """Float images ``(3, H, W)`` in [0, 1] -> torchvision's detections before mask pasting
        (:class:`MaskRCNNRaw`), at the model's input scale or ``input_scale`` (a fixed-scale
        model only). Runs in eval mode whatever the module mode."""
        _check_images(images)
        device = next(self.parameters()).device
        images = [im.to(device) for im in images]
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        with self.inference_modes():
            image_list, _ = self.transform.at_scale(input_scale)(images)
            detections = self.network(image_list)
        input_sizes = [(int(h), int(w)) for h, w in image_list.image_sizes]
        return MaskRCNNRaw(detections, input_sizes, sizes)

    def network(self, image_list: ImageList) -> list[dict[str, Tensor]]:
        """A resized, normalised, padded batch (``image_list.tensors (B, 3, Hp, Wp)``, its
        ``image_sizes`` before padding) -> torchvision's detections per image (``boxes`` xyxy
        in network-input pixels, ``scores``, ``labels`` 1..K, soft ``masks (N, 1, 28, 28)``).
        Call with the model in eval mode (:meth:`inference_modes`)."""
        features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        return detections  # type: ignore[no-any-return]

    def post_config(self) -> MaskPostConfig:
        """The mask post-processing settings from this model's attributes."""
        return MaskPostConfig(self.mask_threshold, self.mask_scoring)

    def postprocess(
        self, raw: MaskRCNNRaw, cfg: MaskPostConfig | None = None, cache: bool = False
    ) -> list[Instances]:
        """Raw detections -> one ``Instances`` per image in its original coordinates (CPU):
        masks pasted and thresholded, scores descending (times the mask confidence with
        ``mask_scoring``). ``cache`` is accepted for the common post-processing API (nothing
        here is worth keeping between thresholds)."""
        cfg = cfg or self.post_config()
        return [
            paste_detections(det, in_size, size, cfg)
            for det, in_size, size in zip(raw.detections, raw.input_sizes, raw.image_sizes)
        ]

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[Instances]:
        """One ``Instances`` per image, in its original coordinates (tensors on the CPU).

        boxes xyxy, masks bool (N, H, W) (soft masks > ``mask_threshold``), labels 0..K-1,
        scores descending. Same detections as torchvision's ``model(images)`` in eval mode.
        """
        if not images:
            return []
        return self.postprocess(self.forward_raw(images))


def _json_config(name: str, num_classes: int, overrides: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"name": name, "num_classes": int(num_classes), **json.loads(json.dumps(overrides))}
    except TypeError as err:
        raise TypeError(f"{name}: overrides must be JSON-serialisable ({err})") from None
