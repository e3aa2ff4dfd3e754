"""Instances and mask codecs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg import masks as mc
from instseg.structures import Instances


def random_masks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        out[i, y : y + rng.integers(2, h - y), x : x + rng.integers(2, w - x)] = True
        out[i] &= rng.random((h, w)) > 0.1
    return out


def test_rle_roundtrip_is_exact() -> None:
    m = random_masks(5, 37, 53)
    rles = mc.encode(m)
    assert all(isinstance(r["counts"], str) for r in rles)
    np.testing.assert_array_equal(mc.decode(rles), m)
    np.testing.assert_array_equal(mc.area(rles), m.reshape(5, -1).sum(1))


def test_uncompressed_rle_decodes() -> None:
    m = np.zeros((4, 3), bool)
    m[1:3, 1] = True  # column-major runs: col0 4 zeros, col1: 1 zero, 2 ones, 1 zero, col2 4 zeros
    rle = {"size": [4, 3], "counts": [5, 2, 5]}
    np.testing.assert_array_equal(mc.decode(rle)[0], m)


def test_masks_to_boxes_exclusive_and_empty() -> None:
    m = np.zeros((2, 10, 10), bool)
    m[0, 2:5, 3:7] = True
    boxes = mc.masks_to_boxes(m)
    np.testing.assert_array_equal(boxes[0], [3, 2, 7, 5])
    np.testing.assert_array_equal(boxes[1], [0, 0, 0, 0])
    # agrees with pycocotools' toBbox (xywh)
    np.testing.assert_allclose(mc.rle_boxes_xywh(mc.encode(m[:1]))[0], [3, 2, 4, 3])


def test_polygon_roundtrip_hole_free_masks() -> None:
    m = np.zeros((30, 40), bool)
    m[3:20, 5:9] = True
    m[10:14, 9:30] = True  # an L shape
    m[25, 35] = True  # a single pixel
    polys = mc.to_polygons(m)
    assert len(polys) == 2
    back = mc.decode(mc.from_polygons(polys, 30, 40))[0]
    np.testing.assert_array_equal(back, m)


def test_instances_fields_and_indexing() -> None:
    m = random_masks(4, 20, 30)
    inst = Instances.from_masks(m, labels=[0, 1, 2, 1], scores=[0.9, 0.8, 0.7, 0.6])
    assert len(inst) == 4 and inst.image_size == (20, 30)
    assert inst.boxes.dtype == torch.float32 and inst.masks is not None
    sub = inst[inst.labels == 1]
    assert len(sub) == 2 and sub.scores.tolist() == pytest.approx([0.8, 0.6])
    assert len(inst[1]) == 1 and len(inst[[0, 3]]) == 2 and len(inst[1:3]) == 2
    assert len(inst.filter(score_threshold=0.75)) == 2
    assert len(inst.filter(labels=[2])) == 1
    both = Instances.cat([inst, inst[:1]])
    assert len(both) == 5 and torch.equal(both.masks[4], inst.masks[0])  # type: ignore[index]
    np.testing.assert_array_equal(np.stack([mc.decode(r)[0] for r in inst.to_rles()]), m)
    assert inst.to("cpu").boxes.device.type == "cpu"
    label = inst.to_label_image()
    assert label.max() == 4 and label.dtype == np.int32


def test_instances_rejects_mismatched_fields() -> None:
    with pytest.raises(ValueError, match="labels"):
        Instances(image_size=(4, 4), boxes=torch.zeros(2, 4), labels=torch.zeros(3))


def test_empty_instances() -> None:
    inst = Instances.from_masks(np.zeros((0, 8, 9), bool))
    assert len(inst) == 0 and inst.masks is not None and inst.masks.shape == (0, 8, 9)
    assert len(Instances.cat([inst, inst])) == 0
    assert inst.to_rles() == []


def test_label_image_paints_the_highest_score_on_top() -> None:
    masks = np.zeros((3, 6, 6), bool)
    masks[0, 0:4, 0:4] = True
    masks[1, 2:6, 2:6] = True
    masks[2, 2:4, 2:4] = True  # inside both, same score as instance 1
    inst = Instances.from_masks(masks, scores=[0.2, 0.9, 0.9])
    label = inst.to_label_image()
    assert label[1, 1] == 1 and label[5, 5] == 2 and label[2, 4] == 2  # 1 beats 0: score
    assert label[3, 3] == 3  # 2 beats 1: equal score, later
    crops = [masks[0, 0:4, 0:4], masks[1, 2:6, 2:6], masks[2, 2:4, 2:4]]
    sparse = mc.paint_label_image((6, 6), crops, scores=[0.2, 0.9, 0.9], offsets=[(0, 0), (2, 2), (2, 2)])
    assert np.array_equal(sparse, label)
