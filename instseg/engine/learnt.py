"""What a trained model stores besides its weights: the object size it learnt and its score
cut-off (checkpoint keys ``object_size`` and ``score_cutoff``).

``object_size`` (float, pixels of the images a user gives): the median equivalent diameter
``sqrt(4 * area / pi)`` of the training set's instances (crowd regions left out), times
``train_scale / input_scale``: the size, in the user's pixels, that the model's own inference
resize brings to the size the objects had inside the model during training. For a fixed-scale
model trained and run at one scale (e.g. x1.7) it is the training instances' median diameter.
Random training crops and the augmentation's random rescaling (centred on 1) are not counted.
Models that resize every image to a fixed short side (no ``input_scale``) store the training
instances' median diameter as it is; their own resize undoes any rescaling, so
``--object-size`` needs a fixed-scale model.

``score_cutoff`` (float): the detection-score cut-off with the best F1 at mask IoU 0.5 on the
training run's validation images (one-to-one matching, as ``instseg eval``'s F1), chosen
among :data:`SCORE_CANDIDATES` (ties go to the candidate nearest 0.5); absent without a
validation set. :mod:`instseg.inference.calibrate` chooses cut-offs with the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from instseg.data.dataset import InstanceDataset
from instseg.evaluation.matching_dataset import evaluate_coco_matching

__all__ = [
    "SCORE_CANDIDATES",
    "best_candidate",
    "choose_score_cutoff",
    "f1_by_cutoff",
    "learnt_object_size",
    "median_diameter",
]

#: detection-score cut-offs tried (from 0.1: scores of focal-loss models such as SOLOv2 run low)
SCORE_CANDIDATES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def best_candidate(values: Mapping[float, float]) -> float:
    """The candidate with the best value; ties (to 6 decimals) go to the one nearest 0.5."""
    return max(values, key=lambda c: (round(values[c], 6), -abs(c - 0.5)))


def f1_by_cutoff(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    candidates: Sequence[float] = SCORE_CANDIDATES,
    iou: float = 0.5,
) -> dict[float, float]:
    """``{cut-off: F1 at IoU iou}`` of the COCO ``results`` scoring >= each cut-off on ``gt``."""
    if not candidates or any(not 0.0 <= float(c) <= 1.0 for c in candidates):
        raise ValueError(f"score cut-off candidates must lie in [0, 1], got {list(candidates)}")
    f1 = {}
    for c in candidates:
        rep = evaluate_coco_matching(
            gt, results, thresholds=(iou,), score_threshold=float(c), semantic=False
        )
        f1[float(c)] = rep.at(iou).f1
    return f1


def choose_score_cutoff(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    candidates: Sequence[float] = SCORE_CANDIDATES,
    iou: float = 0.5,
) -> tuple[float, dict[float, float]]:
    """``(F1-best cut-off, {cut-off: F1})`` of COCO ``results`` on ``gt`` (see module doc)."""
    f1 = f1_by_cutoff(gt, results, candidates, iou)
    return best_candidate(f1), f1


def median_diameter(dataset: InstanceDataset) -> float | None:
    """Median equivalent diameter ``sqrt(4 * area / pi)`` (pixels) of the non-crowd
    instances of ``dataset``; ``None`` when it has none."""
    areas = [a.area for r in dataset.images for a in r.annotations if not a.iscrowd]
    if not areas:
        return None
    return float(np.median(np.sqrt(4.0 * np.asarray(areas, dtype=np.float64) / math.pi)))


def learnt_object_size(config: Mapping[str, Any], train_set: InstanceDataset) -> float | None:
    """The ``object_size`` a model with architecture ``config`` (its ``input_scale`` and
    ``train_input_scale``) learns from ``train_set`` (see module doc), rounded to 0.01 px;
    ``None`` without instances."""
    d = median_diameter(train_set)
    if d is None:
        return None
    scale = config.get("input_scale")
    train_scale = config.get("train_input_scale") or scale
    if scale and train_scale:
        d *= float(train_scale) / float(scale)
    return round(d, 2)
