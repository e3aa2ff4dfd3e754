"""Data-adaptive Mask R-CNN defaults from annotation statistics
(:class:`~instseg.models.common.size_stats.DatasetSizeStats`).

``suggest_config(stats)`` turns them into ``build_model`` overrides for the GroupNorm
Mask R-CNN variants (SOLOv2's rules, :mod:`instseg.models.solov2.config`, start from its
input size):

* input scale: small objects are upsampled until the median object is >= 24 px and the
  5th percentile >= 12 px at the input; large objects are downsampled (for speed) while the
  median stays >= 96 px and the 5th percentile >= 32 px. When object sizes in pixels vary
  less across images than object sizes relative to the image (microscopy, fixed optics),
  every image gets the same scale (``input_scale``; long side capped at
  ``MAX_FIXED_SCALE_INPUT``); otherwise torchvision's short-side resize (``min_size``, long
  side capped by ``max_input_size``).
* CPU training (``cpu=True``): large photos are downsampled until the typical one's long
  side is 640 px, while objects stay >= 64 px (median) / 16 px (5th percentile)
  (:func:`~instseg.models.common.size_stats.cpu_input_cap`; training and inference); training
  alone runs at a smaller scale
  (``train_input_scale``: median object >= 16 px, 5th percentile >= 8 px) while inference
  keeps the full scale; 1000 RPN proposals per training image; one anchor shape for
  roundish objects.
* anchors: one size per pyramid level, doubling from the 5th-percentile box size; P2
  (stride 4) is dropped when even small objects are >= 48 px (a large saving on CPU).
* aspect ratios from the boxes' h/w spread; detections / proposal budgets from the
  number of instances per image (crowded nuclei images need 300+ detections); a stricter
  box NMS (0.3) for crowded objects that hardly overlap.
"""

from __future__ import annotations

import math
from typing import Any

from instseg.models.common.size_stats import (
    OVERLAP_IOU,
    DatasetSizeStats,
    cpu_input_cap,
    nice,
    upsampling,
)

__all__ = ["suggest_config"]

MEDIAN_MIN, SMALL_MIN = 24.0, 12.0  # upsample until objects reach these sizes
#: training on a CPU, steps are dear: objects are upsampled only to these sizes and crowded
#: images sample 256 (not 512) anchors / RoIs, so a time budget buys more, cheaper steps
CPU_MEDIAN_MIN, CPU_SMALL_MIN = 16.0, 8.0
#: CPU training keeps this many RPN proposals per image before / after NMS (torchvision: 2000;
#: detectron2's FPN default is 1000); the RoI heads sample 256 or 512 of them anyway
CPU_RPN_TRAIN_PROPOSALS = 1000
#: objects whose box h/w stays within these bounds (10th / 90th percentile) get one anchor
#: shape (1:1) on a CPU instead of three: a third of the RPN's anchors and a cheaper head
ROUND_ASPECT = (0.5, 2.0)
#: crowded images (median > 20 instances) whose objects rarely overlap (<= 2% of them have
#: a neighbour with box IoU > 0.3) get box NMS at 0.3 instead of 0.5: fewer duplicates
OVERLAP_MAX_FRACTION, CROWDED_INSTANCES = 0.02, 20
MAX_FIXED_SCALE_INPUT = 2560  # long-side cap of fixed-scale models (input_scale)


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
    scale = upsampling(stats, MEDIAN_MIN, SMALL_MIN)
    # on a CPU only training runs at the smaller scale (steps are dear); inference keeps the
    # full one (bench/README.md)
    train_scale = upsampling(stats, CPU_MEDIAN_MIN, CPU_SMALL_MIN) if cpu else scale
    if cpu:  # large photos of large objects: a step costs the input's area
        cap = cpu_input_cap(stats)
        scale, train_scale = min(scale, cap), min(train_scale, cap)
    cfg: dict[str, Any] = {}
    # images of one size give equal spreads up to rounding: fixed scale (crops, cheap steps)
    if stats.abs_size_spread <= stats.rel_size_spread + 1e-9:
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
        cfg["aspect_ratios"] = [nice(lo, 0.25), nice(mid, 0.25), nice(hi, 0.25)]
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
