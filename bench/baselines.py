"""Baselines of the accuracy benchmarks: torchvision's Mask R-CNN as a competent user fine-tunes
it, and a classical (no training) Otsu + distance-transform watershed for nuclei.

Reference model (``torchvision_reference``): ``torchvision.models.detection.MaskRCNN`` on
torchvision's ImageNet MobileNetV2 (IMAGENET1K_V1) through ``_mobilenet_extractor`` (FPN on
its last two stages + max pool, FrozenBatchNorm2d, all 5 stages trainable), 3-level anchors
32-512 with ratios 0.5/1/2 on every level (as ``fasterrcnn_mobilenet_v3_large_fpn``),
torchvision's default heads and post-processing, images resized to a long side of 512.

Reference recipe (``train_reference``): AdamW lr 1e-3, weight decay 1e-4, batch 2, linear
warm-up over 50 steps, then cosine decay over the rest of the wall-clock budget, horizontal
flip only, gradient-norm clip 10. Same data pipeline as ours (``TrainingDataset`` +
``build_loader``).

``torchvision_maskrcnn`` builds the from-scratch ResNet-18 / MobileNetV3 layouts that the
speed benchmark (``infer_speed.py``) times.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from instseg.data.dataset import InstanceDataset
from instseg.structures import Instances

__all__ = [
    "predict_torchvision",
    "torchvision_maskrcnn",
    "torchvision_reference",
    "train_reference",
    "watershed_instances",
    "watershed_results",
]


# -- torchvision reference ------------------------------------------------------------------
def torchvision_maskrcnn(
    num_classes: int,
    backbone: str = "resnet18",
    min_size: int = 800,
    max_size: int = 1333,
    **kwargs: Any,
) -> nn.Module:
    """torchvision ``MaskRCNN`` for ``num_classes`` foreground classes (``K + 1`` inside),
    backbone ``resnet18`` (FPN P2..P6) or ``mobilenet_v3_large`` (FPN on its last 2 stages,
    anchors as ``fasterrcnn_mobilenet_v3_large_fpn``), from scratch (BatchNorm, all trainable).
    ``kwargs`` go to ``MaskRCNN`` (e.g. ``box_score_thresh``, ``box_detections_per_img``)."""
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import (
        _mobilenet_extractor,
        resnet_fpn_backbone,
    )

    if backbone == "mobilenet_v3_large":
        body = _mobilenet_extractor(
            mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d), True, 6
        )
        sizes = ((32, 64, 128, 256, 512),) * 3
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 3)
        return MaskRCNN(
            body, num_classes + 1, min_size, max_size, rpn_anchor_generator=anchors, **kwargs
        )
    if not backbone.startswith("resnet"):
        raise ValueError(
            f"reference backbone must be resnet* or mobilenet_v3_large, got {backbone}"
        )
    body = resnet_fpn_backbone(
        backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    return MaskRCNN(body, num_classes + 1, min_size, max_size, **kwargs)


def torchvision_reference(
    num_classes: int, long_side: int = 512, pretrained: bool = True, **kwargs: Any
) -> nn.Module:
    """The fair reference (module docstring): torchvision ``MaskRCNN`` on the ImageNet
    MobileNetV2 (``pretrained=False``: the same network from scratch) for ``num_classes``
    foreground classes, images resized to ``long_side``. ``kwargs`` go to ``MaskRCNN``."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    weights = MobileNet_V2_Weights.IMAGENET1K_V1 if pretrained else None
    net = mobilenet_v2(weights=weights, norm_layer=FrozenBatchNorm2d if pretrained else None)
    body = _mobilenet_extractor(net, True, 5)
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    return MaskRCNN(
        body, num_classes + 1, long_side, long_side, rpn_anchor_generator=anchors, **kwargs
    )


def _tv_target(t: Instances) -> dict[str, Tensor]:
    """Our ``Instances`` -> torchvision target (labels 1..K, uint8 masks), crowd dropped."""
    keep = ~t.iscrowd if t.iscrowd is not None else torch.ones(len(t), dtype=torch.bool)
    boxes = t.boxes[keep].float()
    keep2 = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert t.masks is not None
    return {
        "boxes": boxes[keep2],
        "labels": t.labels[keep][keep2] + 1,
        "masks": t.masks[keep][keep2].to(torch.uint8),
    }


def train_reference(
    model: nn.Module,
    train_set: InstanceDataset,
    minutes: float,
    out: Path,
    batch_size: int = 2,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup: int = 50,
    grad_clip: float = 10.0,
    seed: int = 0,
    num_workers: int | None = None,
    log_every: int = 20,
) -> dict[str, Any]:
    """Train a torchvision detection model for ``minutes`` of wall time (module docstring):
    AdamW, ``warmup`` linear warm-up steps from lr/1000, then cosine to 0 at the budget's end.

    The clock starts before the first batch; a step starts only while time is left. Writes
    ``out/last.pt`` (state dict) and ``out/metrics.jsonl``. Non-finite losses skip the update
    (counted in ``skipped_steps``). Returns ``{"train_s", "steps", "skipped_steps", "checkpoint"}``.
    """
    from instseg.data.loader import TrainingDataset, build_loader
    from instseg.data.transforms import AugmentConfig, build_transform

    hflip_only = AugmentConfig(hflip=True, scale_range=(1.0, 1.0), brightness=0.0,
                               contrast=0.0, saturation=0.0)  # fmt: skip
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    data = TrainingDataset(train_set, transform=build_transform(hflip_only), seed=seed)
    loader = build_loader(data, batch_size, True, seed, num_workers, device="cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    budget = minutes * 60.0
    model.train()
    step = skipped = epoch = 0
    t_warm = 0.0  # elapsed time when the warm-up ended: the cosine spans the rest
    log = open(out / "metrics.jsonl", "w")  # noqa: SIM115
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < budget:
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            data.set_epoch(epoch)
            for images, targets in loader:
                elapsed = time.perf_counter() - t0
                if elapsed >= budget:
                    break
                if step < warmup:
                    a = step / warmup
                    factor, t_warm = 0.001 * (1 - a) + a, elapsed
                else:
                    t = (elapsed - t_warm) / max(budget - t_warm, 1e-6)
                    factor = 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
                for g in opt.param_groups:
                    g["lr"] = lr * factor
                losses = model(images, [_tv_target(t) for t in targets])
                loss = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    skipped += 1
                    continue
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                step += 1
                if step % log_every == 0 or step == 1:
                    row = {"step": step, "epoch": epoch, "lr": lr * factor, "loss": loss.item(),
                           **{k: v.item() for k, v in losses.items()}, "time": round(elapsed, 2)}  # fmt: skip
                    log.write(json.dumps(row) + "\n")
                    log.flush()
            epoch += 1
    finally:
        log.close()
    train_s = time.perf_counter() - t0
    torch.save(model.state_dict(), out / "last.pt")
    return {"train_s": train_s, "steps": step, "skipped_steps": skipped, "epochs": epoch,
            "checkpoint": str(out / "last.pt")}  # fmt: skip


@torch.no_grad()
def predict_torchvision(model: nn.Module, dataset: InstanceDataset) -> list[dict[str, Any]]:
    """COCO results of a torchvision Mask R-CNN (eval mode, soft masks > 0.5) on ``dataset``."""
    from instseg.data.coco import instances_to_coco
    from instseg.data.loader import TrainingDataset

    model.eval()
    data = TrainingDataset(dataset)
    results: list[dict[str, Any]] = []
    for i, rec in enumerate(dataset.images):
        image, _ = data[i]
        det = model([image])[0]
        inst = Instances(
            image_size=(int(image.shape[-2]), int(image.shape[-1])),
            boxes=det["boxes"],
            labels=det["labels"] - 1,
            scores=det["scores"],
            masks=det["masks"][:, 0] > 0.5,
        )
        results.extend(instances_to_coco(inst, rec.id, dataset.label_to_cat_id))
    return results


# -- classical watershed (nuclei) -----------------------------------------------------------
def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Label image with the labels of fewer than ``min_area`` pixels set to 0."""
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def watershed_instances(
    image: np.ndarray,
    min_area: int = 30,
    sigma: float = 1.0,
    min_distance_frac: float = 0.5,
    multiotsu_brightfield: bool = True,
    local_block: int = 51,
    local_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei of an RGB uint8 ``(H, W, 3)`` image -> ``(label image (H, W) int32, scores (N,))``.

    Grayscale (0.5-99.5 percentile stretch), Gaussian ``sigma``; inverted when the Otsu
    foreground covers more than half the image (brightfield: dark nuclei on a bright
    background), where grayscale brightfield takes the upper of 3 multi-Otsu classes
    (background / cytoplasm / nuclei); foreground = above that threshold and above the local
    Gaussian mean of a ``local_block`` window (0: off; splits dense tissue); holes filled;
    objects < ``min_area`` px removed; markers = ``peak_local_max`` of the smoothed distance
    transform, at least ``min_distance_frac`` x the median object radius apart; watershed on
    its negative inside the foreground. Score of object ``i`` (in (0.5, 1]): ``0.5 + 0.5 *``
    its mean normalized intensity, so AP has a ranking and F1 (score >= 0.5) keeps every object.
    Parameter values were picked by segm AP on the DSB training split (the local-threshold
    step itself was added after looking at a val failure: dense tissue merged by Otsu).
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_local, threshold_multiotsu, threshold_otsu
    from skimage.measure import label as cc_label
    from skimage.segmentation import watershed

    gray = image.astype(np.float64).mean(axis=2)
    lo, hi = np.percentile(gray, (0.5, 99.5))
    gray = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    gray = gaussian(gray, sigma=sigma)
    if gray.max() - gray.min() < 1e-6:
        return np.zeros(gray.shape, np.int32), np.zeros(0)
    t = threshold_otsu(gray)
    if (gray > t).mean() > 0.5:
        gray, t = 1.0 - gray, 1.0 - t
        if multiotsu_brightfield and np.ptp(image.astype(np.int16), axis=2).max() == 0:
            t = float(threshold_multiotsu(gray, classes=3)[-1])
    fg = gray > t
    if local_block:  # also locally brighter than the surroundings: splits dense tissue
        fg &= gray > threshold_local(gray, local_block, method="gaussian", offset=-local_offset)
    fg = ndi.binary_fill_holes(fg)
    cc = _drop_small(cc_label(fg), min_area)
    fg = cc > 0
    if cc.max() == 0:
        return np.zeros(gray.shape, np.int32), np.zeros(0)
    dist = ndi.distance_transform_edt(fg)
    areas = np.bincount(cc.ravel())[1:]
    radius = math.sqrt(float(np.median(areas)) / math.pi)
    min_distance = max(2, int(round(min_distance_frac * radius)))
    smooth = gaussian(dist, sigma=max(1.0, 0.25 * radius))
    peaks = peak_local_max(smooth, min_distance=min_distance, labels=cc, exclude_border=False)
    markers = np.zeros(gray.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak keep one marker at their distance maximum
    missing = np.setdiff1d(np.unique(cc[fg]), np.unique(cc[markers > 0]))
    if len(missing):
        pos = ndi.maximum_position(dist, cc, missing)
        for k, (y, x) in enumerate(pos):
            markers[int(y), int(x)] = len(peaks) + 1 + k
    labels = watershed(-smooth, markers, mask=fg).astype(np.int32)
    labels = _drop_small(labels, min_area)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    means = ndi.mean(gray, labels, ids) if len(ids) else np.zeros(0)
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)  # relabel 1..N in the order of ``scores``
    out = lut[labels]
    return out, 0.5 + 0.5 * np.clip(np.asarray(means, dtype=np.float64), 0, 1)


def watershed_results(dataset: InstanceDataset, **kwargs: Any) -> list[dict[str, Any]]:
    """COCO results of :func:`watershed_instances` on every image (first category)."""
    from instseg import masks as mask_codec

    cat = dataset.label_to_cat_id[0]
    results: list[dict[str, Any]] = []
    for i, rec in enumerate(dataset.images):
        labels, scores = watershed_instances(dataset.load_image(i), **kwargs)
        if len(scores) == 0:
            continue
        masks = labels[None] == np.arange(1, len(scores) + 1)[:, None, None]
        rles = mask_codec.encode(masks)
        boxes = mask_codec.rle_boxes_xywh(rles)
        for rle, box, s in zip(rles, boxes, scores):
            results.append({
                "image_id": rec.id, "category_id": cat, "score": round(float(s), 5),
                "bbox": [float(v) for v in box],
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]},
            })  # fmt: skip
    return results
