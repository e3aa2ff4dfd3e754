"""Helpers shared by the engine / loader / CLI tests: a tiny shapes dataset and a tiny model.

The tiny model wraps torchvision's MaskRCNN with a 2-layer backbone and follows the model
contract (``losses`` / ``predict`` / ``num_classes`` / ``config``), so the engine is tested
independently of the model zoo (``build_tiny`` rebuilds it from its config).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
from instseg.masks import encode
from instseg.structures import Instances

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_shapes_dataset(
    root: Path,
    n_images: int = 6,
    size: tuple[int, int] = (64, 80),
    seed: int = 0,
    n_classes: int = 2,
) -> InstanceDataset:
    """Images of bright rectangles / discs on a dark background; category ids 1, 2 (non-contiguous 1, 3 if 3)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    cat_ids = [1, 3, 7][:n_classes]
    records = []
    ann_id = 1
    for i in range(n_images):
        img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        rec = ImageRecord(
            id=100 + i, file_name=f"img{i}.png", path=root / f"img{i}.png", height=h, width=w
        )
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(0, n_classes))
            cy, cx = int(rng.integers(12, h - 12)), int(rng.integers(12, w - 12))
            r = int(rng.integers(6, 11))
            if cls == 0:
                m = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            else:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[m] = (200, 80 + 100 * cls, 60) if cls < 2 else (60, 200, 200)
            seg = encode(m)[0]
            rec.annotations.append(make_annotation(ann_id, rec.id, cat_ids[cls], seg, h, w))
            ann_id += 1
        Image.fromarray(img).save(rec.path)
        records.append(rec)
    cats = [Category(id=c, name=f"class{c}") for c in cat_ids]
    return InstanceDataset(records, cats, source=root)


class TinyMaskRCNN(nn.Module):
    """Contract-following Mask R-CNN with a tiny backbone (inputs resized to 64..96 px)."""

    def __init__(
        self, num_classes: int, score_threshold: float = 0.0, max_detections: int = 20
    ) -> None:
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign

        self.num_classes = num_classes
        self.config: dict[str, Any] = {
            "name": "tiny",
            "num_classes": num_classes,
            "score_threshold": score_threshold,
            "max_detections": max_detections,
        }
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.mask_threshold = 0.5

        class Backbone(nn.Sequential):
            out_channels = 16

            def forward(self, x: torch.Tensor) -> Any:  # type: ignore[override]
                return OrderedDict([("0", super().forward(x))])

        backbone = Backbone(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.net = MaskRCNN(
            backbone,
            num_classes=num_classes + 1,
            min_size=64,
            max_size=96,
            rpn_anchor_generator=AnchorGenerator(((8, 16, 32),), ((0.5, 1.0, 2.0),)),
            box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
            mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
            representation_size=32,
            mask_head=None,
            rpn_batch_size_per_image=32,
            box_batch_size_per_image=32,
            rpn_pre_nms_top_n_train=100,
            rpn_post_nms_top_n_train=50,
            rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=50,
            box_detections_per_img=max_detections,
            box_score_thresh=score_threshold,
        )

    def losses(
        self, images: list[torch.Tensor], targets: list[Instances]
    ) -> dict[str, torch.Tensor]:
        tv_targets = []
        for t in targets:
            keep = ~t.iscrowd if t.iscrowd is not None else slice(None)
            assert t.masks is not None
            tv_targets.append(
                {
                    "boxes": t.boxes[keep],
                    "labels": t.labels[keep] + 1,
                    "masks": t.masks[keep].to(torch.uint8),
                }
            )
        was_training = self.net.training
        self.net.train()
        try:
            return self.net(images, tv_targets)
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def predict(self, images: list[torch.Tensor]) -> list[Instances]:
        was_training = self.net.training
        self.net.eval()
        try:
            outs = self.net(images)
        finally:
            self.net.train(was_training)
        res = []
        for img, o in zip(images, outs):
            h, w = img.shape[-2:]
            res.append(
                Instances(
                    image_size=(h, w),
                    boxes=o["boxes"].cpu(),
                    labels=o["labels"].cpu() - 1,
                    scores=o["scores"].cpu(),
                    masks=(o["masks"][:, 0] > self.mask_threshold).cpu(),
                )
            )
        return res


def build_tiny(
    name: str = "tiny", num_classes: int = 2, score_threshold: float = 0.0, max_detections: int = 20
) -> TinyMaskRCNN:
    """``zoo.build_model``-like builder for :class:`TinyMaskRCNN`."""
    assert name == "tiny", name
    return TinyMaskRCNN(num_classes, score_threshold=score_threshold, max_detections=max_detections)


def check_calibration_against_predictions(
    model: Any, dataset: InstanceDataset, candidates: tuple[float, ...] = (0.3, 0.5, 0.7)
) -> dict[float, float]:
    """``choose_thresholds`` on ``dataset`` (``model``: a model or a test-time augmentation
    wrapper) must return its best candidates, leave the model's threshold (0.5) and a scale
    wrapper's agreement power alone, and report for every threshold (at the chosen power) and
    every power (at the chosen threshold) the segm AP that a full ``predict_dataset`` with
    those settings gives. Returns ``{threshold: AP}``."""
    import pytest

    from instseg.engine.evaluate import coco_summary, predict_dataset
    from instseg.inference.calibrate import choose_thresholds
    from instseg.inference.tta import ScaleTTA, base_model

    base = base_model(model)
    scale = model if isinstance(model, ScaleTTA) else None
    power0 = scale.agreement if scale is not None else 0.0
    found = choose_thresholds(model, dataset, candidates, None)
    ap = found.ap
    assert base.mask_threshold == 0.5
    assert scale is None or scale.agreement == power0
    best = max(found.agreement_ap[found.agreement], *ap.values())
    assert ap[found.mask_threshold] == found.agreement_ap[found.agreement] == best
    gt = dataset.to_coco()
    settings = [(c, found.agreement, v) for c, v in ap.items()]
    settings += [(found.mask_threshold, p, v) for p, v in found.agreement_ap.items()]
    for c, p, value in settings:
        base.mask_threshold = c
        if scale is not None:
            scale.agreement = p
        try:
            res = predict_dataset(model, dataset)
        finally:
            base.mask_threshold = 0.5
            if scale is not None:
                scale.agreement = power0
        assert coco_summary(gt, res, "segm")["AP"] == pytest.approx(value, abs=1e-9)
    return ap
