"""Fusing prediction sets of several views (``inference.fusion``) on hand-made masks, and
scale TTA through a tiny fixed-scale SOLOv2."""

from __future__ import annotations

import pytest
import torch

from instseg.inference.fusion import fuse_clusters, fuse_instances, rank_fused
from instseg.inference.tta import ScaleTTA, check_scales
from instseg.structures import Instances
from tests.models.solov2.test_model import tiny_model


def _square(y: int, x: int, side: int, size: tuple[int, int] = (40, 40)) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    m[y : y + side, x : x + side] = True
    return m


def _set(masks: list[torch.Tensor], scores: list[float], labels: list[int] | None = None) -> Instances:
    size = tuple(masks[0].shape) if masks else (40, 40)
    stack = torch.stack(masks) if masks else torch.zeros(0, *size, dtype=torch.bool)
    return Instances.from_masks(stack, labels=labels or [0] * len(masks), scores=torch.tensor(scores))


def test_one_set_is_returned_as_it_is() -> None:
    s = _set([_square(2, 2, 8)], [0.9])
    assert fuse_instances([s]) is s


def test_matching_detections_merge_into_a_vote() -> None:
    """The same object in two views (IoU 0.8) becomes one detection: its mask the
    score-weighted vote of both, its score their sum over the number of views; an object
    only one view found keeps half its score."""
    a = _set([_square(0, 0, 10), _square(25, 25, 6)], [0.8, 0.6])
    b = _set([_square(0, 2, 10)], [0.4])  # columns 2..11 vs 0..9: IoU 80 / 120 = 0.67
    out = fuse_instances([a, b], iou=0.5)
    assert out.scores is not None and out.masks is not None
    assert out.scores.tolist() == pytest.approx([0.6, 0.3])
    # the vote: columns 0..1 carry 0.8 of 1.2 (>= 0.5), columns 10..11 only 0.4 of 1.2
    assert torch.equal(out.masks[0], _square(0, 0, 10))
    assert torch.equal(out.masks[1], _square(25, 25, 6))
    assert out.boxes[0].tolist() == [0.0, 0.0, 10.0, 10.0]
    # at an IoU above theirs they stay apart: three detections, each with half its score
    apart = fuse_instances([a, b], iou=0.7)
    assert apart.scores is not None
    assert apart.scores.tolist() == pytest.approx([0.4, 0.3, 0.2])


def test_a_view_never_merges_with_itself_nor_across_classes() -> None:
    """Two overlapping detections of one view are two objects even if their IoU is over the
    threshold; detections of different classes never merge."""
    same_view = _set([_square(0, 0, 10), _square(0, 1, 10)], [0.9, 0.8])
    other = _set([_square(0, 0, 10)], [0.7], labels=[1])
    out = fuse_instances([same_view, other], iou=0.5)
    assert out.scores is not None
    assert len(out) == 3 and out.labels.tolist() == [0, 0, 1]
    assert out.scores.tolist() == pytest.approx([0.45, 0.4, 0.35])


def test_agreement_ranks_objects_whose_views_agree_higher() -> None:
    """Step 4: a cluster's score times (mean IoU of its members with the fused mask) ** p.
    Object A (score 0.9 + 0.7) is seen with different outlines by the two views, object B
    (0.6 + 0.6) identically; an object of one view keeps agreement 1."""
    a = _set([_square(0, 0, 10), _square(20, 20, 8), _square(32, 0, 4)], [0.9, 0.6, 0.5])
    b = _set([_square(0, 1, 10), _square(20, 20, 8)], [0.7, 0.6])  # A: IoU 90 / 110
    fused = fuse_clusters([a, b], iou=0.5)
    # A's vote: columns 0..9 (column 0 carries 0.9 of 1.6, column 10 only 0.7)
    assert fused.agreement.tolist() == pytest.approx([(1.0 + 90 / 110) / 2, 1.0, 1.0])
    assert fused.scores.tolist() == pytest.approx([0.8, 0.6, 0.25])
    plain = fuse_instances([a, b], iou=0.5)
    assert plain.scores is not None and plain.scores.tolist() == pytest.approx([0.8, 0.6, 0.25])
    out = fuse_instances([a, b], iou=0.5, agreement=4.0)
    assert out.scores is not None and out.masks is not None
    ag = (1.0 + 90 / 110) / 2
    assert out.scores.tolist() == pytest.approx([0.6, 0.8 * ag**4, 0.25])  # B now first
    assert torch.equal(out.masks[0], _square(20, 20, 8))
    assert torch.equal(out.masks[1], _square(0, 0, 10))
    assert torch.equal(out.masks[2], _square(32, 0, 4))
    # ranking the same clusters again is what fuse_instances does, at any power and cap
    again = rank_fused(fused, 4.0, max_detections=2)
    assert again.scores is not None and again.scores.tolist() == out.scores.tolist()[:2]


def test_max_detections_and_order() -> None:
    a = _set([_square(0, 0, 5), _square(10, 10, 5), _square(20, 20, 5)], [0.3, 0.9, 0.5])
    b = _set([_square(30, 30, 5)], [0.8])
    out = fuse_instances([a, b], max_detections=2)
    assert out.scores is not None and out.scores.tolist() == pytest.approx([0.45, 0.4])


def test_empty_sets_and_bad_input() -> None:
    empty = _set([], [])
    out = fuse_instances([empty, empty])
    assert len(out) == 0 and out.image_size == (40, 40)
    with pytest.raises(ValueError, match="differ in image size"):
        fuse_instances([empty, _set([_square(0, 0, 4, (20, 20))], [0.5])])
    with pytest.raises(ValueError, match="needs masks and scores"):
        fuse_instances([empty, Instances((40, 40))])
    with pytest.raises(ValueError, match="at least one"):
        fuse_instances([])
    with pytest.raises(ValueError, match="> 0"):
        check_scales([1.0, 0.0])
    with pytest.raises(ValueError, match="repeat"):
        check_scales([1.0, 1.0])


def test_scale_tta_of_a_fixed_scale_solov2() -> None:
    """``ScaleTTA`` runs the model at each factor of its ``input_scale`` and fuses: one factor
    of 1 is plain ``predict``; the model is never changed; a model that resizes the short side
    has no scale to multiply."""
    model = tiny_model(input_scale=1.0, max_size=256, score_threshold=0.0, update_threshold=0.0)
    model.eval()
    torch.manual_seed(1)
    images = [torch.rand(3, 64, 80), torch.rand(3, 48, 48)]
    plain = model.predict(images)
    for a, b in zip(ScaleTTA(model, (1.0,)).predict(images), plain):
        assert a.masks is not None and b.masks is not None
        assert torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores)  # type: ignore[arg-type]
    seen: list[float | None] = []
    real = type(model).forward_raw

    def spy(self: object, imgs: list[torch.Tensor], input_scale: float | None = None) -> object:
        seen.append(input_scale)
        return real(model, imgs, input_scale)

    model.max_detections = 7
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(model), "forward_raw", spy)
        fused = ScaleTTA(model, (1.0, 1.5)).predict(images)
    assert seen == [1.0, 1.5]
    assert model.input_scale == 1.0
    assert [p.image_size for p in fused] == [(64, 80), (48, 48)]
    assert all(len(p) <= 7 for p in fused)
    with pytest.raises(ValueError, match="fixed-scale model"):
        ScaleTTA(tiny_model(), (1.0, 1.2))
