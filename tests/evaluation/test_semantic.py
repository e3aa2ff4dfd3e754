"""Semantic view: instance predictions -> class maps, per-class IoU and mIoU with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.evaluation.matching import match_instances
from instseg.evaluation.semantic import (
    IGNORE,
    SemanticAccumulator,
    instances_to_semantic,
    semantic_iou,
)
from instseg.structures import Instances


def boxes_masks(h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    m = np.zeros((len(boxes), h, w), bool)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        m[k, y0:y1, x0:x1] = True
    return m


def test_higher_score_wins_where_classes_overlap() -> None:
    m = boxes_masks(6, 6, [(0, 4, 0, 4), (2, 6, 2, 6), (0, 1, 5, 6)])
    inst = Instances.from_masks(m, labels=[0, 2, 1], scores=[0.6, 0.9, 0.4])
    sem = instances_to_semantic(inst, num_classes=3, score_threshold=0.5)
    assert sem.dtype == np.int64 and sem.shape == (6, 6)
    assert sem[0, 0] == 1 and sem[3, 3] == 3  # overlap: class 2 (score 0.9) over class 0 (0.6)
    assert sem[0, 5] == 0  # score 0.4 < 0.5
    inst = Instances.from_masks(m, labels=[0, 2, 1], scores=[0.95, 0.9, 0.4])
    assert instances_to_semantic(inst, 3)[3, 3] == 1 and instances_to_semantic(inst, 3)[0, 5] == 2


def test_crowd_becomes_ignore_and_label_range_checked() -> None:
    m = boxes_masks(4, 4, [(0, 2, 0, 2), (2, 4, 2, 4)])
    gt = Instances.from_masks(m, labels=[0, 1], iscrowd=[False, True])
    sem = instances_to_semantic(gt, 2)
    assert sem[0, 0] == 1 and sem[3, 3] == IGNORE
    assert instances_to_semantic(gt, 2, ignore_crowd=False)[3, 3] == 2
    with pytest.raises(ValueError, match="labels must be in 0..0"):
        instances_to_semantic(gt, 1)


def test_semantic_iou_known_values_and_ignore() -> None:
    gt = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [IGNORE, IGNORE, 0, 0]])
    pred = np.array([[0, 1, 2, 2], [1, 1, 2, 2], [1, 2, 0, 0]])
    r = semantic_iou(gt, pred, num_classes=2, class_names=["a", "b"])
    # background: GT {00,10,22,23}, pred {00,22,23} -> 3/4; a: GT 3 px, pred 3 px, overlap 2 -> 2/4;
    # b: GT 3 px, pred 4 px (ignore row left out), overlap 3 -> 3/4
    assert r["class_iou"] == {"background": 0.75, "a": 0.5, "b": 0.75}
    assert r["mIoU"] == pytest.approx(0.625)
    assert r["mIoU_with_background"] == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    assert r["pixel_accuracy"] == pytest.approx(8 / 10)


def test_accumulates_sums_not_means_and_absent_class_is_none() -> None:
    acc = SemanticAccumulator(2)
    acc.update(np.ones((10, 10), int), np.ones((10, 10), int))  # class a perfect on 100 px
    small_gt = np.array([[1, 0]])
    acc.update(small_gt, np.zeros((1, 2), int))  # class a missed on 1 px
    r = acc.result()
    assert r["class_iou"]["0"] == pytest.approx(100 / 101)  # not mean(1.0, 0.0)
    assert r["class_iou"]["1"] is None and r["mIoU"] == pytest.approx(100 / 101)
    with pytest.raises(ValueError, match="differ in shape"):
        acc.update(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_instance_vs_semantic_difference_is_measurable() -> None:
    """Two touching objects predicted as one: perfect semantically, poor as instances."""
    gt_masks = boxes_masks(8, 8, [(0, 8, 0, 4), (0, 8, 4, 8)])
    gt = Instances.from_masks(gt_masks, labels=[0, 0])
    pred = Instances.from_masks(boxes_masks(8, 8, [(0, 8, 0, 8)]), labels=[0], scores=[0.9])
    sem = semantic_iou(instances_to_semantic(gt, 1), instances_to_semantic(pred, 1), 1)
    assert sem["mIoU"] == 1.0
    s = next(x for x in match_instances(gt, pred) if x.threshold == 0.5)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1) and s.f1 == pytest.approx(2 / 3)
