"""Data-adaptive defaults for any zoo model from a training set's annotation statistics:
``suggest_for_model(name, dataset)`` -> ``build_model`` overrides (Mask R-CNN:
:mod:`instseg.models.mask_rcnn.config`; SOLOv2: :mod:`instseg.models.solov2.config`), and
``training_crop`` -> the side of the random training crop, which keeps the cost of a
training step independent of the image size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from instseg.models.common.size_stats import DatasetSizeStats
from instseg.models.mask_rcnn.config import suggest_config
from instseg.models.solov2.config import suggest_solov2_config
from instseg.models.zoo import MODELS

if TYPE_CHECKING:
    from instseg.data.dataset import InstanceDataset

__all__ = [
    "DatasetSizeStats",
    "suggest_config",
    "suggest_for_model",
    "suggest_solov2_config",
    "training_crop",
]

#: CPU variants whose FPN / heads narrow to CPU_FPN_CHANNELS when training on a CPU with a
#: stride-4 level (P2): its 3x3 FPN / RPN convs cost more than the whole backbone
CPU_NARROW, CPU_FPN_CHANNELS = ("maskrcnn_r18_fpn", "maskrcnn_mnv3_fpn"), 48
TRAIN_CROP = 512  # default training crop of fixed-scale models, in model-input pixels
#: ... of SOLOv2 on small objects (configs with the position prior: nuclei): more, cheaper
#: steps in a CPU budget (bench/README.md)
SMALL_OBJECT_CROP = 320


def suggest_for_model(
    name: str, ds: InstanceDataset, max_input_size: int = 1333, cpu: bool = False
) -> dict[str, Any]:
    """Data-adaptive overrides for zoo model ``name`` (any family) from a training set
    (``cpu``: for training on a CPU, see :func:`suggest_config`).

    Use as ``build_model(name, K, **{**suggest_for_model(name, ds), **user_overrides})``.
    SOLOv2 names get ``suggest_solov2_config``; the torchvision-layout Mask R-CNN (fixed
    P2-P6 anchors) gets only the input size and detection budgets.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}")
    family = MODELS[name].family
    if family not in ("maskrcnn", "solov2"):
        return {}  # a family without data-adaptive settings
    stats = DatasetSizeStats.from_dataset(ds)
    if family == "solov2":
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
