"""Data-adaptive SOLOv2 defaults from annotation statistics (no image decoding).

``suggest_solov2_config(stats, dataset)`` turns
:class:`~instseg.models.autoconfig.DatasetSizeStats` into ``build_model`` overrides for the
SOLOv2 variants, in the spirit of Mask R-CNN's ``suggest_config`` (whose input-scale rule it
reuses, so both families see the same input):

* input: ``input_scale`` or ``min_size`` / ``max_size`` as ``suggest_config`` (the median
  object >= 24 px at the input, small ones >= 12 px, 16 / 8 px for CPU training; large
  images downsampled). With ``cpu`` and a fixed scale, SOLOv2 too trains at the smaller
  ``train_input_scale`` and infers at ``input_scale``; grids, scale ranges, cells and the
  prior are laid out at the training scale.
* scale ranges: the paper's ``(1, b), (b/2, 2b), (b, 4b), (2b, 8b), (4b, ~21b)`` with
  ``b = 96`` at 800x1333; here ``b`` = twice the median object (``sqrt`` of box area) at the
  input, clipped to [32, 96], so level 0 holds the typical object and its smaller half.
* grids: the paper's ``(40, 36, 24, 16, 12)`` scaled so that cells keep the paper's size
  relative to ``b`` (sparse large objects get coarse, cheap grids). Given the ``dataset``,
  the grids are then refined until :func:`assignment_coverage` (the share of objects that own
  at least one grid cell, i.e. can be learned at all) reaches ``min_coverage``: crowded
  nuclei need finer grids, as two objects whose centers share a cell leave one unlearned.
  Grids are capped at 128 cells.
* ``max_detections`` from the busiest image (as ``suggest_config``); ``nms_pre`` >= 2x that.
* small objects at a fixed input scale (``input_scale``, median object < 1/8 of the typical
  input side: nuclei, not PennFudan's pedestrians; images of many sizes, trained on random
  crops) also get ``grid_canvas`` = the typical input side (cells keep one pixel size on
  crops and on whole images of any size) and ``position_prior`` (kernels localize masks in
  pixels around their cell, not in image-relative CoordConv coordinates): see
  :mod:`instseg.models.solov2.prior`. They also get ``center_votes`` (pixels vote for
  their object's center, separating touching objects); docs/experiments.md has the
  measurements behind these choices.
  They also get ``point_nms=False``: SOLO's 2x2 max filter on cell scores drops a cell whose
  neighbour scores higher, and neighbouring cells of crowded small objects hold different
  objects (Matrix NMS still removes duplicates).
* min-area filter (``strides``): the paper's areas scaled with ``(b / 96)^2``, so that the
  smallest objects of level 0 are kept (the paper's 8 px at 1/4 scale is a ~11 px object).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from instseg.models.common.size_stats import DatasetSizeStats
from instseg.models.mask_rcnn.config import suggest_config

if TYPE_CHECKING:
    from instseg.data.dataset import InstanceDataset

__all__ = ["assignment_coverage", "suggest_solov2_config"]

PAPER_GRIDS = (40, 36, 24, 16, 12)
PAPER_RANGES = ((1.0, 96.0), (48.0, 192.0), (96.0, 384.0), (192.0, 768.0), (384.0, 2048.0))
PAPER_BASE = 96.0  # level-0 upper scale bound of the paper
PAPER_STRIDES = (8, 8, 16, 32, 32)  # min-area filter: 1/4-scale pixels per level
PAPER_SIDE = math.sqrt(800 * 1333)  # the paper's typical input side (geometric mean)
MAX_GRID = 128
GRID_STEPS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
SMALL_OBJECT = 1 / 8  # median object below this share of the input side: fixed cells + prior


def _input_scale(cfg: dict[str, Any], h: int, w: int) -> float:
    """The resize factor ``SOLOv2.losses`` applies to an ``h x w`` image under overrides
    ``cfg`` (the training scale)."""
    max_size = float(cfg.get("max_size", 1333))
    fixed = cfg.get("train_input_scale") or cfg.get("input_scale")
    if fixed is not None:
        return min(float(fixed), max_size / max(h, w))
    return min(float(cfg.get("min_size", 800)) / min(h, w), max_size / max(h, w))


def assignment_coverage(
    dataset: InstanceDataset, overrides: dict[str, Any], max_images: int = 200, sigma: float = 0.2
) -> float:
    """Share of non-crowd objects that own at least one positive grid cell under SOLOv2's
    target assignment with ``overrides`` (``num_grids``, ``grid_canvas``, ``scale_ranges``,
    ``min_size`` /
    ``max_size`` / ``input_scale``; paper defaults otherwise). Uses annotation boxes only
    (box centers stand in for mass centers) on up to ``max_images`` evenly spaced images."""
    import torch  # lazily: this module stays importable without torch (light CLI commands)

    from instseg.models.solov2 import assign

    grids = tuple(int(g) for g in overrides.get("num_grids", PAPER_GRIDS))
    canvas = overrides.get("grid_canvas")
    ranges = tuple((float(a), float(b)) for a, b in overrides.get("scale_ranges", PAPER_RANGES))
    step = max(1, math.ceil(len(dataset.images) / max_images))
    owned = total = 0
    for rec in dataset.images[::step]:
        anns = rec.annotations
        if not anns:
            continue
        s = _input_scale(overrides, rec.height, rec.width)
        hp, wp = (32 * math.ceil(round(v * s) / 32) for v in (rec.height, rec.width))
        xywh = torch.tensor([a.bbox for a in anns], dtype=torch.float32) * s
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        centers = torch.stack([xywh[:, 1] + xywh[:, 3] / 2, xywh[:, 0] + xywh[:, 2] / 2], 1)
        crowd = torch.tensor([bool(a.iscrowd) for a in anns])
        _, gt = assign.assign_targets(
            boxes, centers, torch.zeros(len(anns), dtype=torch.int64), crowd,
            (hp, wp), 1, assign.grid_shapes(grids, (hp, wp), canvas), ranges, sigma,
        )  # fmt: skip
        owned += int(gt[gt >= 0].unique().numel())
        total += int((~crowd).sum())
    return owned / total if total else 1.0


def suggest_solov2_config(
    stats: DatasetSizeStats,
    dataset: InstanceDataset | None = None,
    max_input_size: int = 1333,
    min_coverage: float = 0.97,
    cpu: bool = False,
) -> dict[str, Any]:
    """``build_model`` overrides for a SOLOv2 variant (``solov2_r18_fpn`` ...).

    Returns ``{}`` for a dataset without instances. Keys: ``input_scale`` or ``min_size``,
    ``max_size``, ``num_grids`` (5 ints), ``scale_ranges`` (5 ``[lo, hi]``),
    ``max_detections``, ``nms_pre``; for objects smaller than the paper's also ``strides``
    (min-area filter), and for small ones at a fixed scale ``grid_canvas``,
    ``position_prior``, ``point_nms``. With ``dataset`` (the one ``stats`` came from) the
    grids are refined to reach ``min_coverage`` (see the module docstring). ``cpu``: the CPU
    input scale of ``suggest_config`` (smaller upsampling: cheaper steps).
    """
    base_cfg = suggest_config(stats, max_input_size=max_input_size, cpu=cpu)
    if not base_cfg:
        return {}
    keys = ("input_scale", "min_size", "max_size")
    cfg: dict[str, Any] = {k: base_cfg[k] for k in keys if k in base_cfg}
    if "train_input_scale" in base_cfg:  # everything below is laid out at the training scale
        cfg["input_scale"] = base_cfg["train_input_scale"]
    short, long = max(stats.image_short_p50, 1.0), max(stats.image_long_p50, 1.0)
    scale = _input_scale(cfg, int(short), int(long))
    side = scale * math.sqrt(short * long)  # typical input side

    obj = max(stats.box_size_p50, stats.mask_size_p50, 1.0) * scale
    base = float(min(96, max(32, 8 * round(2 * obj / 8))))
    top = max(2048 * base / PAPER_BASE, 2.0 * scale * max(stats.image_long_max, long))
    bounds = [base * 2.0**i for i in range(-1, 4)]  # b/2, b, 2b, 4b, 8b
    cfg["scale_ranges"] = [[1.0, base]] + [[bounds[i], bounds[i + 2]] for i in range(3)]
    cfg["scale_ranges"].append([bounds[3], float(round(top))])

    if cfg.get("input_scale") is not None and obj < SMALL_OBJECT * side:
        cfg["grid_canvas"] = int(32 * math.ceil(side / 32))
        cfg["position_prior"] = True
        cfg["center_votes"] = True
        cfg["point_nms"] = False
    if base < PAPER_BASE:
        area = (base / PAPER_BASE) ** 2
        cfg["strides"] = [max(1, round(s * area)) for s in PAPER_STRIDES]
    factor = (side / base) / (PAPER_SIDE / PAPER_BASE)
    best: tuple[float, list[int]] | None = None
    for step in GRID_STEPS if dataset is not None else (1.0,):
        grids = [int(min(MAX_GRID, max(2, round(g * factor * step)))) for g in PAPER_GRIDS]
        if dataset is None:
            best = (1.0, grids)
            break
        cover = assignment_coverage(dataset, {**cfg, "num_grids": grids})
        if best is None or cover > best[0] + 1e-9:
            best = (cover, grids)
        if cover >= min_coverage or grids[0] == MAX_GRID:
            break
    assert best is not None
    cfg["num_grids"] = best[1]

    if "train_input_scale" in base_cfg:  # ... while inference keeps the full scale
        cfg["train_input_scale"] = cfg["input_scale"]
        cfg["input_scale"] = base_cfg["input_scale"]
    cfg["max_detections"] = int(base_cfg.get("max_detections", 100))
    cfg["nms_pre"] = max(500, 2 * cfg["max_detections"])
    return cfg
