"""SOLOv2's learned mask-quality score (``mask_quality``): the IoU target, the loss, the
rescoring in post-processing and the round trip through the model's config. Flips, ONNX
export and overfitting run it as the ``prior_quality`` entry of ``test_solov2.VARIANTS``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instseg.models import ops
from instseg.models.solov2_post import PostConfig, paste_masks, postprocess
from instseg.models.zoo import build_model
from instseg.structures import Instances
from tests.models.test_solov2 import scene, tiny_model


def test_binary_mask_iou_hand_made() -> None:
    a = torch.zeros(4, 6, 6, dtype=torch.bool)
    b = torch.zeros(4, 6, 6, dtype=torch.bool)
    a[0, :2, :2] = b[0, :2, :2] = True  # same square: 1
    a[1, :2, :2], b[1, :2, :4] = True, True  # 4 of 8: 0.5
    a[2, :2, :2], b[2, 4:, 4:] = True, True  # disjoint: 0
    iou = ops.binary_mask_iou(a, b)  # pair 3: both empty -> 0, not NaN
    assert iou.dtype == torch.float32
    assert iou.tolist() == [1.0, 0.5, 0.0, 0.0]


def test_quality_loss_is_bce_against_each_positive_cells_own_mask_iou() -> None:
    """With a constant quality logit the loss is the BCE of that logit against the IoUs,
    computed here with numpy from the model's own masks (> 0.5) and soft targets (> 0.5)."""
    torch.manual_seed(0)
    model = tiny_model(mask_quality=True)
    img, t = scene()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(8):  # partly trained: IoUs spread between 0 and 1
        opt.zero_grad()
        sum(model.losses([img], [t]).values()).backward()  # type: ignore[union-attr]
        opt.step()
    head = model.head.quality_pred
    assert head is not None
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, 0.7)  # type: ignore[arg-type]
    with torch.no_grad():
        loss = model.losses([img], [t])["loss_quality"]
        batch, sizes = model._preprocess([img], train=True)
        _, kernels, feat = model._forward(batch)
        k, f = model._mask_operands(model._flatten(kernels), feat)
        _, cell_gt, soft = model._image_targets(t, sizes[0], (batch.shape[-2], batch.shape[-1]))
        pos = cell_gt >= 0
        masks = (torch.sigmoid(k[0][pos] @ f[0].flatten(1)) > 0.5).numpy()
        gts = (soft[cell_gt[pos]] > 0.5).flatten(1).numpy()
    ious = []
    for m, g in zip(masks, gts):
        union = np.logical_or(m, g).sum()
        ious.append(np.logical_and(m, g).sum() / union if union else 0.0)
    assert len(ious) > 4 and 0.0 < min(ious) < max(ious) <= 1.0, ious
    want = F.binary_cross_entropy_with_logits(
        torch.full((len(ious),), 0.7), torch.tensor(ious, dtype=torch.float32)
    )
    torch.testing.assert_close(loss, want)


def test_quality_loss_on_images_without_objects_keeps_the_head_in_the_graph() -> None:
    model = tiny_model(mask_quality=True, quality_loss_weight=2.0)
    empty = Instances((48, 80), masks=torch.zeros(0, 48, 80, dtype=torch.bool))
    out = model.losses([torch.rand(3, 48, 80)], [empty])
    assert set(out) == {"loss_cate", "loss_mask", "loss_quality"}
    assert out["loss_quality"] == 0
    sum(out.values()).backward()  # type: ignore[union-attr]
    assert model.head.quality_pred is not None and model.head.quality_pred.weight.grad is not None
    img, t = scene()
    assert set(tiny_model().losses([img], [t])) == {"loss_cate", "loss_mask"}  # off by default


def test_quality_multiplies_into_the_score() -> None:
    """Post-processing: all-ones quality changes nothing; a cell's quality scales its score
    before Matrix NMS, so it can reorder detections and drop one under update_threshold."""
    torch.manual_seed(0)
    feat = torch.randn(8, 16, 20)
    kernels, scores = torch.randn(40, 8) * 2, torch.rand(40, 1)
    strides = torch.full((40,), 2.0)
    cfg = PostConfig(score_threshold=0.0, update_threshold=0.05, max_detections=40)
    plain = postprocess(scores, [kernels], [feat], strides, (64, 80), (64, 80), cfg)
    ones = postprocess(scores, [kernels], [feat], strides, (64, 80), (64, 80), cfg, torch.ones(40))
    assert len(plain[3]) > 3 and all(torch.equal(a, b) for a, b in zip(plain, ones))
    # the weakest detection of the plain run: give it quality 1 and every other cell 0.01
    weakest = plain[0][-1]
    quality = torch.full((40,), 0.01)
    for c in range(40):  # the cells whose own mask is that detection
        soft = torch.sigmoid(kernels[c] @ feat.flatten(1)).view(1, 16, 20)
        if torch.equal(paste_masks(soft, (64, 80), (64, 80), cfg)[0], weakest):
            quality[c] = 1.0
    assert (quality == 1.0).sum() >= 1
    keep_all = PostConfig(score_threshold=0.0, update_threshold=0.0, max_detections=40)
    moved = postprocess(
        scores, [kernels], [feat], strides, (64, 80), (64, 80), keep_all, quality
    )
    assert torch.equal(moved[0][0], weakest)  # now ranked first
    zero = postprocess(
        scores, [kernels], [feat], strides, (64, 80), (64, 80), cfg, torch.zeros(40)
    )
    assert len(zero[3]) == 0  # every score x 0 falls under update_threshold


def test_quality_survives_the_config_round_trip() -> None:
    model = build_model("solov2_light_r18", 3, mask_quality=True)
    assert model.config["mask_quality"] is True
    rebuilt = build_model("solov2_light_r18", 3, **{
        k: v for k, v in model.config.items() if k not in ("name", "num_classes")
    })  # fmt: skip
    assert rebuilt.head.quality_pred is not None
    rebuilt.load_state_dict(model.state_dict())  # same parameters, same shapes
    assert build_model("solov2_light_r18", 3).head.quality_pred is None
    with torch.no_grad():
        cates, _ = rebuilt.head(
            [torch.rand(1, 128, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)],
            [(4, 4)] * 5,
        )
    assert all(c.shape == (1, 4, 4, 4) for c in cates)  # 3 classes + the quality channel


@pytest.mark.parametrize("flips", ["none", "hv"])
def test_predicted_scores_stay_probabilities(flips: str) -> None:
    model = tiny_model(mask_quality=True, score_threshold=0.0, update_threshold=0.0).eval()
    model.tta = flips
    pred = model.predict([torch.rand(3, 64, 64)])[0]
    assert pred.scores is not None and len(pred) > 0
    assert bool((pred.scores >= 0).all() and (pred.scores <= 1).all())
