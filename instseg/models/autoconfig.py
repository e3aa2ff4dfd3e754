"""Data-adaptive Mask R-CNN defaults from annotation statistics (no image decoding).

``DatasetSizeStats.from_dataset(ds)`` summarises image sizes and object sizes;
``suggest_config(stats)`` turns them into ``build_model`` overrides for the GroupNorm
Mask R-CNN variants:

* input scale: small objects are upsampled until the median object is >= 24 px and the
  5th percentile >= 12 px at the input; large objects are downsampled (for speed) while the
  median stays >= 96 px and the 5th percentile >= 32 px. When object sizes in pixels vary
  less across images than object sizes relative to the image (microscopy, fixed optics),
  every image gets the same scale (``input_scale``; long side capped at
  ``MAX_FIXED_SCALE_INPUT``); otherwise torchvision's short-side resize (``min_size``, long
  side capped by ``max_input_size``). Training crops (``training_crop``) keep the cost of a
  training step independent of the image size.
* CPU training (``cpu=True``): training alone runs at a smaller scale
  (``train_input_scale``: median object >= 16 px, 5th percentile >= 8 px) while inference
  keeps the full scale; 1000 RPN proposals per training image; one anchor shape for
  roundish objects; the CPU variants narrow to 48 channels when they use P2
  (``suggest_for_model``).
* anchors: one size per pyramid level, doubling from the 5th-percentile box size; P2
  (stride 4) is dropped when even small objects are >= 48 px (a large saving on CPU).
* aspect ratios from the boxes' h/w spread; detections / proposal budgets from the
  number of instances per image (crowded nuclei images need 300+ detections); a stricter
  box NMS (0.3) for crowded objects that hardly overlap.

Sizes are ``sqrt(area)`` in pixels; ``mask_size`` from the mask area, ``box_size`` from
the box (xywh on disk) area. Crowd annotations are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from instseg.data.dataset import InstanceDataset

__all__ = ["DatasetSizeStats", "suggest_config", "suggest_for_model", "training_crop"]

MEDIAN_MIN, SMALL_MIN = 24.0, 12.0  # upsample until objects reach these sizes
#: training on a CPU, steps are dear: objects are upsampled only to these sizes and crowded
#: images sample 256 (not 512) anchors / RoIs, so a time budget buys more, cheaper steps
CPU_MEDIAN_MIN, CPU_SMALL_MIN = 16.0, 8.0
#: CPU variants whose FPN / heads narrow to CPU_FPN_CHANNELS when training on a CPU with a
#: stride-4 level (P2): its 3x3 FPN / RPN convs cost more than the whole backbone (nuclei,
#: 2 cores: 0.70 s per step at 96 channels, 0.57 at 64, 0.53 at 48; 15 min at 96: 1198 steps,
#: segm AP 0.352 / F1 0.797; at 64: 1521 steps, 0.362 / 0.811; at 48 with the proposals and
#: anchor shape below, 0.42 s per step: 1930 steps, 0.388 / 0.810)
CPU_NARROW, CPU_FPN_CHANNELS = ("maskrcnn_r18_fpn", "maskrcnn_mnv3_fpn"), 48
#: CPU training keeps this many RPN proposals per image before / after NMS (torchvision: 2000;
#: detectron2's FPN default is 1000); the RoI heads sample 256 or 512 of them anyway
CPU_RPN_TRAIN_PROPOSALS = 1000
#: objects whose box h/w stays within these bounds (10th / 90th percentile) get one anchor
#: shape (1:1) on a CPU instead of three: a third of the RPN's anchors and a cheaper head
#: (nuclei: 10th / 90th percentile 0.62 / 1.53; the best-matching anchor still serves
#: elongated ones)
ROUND_ASPECT = (0.5, 2.0)
MEDIAN_KEEP, SMALL_KEEP = 96.0, 32.0  # downsample only while objects stay this large
#: crowded images (median > 20 instances) whose objects rarely overlap (<= 2% of them have
#: a neighbour with box IoU > 0.3: nuclei 1.2%) get box NMS at 0.3 instead of 0.5: fewer
#: duplicate detections (nuclei, same checkpoint: F1@0.5 0.767 -> 0.800, AP50 +0.02)
OVERLAP_IOU, OVERLAP_MAX_FRACTION, CROWDED_INSTANCES = 0.3, 0.02, 20
MAX_FIXED_SCALE_INPUT = 2560  # long-side cap of fixed-scale models (input_scale)
TRAIN_CROP = 512  # default training crop of fixed-scale models, in model-input pixels
#: ... of SOLOv2 on small objects (configs with the position prior: nuclei): more, cheaper
#: steps in a CPU budget (DSB nuclei, 15 min, seeds 0-2: TTA AP mean 0.383 at 512 -> 0.394 at
#: 320, every seed up; bench/README.md, ninth session)
SMALL_OBJECT_CROP = 320


@dataclass
class DatasetSizeStats:
    """Percentile summary of a dataset's image and object sizes (pixels)."""

    num_images: int
    num_instances: int
    image_short_p50: float
    image_long_p50: float
    image_long_max: float
    mask_size_p5: float
    mask_size_p25: float
    mask_size_p50: float
    mask_size_p95: float
    box_size_p5: float
    box_size_p50: float
    box_size_p95: float
    aspect_p10: float  # box height / width
    aspect_p50: float
    aspect_p90: float
    instances_per_image_p50: float
    instances_per_image_max: int
    #: std of log(per-image median object size): in pixels / relative to the short side
    abs_size_spread: float
    rel_size_spread: float
    #: fraction of instances whose box overlaps another's of the same image with IoU > 0.3
    #: (None when box positions are not given)
    overlap_fraction: float | None = None

    @classmethod
    def from_arrays(
        cls,
        image_sizes: Sequence[tuple[int, int]],
        objects: Sequence[Sequence[tuple[float, float, float]]],
        boxes: Sequence[np.ndarray] | None = None,
    ) -> DatasetSizeStats:
        """``image_sizes[i] = (H, W)``; ``objects[i]`` = ``(mask_area, box_w, box_h)`` per
        (non-crowd) instance of image ``i``; ``boxes[i]``: their ``(n, 4)`` xywh boxes."""
        if len(image_sizes) != len(objects):
            raise ValueError("image_sizes and objects must have the same length")
        hw = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
        short, long = hw.min(1), hw.max(1)
        rows = [np.asarray(o, dtype=np.float64).reshape(-1, 3) for o in objects]
        allo = np.concatenate(rows) if rows else np.zeros((0, 3))
        allo = allo[(allo[:, 0] > 0) & (allo[:, 1] > 0) & (allo[:, 2] > 0)]
        counts = np.array([len(r) for r in rows]) if rows else np.zeros(1)
        mask = np.sqrt(allo[:, 0])
        box = np.sqrt(allo[:, 1] * allo[:, 2])
        aspect = allo[:, 2] / np.maximum(allo[:, 1], 1e-6)
        per_abs, per_rel = [], []
        for r, s in zip(rows, short):
            r = r[r[:, 0] > 0]
            if len(r):
                med = float(np.median(np.sqrt(r[:, 0])))
                per_abs.append(math.log(med))
                per_rel.append(math.log(med / max(s, 1.0)))

        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if a.size else 0.0

        return cls(
            num_images=len(hw),
            num_instances=int(len(allo)),
            image_short_p50=pct(short, 50),
            image_long_p50=pct(long, 50),
            image_long_max=float(long.max()) if long.size else 0.0,
            mask_size_p5=pct(mask, 5),
            mask_size_p25=pct(mask, 25),
            mask_size_p50=pct(mask, 50),
            mask_size_p95=pct(mask, 95),
            box_size_p5=pct(box, 5),
            box_size_p50=pct(box, 50),
            box_size_p95=pct(box, 95),
            aspect_p10=pct(aspect, 10),
            aspect_p50=pct(aspect, 50),
            aspect_p90=pct(aspect, 90),
            instances_per_image_p50=pct(counts, 50),
            instances_per_image_max=int(counts.max()) if counts.size else 0,
            abs_size_spread=float(np.std(per_abs)) if per_abs else 0.0,
            rel_size_spread=float(np.std(per_rel)) if per_rel else 0.0,
            overlap_fraction=None if boxes is None else _overlap_fraction(boxes, OVERLAP_IOU),
        )

    @classmethod
    def from_dataset(cls, ds: InstanceDataset) -> DatasetSizeStats:
        """Statistics from the annotations' ``area`` and ``bbox`` and the records' sizes."""
        sizes = [(r.height, r.width) for r in ds.images]
        objects = [
            [(a.area, a.bbox[2], a.bbox[3]) for a in r.annotations if not a.iscrowd]
            for r in ds.images
        ]
        boxes = [
            np.asarray([a.bbox for a in r.annotations if not a.iscrowd], np.float64).reshape(-1, 4)
            for r in ds.images
        ]
        return cls.from_arrays(sizes, objects, boxes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _overlap_fraction(boxes: Sequence[np.ndarray], iou: float) -> float:
    """Fraction of all boxes (xywh, per image) whose IoU with another box of their image
    exceeds ``iou``."""
    hits = total = 0
    for b in boxes:
        b = np.asarray(b, np.float64).reshape(-1, 4)
        total += len(b)
        if len(b) < 2:
            continue
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
        ih = np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None)
        inter = iw * ih
        area = b[:, 2] * b[:, 3]
        ious = inter / np.maximum(area[:, None] + area - inter, 1e-9)
        np.fill_diagonal(ious, 0.0)
        hits += int((ious.max(1) > iou).sum())
    return hits / total if total else 0.0


def _nice(x: float, step: float = 0.05) -> float:
    return round(max(step, round(x / step) * step), 4)


def _upsampling(stats: DatasetSizeStats, median_min: float, small_min: float) -> float:
    """Input scale that brings the median / 5th-percentile object to ``median_min`` /
    ``small_min`` px (large objects downsampled while >= ``MEDIAN_KEEP`` / ``SMALL_KEEP``)."""
    p5, p50 = max(stats.mask_size_p5, 1.0), stats.mask_size_p50
    scale = max(median_min / p50, small_min / p5)
    if scale < 1.0:
        scale = min(1.0, max(scale, MEDIAN_KEEP / p50, SMALL_KEEP / p5))
    return _nice(min(scale, 4.0))


def suggest_config(
    stats: DatasetSizeStats, max_input_size: int = 1333, cpu: bool = False
) -> dict[str, Any]:
    """``build_model`` overrides for a GN Mask R-CNN variant (``maskrcnn_r18_fpn`` ...).

    ``cpu``: settings for training on a CPU (smaller upsampling targets, fewer samples and
    proposals, one anchor shape for roundish objects).

    Returns ``{}`` for a dataset without instances. Keys: ``input_scale`` or ``min_size``,
    ``max_size``, ``min_level``, ``anchor_sizes``, ``aspect_ratios``, ``max_detections``,
    ``rpn_pre_nms_top_n_train`` and ``rpn_post_nms_top_n_train`` (``cpu``),
    ``rpn_pre_nms_top_n_test``, ``rpn_post_nms_top_n_test``, ``rpn_batch_size_per_image``,
    ``box_batch_size_per_image`` (the last four only when images are crowded), and
    ``box_nms_thresh`` 0.3 when crowded objects rarely overlap (``OVERLAP_MAX_FRACTION``).
    """
    if stats.num_instances == 0 or stats.mask_size_p50 <= 0:
        return {}
    scale = _upsampling(stats, MEDIAN_MIN, SMALL_MIN)
    # on a CPU only training runs at the smaller scale (steps are dear); inference keeps the
    # full one (nuclei, one checkpoint trained at 1.15: segm AP 0.362 inferring at 1.15,
    # 0.375 at 1.7)
    train_scale = _upsampling(stats, CPU_MEDIAN_MIN, CPU_SMALL_MIN) if cpu else scale
    cfg: dict[str, Any] = {}
    if stats.abs_size_spread <= stats.rel_size_spread:
        cfg["input_scale"] = scale
        if train_scale < scale:
            cfg["train_input_scale"] = train_scale
        # every image at the same scale (the largest too): a cap would shrink large images'
        # objects below the size the model was trained on; only absurd sizes are capped
        cap = max(max_input_size, MAX_FIXED_SCALE_INPUT)
        cfg["max_size"] = int(min(cap, math.ceil(scale * stats.image_long_max)))
    else:  # one size for training and inference in short-side mode
        short = train_scale * stats.image_short_p50
        cfg["min_size"] = int(max(128, 32 * round(short / 32)))
        ratio = stats.image_long_p50 / max(stats.image_short_p50, 1.0)
        cfg["max_size"] = int(min(max_input_size, math.ceil(cfg["min_size"] * max(ratio, 1.0) * 1.5)))
    # anchors: smallest = 5th-percentile box at the (training) input, rounded to a power of
    # two; at a larger inference scale the levels above cover the larger objects
    small_box = max(stats.box_size_p5 * train_scale, 1.0)
    base = int(2 ** min(6, max(3, round(math.log2(small_box)))))
    min_level = 3 if small_box >= 48 else 2
    levels = 6 - min_level + 1
    if min_level == 3 and base < 64:
        base = 64
    cfg["min_level"] = min_level
    cfg["anchor_sizes"] = [[base * 2**i] for i in range(levels)]
    if stats.aspect_p10 < 0.4 or stats.aspect_p90 > 2.5:
        lo, mid, hi = stats.aspect_p10, stats.aspect_p50, stats.aspect_p90
        cfg["aspect_ratios"] = [_nice(lo, 0.25), _nice(mid, 0.25), _nice(hi, 0.25)]
    elif cpu and ROUND_ASPECT[0] <= stats.aspect_p10 and stats.aspect_p90 <= ROUND_ASPECT[1]:
        cfg["aspect_ratios"] = [1.0]
    if cpu:
        cfg["rpn_pre_nms_top_n_train"] = CPU_RPN_TRAIN_PROPOSALS
        cfg["rpn_post_nms_top_n_train"] = CPU_RPN_TRAIN_PROPOSALS
    # crowded images: more detections, proposals and RPN samples
    dets = max(100, 50 * math.ceil(1.2 * stats.instances_per_image_max / 50))
    cfg["max_detections"] = int(min(dets, 1000))
    if cfg["max_detections"] > 100:
        cfg["rpn_pre_nms_top_n_test"] = max(1000, 3 * cfg["max_detections"])
        cfg["rpn_post_nms_top_n_test"] = max(1000, 3 * cfg["max_detections"])
    if stats.instances_per_image_p50 > CROWDED_INSTANCES:
        cfg["rpn_batch_size_per_image"] = 256 if cpu else 512
        cfg["box_batch_size_per_image"] = 256 if cpu else 512
        overlap = stats.overlap_fraction
        if overlap is not None and overlap <= OVERLAP_MAX_FRACTION:
            cfg["box_nms_thresh"] = OVERLAP_IOU
    return cfg


def suggest_for_model(
    name: str, ds: InstanceDataset, max_input_size: int = 1333, cpu: bool = False
) -> dict[str, Any]:
    """Data-adaptive overrides for zoo model ``name`` (any family) from a training set
    (``cpu``: for training on a CPU, see :func:`suggest_config`).

    Use as ``build_model(name, K, **{**suggest_for_model(name, ds), **user_overrides})``.
    SOLOv2 names get ``suggest_solov2_config``; the torchvision-layout Mask R-CNN (fixed
    P2-P6 anchors) gets only the input size and detection budgets.
    """
    from instseg.models.zoo import MODELS

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}")
    family = MODELS[name].family
    if family not in ("maskrcnn", "solov2"):
        return {}  # a family without data-adaptive settings
    stats = DatasetSizeStats.from_dataset(ds)
    if family == "solov2":
        from instseg.models.solov2.config import suggest_solov2_config

        return suggest_solov2_config(stats, ds, max_input_size=max_input_size, cpu=cpu)
    cfg = suggest_config(stats, max_input_size=max_input_size, cpu=cpu)
    if cpu and cfg.get("min_level") == 2 and name in CPU_NARROW:
        cfg["fpn_channels"] = CPU_FPN_CHANNELS
    if name == "maskrcnn_r50_fpn_torchvision":  # fixed P2-P6 anchors, 3 shapes per position
        cfg = {k: v for k, v in cfg.items() if k not in ("min_level", "anchor_sizes")}
        if len(cfg.get("aspect_ratios", (1.0, 1.0, 1.0))) != 3:  # its checkpoints' RPN head
            del cfg["aspect_ratios"]
    return cfg


def training_crop(config: dict[str, Any], ds: InstanceDataset, crop: int | None = None) -> int | None:
    """Side of the square random training crop in dataset pixels, or ``None`` (whole images).

    ``crop`` is ``instseg train --crop``: 0 turns cropping off; ``None`` picks the default,
    which is ``TRAIN_CROP`` model-input pixels for fixed-scale models (``input_scale``, e.g.
    microscopy upsampled x1.7: 512 / 1.7 = 301 px crops, so a step costs the same whatever
    the image size and many more steps fit a budget), ``SMALL_OBJECT_CROP`` for SOLOv2's
    small-object configs (``position_prior``), and no crop for short-side-resize
    models (a crop would be resized like a whole image, i.e. zoomed). With ``input_scale``
    ``crop`` is in model-input pixels, otherwise in image pixels. No crop when the largest
    image already fits.
    """
    if crop is not None and crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    if crop == 0:
        return None
    scale = config.get("train_input_scale") or config.get("input_scale")
    if crop is None:
        if scale is None:
            return None
        crop = SMALL_OBJECT_CROP if config.get("position_prior") else TRAIN_CROP
    side = int(round(crop / float(scale))) if scale else int(crop)
    largest = max((max(r.height, r.width) for r in ds.images), default=0)
    return max(side, 1) if side < largest else None
