"""Data-adaptive defaults for any zoo model from a training set's annotation statistics:
``suggest_for_model(name, dataset)`` -> ``build_model`` overrides (Mask R-CNN:
:mod:`instseg.models.mask_rcnn.config`; SOLOv2: :mod:`instseg.models.solov2.config`), and
``training_crop`` -> the side of the random training crop, which keeps the cost of a
training step independent of the image size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from instseg.models.common.size_stats import CPU_LONG_SIDE, DatasetSizeStats, cpu_input_cap
from instseg.models.mask_rcnn.config import suggest_config
from instseg.models.solov2.config import suggest_solov2_config
from instseg.models.zoo import MODELS

if TYPE_CHECKING:
    from instseg.data.dataset import InstanceDataset

__all__ = [
    "DatasetSizeStats",
    "explain",
    "refit_input",
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


#: config keys that hold no weights and follow the data: the input size and detection budgets
INPUT_KEYS = ("input_scale", "train_input_scale", "min_size", "max_size", "max_detections",
              "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")  # fmt: skip


def refit_input(config: dict[str, Any], ds: InstanceDataset, cpu: bool = False) -> dict[str, Any]:
    """A trained model's ``config`` with its input size and detection budgets (``INPUT_KEYS``)
    fitted to new data ``ds`` by the rules that fitted them to the old data, so that objects
    reach the network at the sizes it learned (a model trained on 19 px nuclei at x1.7 meets
    44 px cells at x1.0, not x1.7). The architecture (anchors, levels, grids) is kept; a name
    outside the zoo keeps its config."""
    if config.get("name") not in MODELS:
        return dict(config)
    fit = suggest_for_model(config["name"], ds, cpu=cpu)
    if not fit:
        return dict(config)
    kept = {k: v for k, v in config.items() if k not in INPUT_KEYS}
    return {**kept, **{k: v for k, v in fit.items() if k in INPUT_KEYS}}


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


def explain(stats: DatasetSizeStats, cfg: dict[str, Any]) -> list[str]:
    """One line per data-adaptive choice of ``cfg`` (``suggest_for_model``'s result) with the
    statistic behind it, printed at the start of training."""
    if not cfg:
        return ["settings: the model's defaults (no instances to measure)"]
    p50, p5 = stats.mask_size_p50, stats.mask_size_p5
    lines = []
    scale = cfg.get("input_scale")
    train = cfg.get("train_input_scale", scale)
    if scale is not None:
        lines.append(
            f"input: every image x{scale:g} ({_why_scale(scale, stats)}; object sizes in pixels "
            f"vary less than relative ones); median object {p50:.0f} -> {p50 * scale:.0f} px, "
            f"5% smallest {p5:.0f} -> {p5 * scale:.0f} px"
        )
        if train != scale:
            lines.append(
                f"training input: x{train:g} (on a CPU objects are trained at >= 16 px median, "
                f">= 8 px small: cheaper steps); inference keeps x{scale:g}"
            )
    elif "min_size" in cfg:
        k = cfg["min_size"] / max(stats.image_short_p50, 1.0)
        lines.append(
            f"input: short side {cfg['min_size']} px, long side <= {cfg['max_size']} px "
            f"(typical image {stats.image_short_p50:.0f}x{stats.image_long_p50:.0f} px, x{k:.2f}: "
            f"{_why_scale(k, stats)}); "
            f"median object {p50:.0f} -> {p50 * k:.0f} px, 5% smallest {p5:.0f} -> {p5 * k:.0f} px"
        )
    if "anchor_sizes" in cfg:
        sizes = [a[0] for a in cfg["anchor_sizes"]]
        lines.append(
            f"pyramid: P{cfg['min_level']}-P6, anchors {sizes[0]}-{sizes[-1]} px, aspect "
            f"ratios {'/'.join(f'{r:g}' for r in cfg.get('aspect_ratios', [0.5, 1.0, 2.0]))} "
            f"(boxes: 5% smallest {stats.box_size_p5:.0f} px, h/w {stats.aspect_p10:.2f}-"
            f"{stats.aspect_p90:.2f})"
        )
    if "num_grids" in cfg:
        lines.append(f"grids: {cfg['num_grids']} cells per side (each object owns a cell)")
    lines.append(
        f"detections: up to {cfg.get('max_detections', 100)} per image (busiest training "
        f"image: {stats.instances_per_image_max} objects)"
    )
    return lines


def _why_scale(scale: float, stats: DatasetSizeStats) -> str:
    if abs(scale - 1.0) < 0.05:  # short-side sizes are rounded to multiples of 32
        return "objects kept at their size"
    if scale > 1.0:
        return "small objects upsampled"
    if scale < 1.0 and abs(scale - cpu_input_cap(stats)) < 1e-6:
        return f"large photos downsampled to a {CPU_LONG_SIDE:.0f} px long side for CPU training"
    return "large objects downsampled" if scale < 1.0 else "objects kept at their size"
