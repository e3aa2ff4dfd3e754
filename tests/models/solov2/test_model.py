"""SOLOv2: target assignment on hand-made scenes, losses, overfitting, predict contract, zoo."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from instseg.masks import masks_to_boxes as mask_boxes
from instseg.models.solov2 import SOLOv2
from instseg.models.solov2.assign import assign_targets
from instseg.models.solov2.variants import solov2_light_r18
from instseg.structures import Instances

K_OFFSETS = [
    0,
    40 * 40,
    40 * 40 + 36 * 36,
    40 * 40 + 36 * 36 + 24 * 24,
    40 * 40 + 36 * 36 + 24 * 24 + 16 * 16,
]


class TinyBackbone(nn.Module):
    """5 maps (strides 4, 8, 16, 32, 64) of ``out_channels``: a stand-in for ResNet+FPN."""

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        self.out_channels = out_channels
        c = out_channels

        def block(cin: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.GroupNorm(4, c), nn.ReLU()
            )

        self.s2, self.s4 = block(3), block(c)
        self.downs = nn.ModuleList([block(c) for _ in range(4)])

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = [self.s4(self.s2(x))]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return OrderedDict((str(i), f) for i, f in enumerate(feats))


def tiny_model(num_classes: int = 2, **kw: object) -> SOLOv2:
    torch.manual_seed(0)
    args: dict[str, object] = dict(
        head_channels=32, stacked_convs=1, kernel_channels=16, mask_channels=16,
        num_grids=(12, 8, 6, 4, 2), min_size=64, max_size=128,
    )  # fmt: skip
    args.update(kw)
    return SOLOv2(TinyBackbone(), num_classes, **args)  # type: ignore[arg-type]


#: the paper's model; the crop-training one (position prior, fixed 64 px-canvas cells); that
#: one with center votes
VARIANTS: dict[str, dict[str, object]] = {
    "plain": {},
    "prior_fixed_cells": {"position_prior": True, "grid_canvas": 64},
    "prior_votes": {"position_prior": True, "grid_canvas": 64, "center_votes": True},
}


def scene() -> tuple[Tensor, Instances]:
    """A 64x64 image with a red rectangle (class 0) and a blue one (class 1)."""
    img = torch.full((3, 64, 64), 0.5)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:28, 10:34] = True
    masks[1, 36:60, 30:56] = True
    img[:, masks[0]] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    img[:, masks[1]] = torch.tensor([0.0, 0.0, 1.0])[:, None]
    return img, Instances.from_masks(masks, labels=[0, 1])


def iou(a: Tensor, b: Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


# -- target assignment ----------------------------------------------------------------------
def test_assign_targets_hand_made_scene() -> None:
    # 40x40 object with mass center (y=60, x=100); 150x150 object centered at (180, 180)
    boxes = torch.tensor([[80.0, 40.0, 120.0, 80.0], [105.0, 105.0, 255.0, 255.0]])
    centers = torch.tensor([[60.0, 100.0], [180.0, 180.0]])
    labels, gt = assign_targets(
        boxes, centers, torch.tensor([1, 0]), torch.tensor([False, False]), (256, 256), 3
    )
    assert labels.shape == gt.shape == (40 * 40 + 36 * 36 + 24 * 24 + 16 * 16 + 12 * 12,)
    lv0 = labels[: K_OFFSETS[1]].view(40, 40)
    # level 0 (sqrt area 40 in [1, 96]): cell 6.4 px, center cell (9, 15), sigma box rows 8..10, cols 15..16
    want = torch.full((40, 40), 3)
    want[8:11, 15:17] = 1
    assert torch.equal(lv0, want)
    assert set(gt[: K_OFFSETS[1]].unique().tolist()) == {-1, 0}
    # object 1 (sqrt area 150) goes to levels 1 (48..192) and 2 (96..384), nowhere else
    lv1 = labels[K_OFFSETS[1] : K_OFFSETS[2]].view(36, 36)
    # grid 36: cell 7.11 px; center cell (25, 25); half box 15 px -> rows/cols 23..27 clipped to 24..26
    want1 = torch.full((36, 36), 3)
    want1[24:27, 24:27] = 0
    assert torch.equal(lv1, want1)
    # grid 24: cell 10.67 px; center cell (16, 16); sigma box 15..18 clipped to 15..17
    want2 = torch.full((24, 24), 3)
    want2[15:18, 15:18] = 0
    assert torch.equal(labels[K_OFFSETS[2] : K_OFFSETS[3]].view(24, 24), want2)
    assert set(gt[K_OFFSETS[1] : K_OFFSETS[3]].unique().tolist()) == {-1, 1}
    assert (labels[K_OFFSETS[3] :] == 3).all() and (gt[K_OFFSETS[3] :] == -1).all()


def test_fixed_size_cells_follow_the_input_not_the_image() -> None:
    from instseg.models.solov2.assign import grid_shapes

    assert grid_shapes((40, 12), (320, 480)) == [(40, 40), (12, 12)]
    assert grid_shapes((40, 12), (320, 480), canvas=320) == [(40, 60), (12, 18)]
    assert grid_shapes((40, 3), (32, 64), canvas=320) == [(4, 8), (1, 1)]
    # one 20x20 object at the same pixels of a 320x320 and a 320x640 input: the same cell
    # (row, col) on fixed-size cells, a different one on S x S grids
    boxes = torch.tensor([[100.0, 60.0, 120.0, 80.0]])
    centers = torch.tensor([[70.0, 110.0]])
    cells = []
    for size in ((320, 320), (320, 640)):
        shapes = grid_shapes((40,), size, canvas=320)
        _, gt = assign_targets(
            boxes, centers, torch.tensor([0]), torch.tensor([False]), size, 1, shapes, ((1.0, 96.0),)
        )
        rows, cols = shapes[0]
        idx = torch.nonzero(gt == 0).reshape(-1)
        cells.append(sorted((int(i) // cols, int(i) % cols) for i in idx))
    # 8 px cells; center region y 68..72 -> rows 8..9, x 108..112 -> cols 13..14
    assert cells[0] == cells[1] == [(8, 13), (8, 14), (9, 13), (9, 14)]


def test_assign_targets_crowd_is_ignored_not_positive() -> None:
    boxes = torch.tensor(
        [[80.0, 40.0, 120.0, 80.0], [80.0, 40.0, 120.0, 80.0], [0.0, 0.0, 40.0, 40.0]]
    )
    centers = torch.tensor([[60.0, 100.0], [60.0, 106.0], [20.0, 20.0]])
    # object 0 is real; object 1 (crowd) overlaps it; object 2 is crowd alone
    labels, gt = assign_targets(
        boxes, centers, torch.tensor([1, 1, 1]), torch.tensor([False, True, True]), (256, 256), 3
    )
    lv0, gt0 = labels[: K_OFFSETS[1]].view(40, 40), gt[: K_OFFSETS[1]].view(40, 40)
    assert (lv0[8:11, 15:17] == 1).all() and (gt0[8:11, 15:17] == 0).all()  # real wins over crowd
    assert (lv0[8:11, 17] == -1).all()  # crowd-only cells: ignored
    assert (lv0[2:4, 2:4] == -1).all() and (gt0[2:4, 2:4] == -1).all()
    assert not (gt == 1).any() and not (gt == 2).any()


def test_model_targets_follow_resizing() -> None:
    """A 20x20 object in a 128x128 image resized 2x lands where a 40x40 one lands at 256."""
    model = tiny_model(3, num_grids=(40, 36, 24, 16, 12), min_size=256, max_size=256)
    masks = torch.zeros(1, 128, 128, dtype=torch.bool)
    masks[0, 20:40, 40:60] = True
    t = Instances.from_masks(masks, labels=[1])
    labels, gt, soft = model._image_targets(t, (256, 256), (256, 256))
    want = torch.full((40, 40), 3)
    want[8:11, 15:17] = 1
    assert torch.equal(labels[: K_OFFSETS[1]].view(40, 40), want)
    assert soft.shape == (1, 64, 64)
    assert soft[0, 11:19, 21:29].min() > 0.99 and soft[0].sum() == pytest.approx(100, abs=1)


def test_model_targets_many_instances() -> None:
    """More objects than one chunk of 32: every soft target and center is its own object's."""
    model = tiny_model(1, num_grids=(40, 36, 24, 16, 12), min_size=128, max_size=128)
    masks = torch.zeros(40, 128, 128, dtype=torch.bool)
    for k in range(40):
        r, c = divmod(k, 8)
        masks[k, 4 + 24 * r : 16 + 24 * r, 4 + 16 * c : 12 + 16 * c] = True
    t = Instances.from_masks(masks, labels=[0] * 40)
    labels, gt, soft = model._image_targets(t, (128, 128), (128, 128))
    assert soft.shape == (40, 32, 32)
    torch.testing.assert_close(soft.sum((1, 2)) * 16, masks.sum((1, 2)).float())
    assert set(gt[gt >= 0].tolist()) == set(range(40))  # each object owns some cell


# -- losses ---------------------------------------------------------------------------------
def test_losses_types_in_train_and_eval_and_empty_images() -> None:
    model = tiny_model()
    img, t = scene()
    empty = Instances((48, 80), masks=torch.zeros(0, 48, 80, dtype=torch.bool))
    for mode in (True, False):
        model.train(mode)
        out = model.losses([img, torch.rand(3, 48, 80)], [t, empty])
        assert set(out) == {"loss_cate", "loss_mask"}
        assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
        assert out["loss_mask"] > 0
    only_empty = model.losses([torch.rand(3, 48, 80)], [empty])
    assert only_empty["loss_mask"] == 0 and only_empty["loss_cate"] > 0
    sum(only_empty.values()).backward()  # type: ignore[union-attr]
    assert model.head.cate_pred.bias.grad is not None
    with pytest.raises(ValueError, match="masks"):
        model.losses([img], [Instances((64, 64), boxes=t.boxes, labels=t.labels)])


def test_crowd_instances_are_ignored_in_losses() -> None:
    model = tiny_model()
    img, t = scene()
    crowd = Instances.from_masks(t.masks, labels=t.labels, iscrowd=[True, True])  # type: ignore[arg-type]
    empty = Instances((64, 64), masks=torch.zeros(0, 64, 64, dtype=torch.bool))
    with torch.no_grad():
        lc, le = model.losses([img], [crowd]), model.losses([img], [empty])
    assert lc["loss_mask"] == 0  # no positive cell, no mask learned
    assert lc["loss_cate"] < le["loss_cate"]  # crowd cells dropped from the background loss


@pytest.mark.parametrize("name", list(VARIANTS))
def test_overfit_one_image_and_predict_in_original_coordinates(name: str) -> None:
    model = tiny_model(**VARIANTS[name])
    img, t = scene()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = last = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and suffer on a busy CPU)
    try:
        for step in range(80):
            terms = model.losses([img], [t])
            opt.zero_grad()
            sum(terms.values()).backward()  # type: ignore[union-attr]
            opt.step()
            loss = float(terms["loss_cate"].detach() + terms["loss_mask"].detach())
            first = loss if step == 0 else first
            last = loss
    finally:
        torch.set_num_threads(threads)
    assert last < first / 20, (first, last)

    model.eval()
    assert t.masks is not None
    wide = torch.full((3, 64, 80), 0.5)  # same scene with background added on the right
    wide[:, :, :64] = img
    big = torch.nn.functional.interpolate(img[None], scale_factor=2.0, mode="nearest")[0]
    preds = model.predict([img, wide, big])
    gts = [
        t.masks,
        torch.nn.functional.pad(t.masks, (0, 16)),
        t.masks.repeat_interleave(2, 1).repeat_interleave(2, 2),
    ]
    for pred, gt_masks, image in zip(preds, gts, [img, wide, big]):
        assert pred.image_size == tuple(image.shape[-2:])
        assert pred.masks is not None and pred.masks.shape[1:] == image.shape[-2:]
        assert pred.scores is not None and (pred.scores[:-1] >= pred.scores[1:]).all()
        for k in range(2):  # each GT matched by the best prediction of its class
            cand = [iou(m, gt_masks[k]) for m, lab in zip(pred.masks, pred.labels) if lab == k]
            assert max(cand, default=0.0) > 0.8, (k, cand)
        top = pred[pred.scores.argmax()]
        assert top.boxes[0].tolist() == [float(v) for v in Instances.from_masks(top.masks).boxes[0]]  # type: ignore[arg-type]


def test_predict_contract_untrained() -> None:
    model = tiny_model(score_threshold=0.0, update_threshold=0.0, max_detections=7)
    model.train()
    preds = model.predict([torch.rand(3, 50, 70), torch.rand(3, 90, 40)])
    assert model.training  # predict leaves the mode alone
    assert [p.image_size for p in preds] == [(50, 70), (90, 40)]
    for p in preds:
        assert isinstance(p, Instances) and 0 < len(p) <= 7  # resize ratios 1.28 and 1.42
        assert (
            p.masks is not None
            and p.masks.dtype == torch.bool
            and p.masks.shape[1:] == p.image_size
        )
        assert p.labels.dtype == torch.int64 and ((p.labels >= 0) & (p.labels < 2)).all()
    none = tiny_model().predict([torch.zeros(3, 30, 30)])[0]  # prior 0.01 < score_threshold
    assert len(none) == 0 and none.masks is not None and none.masks.shape == (0, 30, 30)


def test_point_nms_can_be_turned_off() -> None:
    """``point_nms=False`` keeps cells that a higher-scoring neighbour would suppress."""
    kw: dict[str, object] = dict(
        score_threshold=0.0, update_threshold=0.0, nms_pre=2000, max_detections=2000
    )
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        on = tiny_model(**kw).eval().detect(images)[0]
        off = tiny_model(point_nms=False, **kw).eval().detect(images)[0]
    assert len(off[3]) > len(on[3]) > 0


def test_input_scale_and_memory_format() -> None:
    img, t = scene()
    fixed = tiny_model(input_scale=0.5)
    batch, sizes = fixed.preprocess([img, torch.rand(3, 100, 40)])
    assert sizes == [(32, 32), (50, 20)] and batch.shape == (2, 3, 64, 32)
    two = tiny_model(input_scale=1.5, train_input_scale=0.5)  # losses() at 0.5, predict at 1.5
    assert two.preprocess([img], train=True)[1] == [(32, 32)]
    assert two.preprocess([img])[1] == [(96, 96)]
    assert two.predict([img])[0].image_size == (64, 64)
    same, half = two.losses([img], [t]), tiny_model(input_scale=0.5).losses([img], [t])
    for k in same:
        torch.testing.assert_close(same[k], half[k])
    with pytest.raises(ValueError, match="train_input_scale needs input_scale"):
        tiny_model(train_input_scale=0.5)
    nchw, nhwc = tiny_model(channels_last=False), tiny_model(channels_last=True)
    a, b = nchw.losses([img], [t]), nhwc.losses([img], [t])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_detect_exports_to_onnx(tmp_path: Path, name: str) -> None:
    """``detect`` (predict's tensor path) exports with the TorchScript-based ONNX exporter and
    onnxruntime agrees with eager on a new image (data-dependent sizes are graph ops)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = tiny_model(
        score_threshold=0.0, update_threshold=0.0, nms_pre=30, max_detections=9, **VARIANTS[name]
    ).eval()  # fmt: skip

    class Wrapper(nn.Module):
        def __init__(self, m: SOLOv2) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            return self.m.detect([x])[0]

    x = torch.rand(3, 50, 70)
    with torch.no_grad():
        torch.onnx.export(Wrapper(model), (x,), str(tmp_path / "m.onnx"), dynamo=False)
        session = ort.InferenceSession(str(tmp_path / "m.onnx"))
        y = torch.rand(3, 50, 70)
        got = session.run(None, {session.get_inputs()[0].name: y.numpy()})
        want = model.detect([y])[0]
    assert [g.shape for g in got] == [tuple(w.shape) for w in want]
    assert (got[0] == want[0].numpy()).mean() > 0.999
    np.testing.assert_allclose(got[3], want[3].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_eager_fast_postprocess_matches_exportable_path(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The eager path (row/output chunks, in-place ops) gives what the traced path computes on
    whole tensors; one-row chunks and many more candidates than chunks included."""
    from instseg.models.solov2 import post as solov2_post

    model = tiny_model(
        score_threshold=0.0, update_threshold=0.0, max_detections=40, **VARIANTS[name]
    ).eval()
    images = [torch.rand(3, 50, 70), torch.rand(3, 90, 40)]
    with torch.no_grad():
        fast = model.detect(images)
        monkeypatch.setattr(solov2_post, "CHUNK_PIXELS", 1)  # one mask per chunk
        tiny_chunks = model.detect(images)
        monkeypatch.setattr(solov2_post, "_tracing", lambda: True)
        whole = model.detect(images)
    for a, b, c in zip(fast, tiny_chunks, whole):
        assert 0 < len(a[3]) <= 40 and a[0].shape[1:] == c[0].shape[1:]
        for x, y in ((a, b), (a, c)):
            assert torch.equal(x[2], y[2])  # labels
            torch.testing.assert_close(x[3], y[3], rtol=1e-5, atol=1e-6)  # scores
            assert (x[0] == y[0]).float().mean() > 0.999  # masks (float rounding at edges)
        assert torch.equal(a[1], mask_boxes(a[0]))


# -- position prior -------------------------------------------------------------------------
def test_position_prior_expansion_is_the_relative_quadratic() -> None:
    """Coefficients x monomials == a_xx dx^2 + a_yy dy^2 + a_xy dx dy + b_x dx + b_y dy with
    ``d = (pixel - cell center) / unit``, at every 1/4-scale feature pixel."""
    from instseg.models.solov2 import prior as sp

    torch.manual_seed(0)
    grids, units, padded = [(5, 5), (3, 3)], (16.0, 40.0), (96, 160)
    centers, scales = sp.cell_geometry(grids, units, padded, torch.device("cpu"))
    assert centers.shape == (34, 2) and scales.tolist() == [0.25] * 25 + [0.625] * 9
    # cell (r=1, c=2) of level 0: center (1.5 * 96 / 5, 2.5 * 160 / 5) px
    torch.testing.assert_close(centers[7] * sp.REF, torch.tensor([28.8, 80.0]))
    coefs = torch.randn(34, 5)
    mono = sp.monomials(24, 40, 4, torch.device("cpu"), torch.float32)
    got = sp.expand(coefs, centers, scales) @ mono.flatten(1)  # (34, 24 * 40)
    ys = (torch.arange(24) * 4 + 2.0).repeat_interleave(40)
    xs = (torch.arange(40) * 4 + 2.0).repeat(24)
    px = scales[:, None] * sp.REF
    dx, dy = (xs - centers[:, 1:] * sp.REF) / px, (ys - centers[:, :1] * sp.REF) / px
    a = coefs.T[..., None]
    want = a[0] * dx * dx + a[1] * dy * dy + a[2] * dx * dy + a[3] * dx + a[4] * dy
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def test_position_prior_model_starts_with_a_bump_on_each_cell() -> None:
    """With zero mask features the initial mask logit is the prior alone: highest at the
    cell's center, falling off with distance (a_xx = a_yy = -1 at init)."""
    model = tiny_model(position_prior=True).eval()
    with torch.no_grad():
        kernels = torch.zeros(1, sum(s * s for s in model.num_grids), 16 + 5)
        kernels[..., 16:18] = -1.0
        kern, feat = model.mask_operands(kernels, torch.zeros(1, 16, 16, 16))
        logits = (kern[0] @ feat[0].flatten(1)).view(-1, 16, 16)
    assert kern.shape == (1, kernels.shape[1], 22) and feat.shape == (1, 22, 16, 16)
    # level-0 cell (r=3, c=8) of the 12x12 grid over 64x64 input: center (18.7, 45.3) px, at
    # 1/4-scale feature pixel (4, 11)
    cell = logits[3 * 12 + 8]
    assert divmod(int(cell.argmax()), 16) == (4, 11)
    assert cell[4, 11] > cell[4, 14] > cell[4, 0] and cell[4, 11] > cell[0, 11]


# -- zoo ------------------------------------------------------------------------------------
def test_config_rebuilds_same_architecture() -> None:
    model = solov2_light_r18(3, num_grids=[20, 16, 12, 8, 4], max_detections=300)
    cfg = json.loads(json.dumps(model.config))
    assert cfg == {
        "name": "solov2_light_r18",
        "num_classes": 3,
        "num_grids": [20, 16, 12, 8, 4],
        "max_detections": 300,
    }
    from instseg.models import zoo

    if "solov2_light_r18" not in zoo.MODELS:
        pytest.skip("SOLOv2 not registered in the zoo")
    again = zoo.build_model(**cfg)
    assert (
        isinstance(again, SOLOv2)
        and again.num_grids == (20, 16, 12, 8, 4)
        and again.max_detections == 300
    )
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    names = zoo.list_models()
    solo = [n for n in names if zoo.MODELS[n].family == "solov2"]
    assert solo[0] == "solov2_mnv2" and zoo.MODELS[solo[0]].recommended
