"""SOLOv2's semantic maps (``semantic_maps``): the foreground / contact targets, the BCE loss
against a direct numpy formula, where the two channels sit among the mask features and the
kernels, the config round trip; and logit-bicubic mask upsampling (``mask_upsample``). Flips,
ONNX export and overfitting run both as the ``prior_votes_semantic`` entry of
``test_solov2.VARIANTS``."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instseg.models import solov2_prior
from instseg.models.solov2_post import PostConfig, paste_masks
from instseg.models.zoo import build_model
from instseg.structures import Instances
from tests.models.test_solov2 import scene, tiny_model


def test_semantic_targets_mark_foreground_and_shared_pixels() -> None:
    soft = torch.zeros(3, 4, 6)
    soft[0, 0:2, 0:3] = 1.0
    soft[1, 0:2, 3:6] = 1.0
    soft[0, 1, 3], soft[1, 1, 3] = 0.3, 0.7  # a pixel the two objects share
    soft[2, 3, 5] = 0.04  # a sliver of a third object: foreground 0.04, no contact
    soft[1, 3, 5] = 0.5
    target = solov2_prior.semantic_targets(soft)
    assert target.shape == (2, 4, 6)
    torch.testing.assert_close(target[0], soft.sum(0).clamp(max=1.0))
    assert torch.nonzero(target[1]).tolist() == [[1, 3]]  # 0.04 < 0.05: not a contact
    one = solov2_prior.semantic_targets(soft[:1])
    assert not bool(one[1].any()) and torch.equal(one[0], soft[0])
    empty = solov2_prior.semantic_targets(torch.zeros(0, 4, 6))
    assert empty.shape == (2, 4, 6) and not bool(empty.any())


def test_semantic_loss_is_the_mean_bce_of_both_maps() -> None:
    model = tiny_model(semantic_maps=True, semantic_loss_weight=2.0)
    img, t = scene()
    with torch.no_grad():
        loss = model.losses([img], [t])["loss_semantic"]
        batch, sizes = model._preprocess([img], train=True)
        _, _, feat = model._forward(batch)
        _, _, soft = model._image_targets(t, sizes[0], (batch.shape[-2], batch.shape[-1]))
    p = feat[0, -2:].double().numpy()  # no votes: the semantic maps are the last channels
    s = soft.double().numpy()
    fg = np.minimum(s.sum(0), 1.0)
    contact = np.sort(s, 0)[-2] > 0.05
    bce = 0.0
    for prob, target in ((p[0], fg), (p[1], contact)):
        bce += np.mean(-(target * np.log(prob) + (1 - target) * np.log(1 - prob)))
    assert 0.0 < fg.mean() < 1.0
    assert math.isclose(float(loss), 2.0 * bce, rel_tol=1e-4)


def test_semantic_maps_sit_before_the_votes_and_get_kernel_weights() -> None:
    """Features: E, then the two probabilities, then the 2 votes; kernels: E + 2 weights, 5
    prior coefficients, 3 vote parameters; an image without objects keeps the head in the
    graph."""
    model = tiny_model(semantic_maps=True, center_votes=True, position_prior=True, grid_canvas=64)
    with torch.no_grad():
        batch, _ = model._preprocess([torch.rand(3, 64, 64)])
        _, kernels, feat = model._forward(batch)
        k, f = model._mask_operands(model._flatten(kernels), feat)
    assert kernels[0].shape[1] == 16 + 2 + 5 + 3 and feat.shape[1] == 16 + 2 + 2
    assert f.shape[1] == k.shape[-1] == 16 + 2 + 6 + 4
    sem = feat[:, 16:18]
    assert bool((sem > 0).all() and (sem < 1).all())
    empty = Instances((48, 80), masks=torch.zeros(0, 48, 80, dtype=torch.bool))
    out = model.losses([torch.rand(3, 48, 80)], [empty])
    assert set(out) == {"loss_cate", "loss_mask", "loss_vote", "loss_semantic"}
    sum(out.values()).backward()  # type: ignore[union-attr]
    assert model.mask_head.semantic is not None
    assert model.mask_head.semantic.weight.grad is not None


def test_semantic_maps_config_round_trip() -> None:
    built = build_model("solov2_light_r18", 3, semantic_maps=True)
    assert built.config["semantic_maps"] is True
    rebuilt = build_model("solov2_light_r18", 3, **{
        k: v for k, v in built.config.items() if k not in ("name", "num_classes")
    })  # fmt: skip
    rebuilt.load_state_dict(built.state_dict())
    assert build_model("solov2_light_r18", 3).mask_head.semantic is None


def test_logit_bicubic_upsampling_thresholds_interpolated_logits() -> None:
    """``mask_upsample="logit_bicubic"``: a pixel is in the mask where the bicubic
    interpolation of the logits exceeds the threshold's logit (computed here directly); the
    default stays bilinear on the probabilities; unknown modes are refused."""
    torch.manual_seed(0)
    soft = torch.sigmoid(3 * torch.randn(3, 8, 10))
    cfg = PostConfig(mask_threshold=0.4, max_detections=3)
    got = paste_masks(soft, (32, 40), (48, 60), replace(cfg, mask_upsample="logit_bicubic"))
    logits = torch.logit(soft.double())
    up = F.interpolate(logits[:, None], size=(48, 60), mode="bicubic", align_corners=False)
    want = up[:, 0] > math.log(0.4 / 0.6)
    assert got.shape == (3, 48, 60) and (got == want).float().mean() > 0.999
    plain = paste_masks(soft, (32, 40), (48, 60), cfg)
    bilinear = F.interpolate(soft[:, None], size=(48, 60), mode="bilinear", align_corners=False)
    assert (plain == (bilinear[:, 0] > 0.4)).float().mean() > 0.999
    assert not torch.equal(plain, got)
    with pytest.raises(ValueError, match="mask_upsample"):
        tiny_model(mask_upsample="nearest")
