"""SOLOv2's center votes (``center_votes``): the offset targets, the vote term of the mask
logit against its direct formula, the L1 loss and the round trip through the model's config.
Flips, ONNX export and overfitting run it as the ``prior_votes`` entry of
``test_solov2.VARIANTS``."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from instseg.models.solov2 import prior as solov2_prior
from instseg.models.zoo import build_model
from instseg.structures import Instances
from tests.models.solov2.test_model import scene, tiny_model


def test_vote_targets_point_from_each_pixel_to_its_objects_center() -> None:
    soft = torch.zeros(2, 6, 8)
    soft[0, 0:2, 0:2] = 1.0  # 2x2 block: center (y, x) = (2, 2) input px at stride 2
    soft[1, 2:6, 4:8] = 1.0  # 4x4 block: center (8, 12)
    soft[1, 1, 1] = 0.6  # overlaps object 0 with a smaller value: stays object 0's
    soft[1, 5, 0] = 0.4  # under 0.5: background
    target, fg = solov2_prior.vote_targets(soft, stride=2, unit0=4.0)
    assert target.shape == (2, 6, 8) and fg.dtype == torch.bool
    assert int(fg.sum()) == 4 + 16 and not bool(fg[5, 0])
    # pixel (i, j) has center (2i + 1, 2j + 1); offsets (x, y) in units of 4 px
    assert target[:, 0, 0].tolist() == [(2 - 1) / 4, (2 - 1) / 4]
    assert target[:, 1, 1].tolist() == [(2 - 3) / 4, (2 - 3) / 4]
    # object 1's center moves slightly with its two extra partial pixels: take it from numpy
    w = soft[1].numpy()
    ys, xs = np.mgrid[0:6, 0:8] * 2.0 + 1.0
    cy, cx = (w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()
    np.testing.assert_allclose(target[:, 3, 6].numpy(), [(cx - 13) / 4, (cy - 7) / 4], rtol=1e-6)
    empty_t, empty_fg = solov2_prior.vote_targets(torch.zeros(0, 6, 8), 2, 4.0)
    assert empty_t.shape == (2, 6, 8) and not bool(empty_fg.any())


def test_vote_targets_stay_near_the_full_resolution_center() -> None:
    """At stride 4 the targets point to the center of the pooled soft mask, which lies
    within a fraction of a stride of the full-resolution mask's center."""
    full = torch.zeros(1, 32, 32)
    full[0, 5:19, 9:14] = 1.0
    full[0, 18:23, 2:30] = 1.0
    soft = F.avg_pool2d(full[None], 4)[0]
    target, fg = solov2_prior.vote_targets(soft, stride=4, unit0=1.0)
    ys, xs = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")
    cx = float((full[0] * xs).sum() / full.sum())
    cy = float((full[0] * ys).sum() / full.sum())
    for i, j in torch.nonzero(fg).tolist():  # every pixel votes for the same point
        assert abs(float(target[0, i, j]) + 4 * j + 2 - cx) < 0.5
        assert abs(float(target[1, i, j]) + 4 * i + 2 - cy) < 0.5


def test_vote_term_equals_its_formula() -> None:
    """``expand_votes(params) . vote_channels(votes)`` is ``-softplus(beta) |v - c'|^2 / u^2``
    with ``v = x + u0 o(x)`` and ``c' = c + u d``, computed here pixel by pixel."""
    torch.manual_seed(0)
    stride, unit0, ref = 4, 12.0, solov2_prior.REF
    votes = torch.randn(1, 2, 5, 7)
    params = torch.randn(3, 3)
    centers = torch.tensor([[10.0, 14.0], [3.0, 30.0], [17.0, 5.0]]) / ref  # (y, x)
    units = torch.tensor([16.0, 32.0, 8.0]) / ref
    got = torch.einsum(
        "ck,khw->chw",
        solov2_prior.expand_votes(params, centers, units),
        solov2_prior.vote_channels(votes, stride, unit0)[0],
    )
    want = torch.zeros(3, 5, 7, dtype=torch.float64)
    for c in range(3):
        beta, dx, dy = params[c].double().tolist()
        ccx = float(centers[c, 1]) * ref + float(units[c]) * ref * dx
        ccy = float(centers[c, 0]) * ref + float(units[c]) * ref * dy
        u = float(units[c]) * ref
        for i in range(5):
            for j in range(7):
                vx = (j + 0.5) * stride + unit0 * float(votes[0, 0, i, j])
                vy = (i + 0.5) * stride + unit0 * float(votes[0, 1, i, j])
                d2 = (vx - ccx) ** 2 + (vy - ccy) ** 2
                want[c, i, j] = -math.log1p(math.exp(beta)) * d2 / (u * u)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_vote_loss_is_the_mean_l1_on_foreground_pixels() -> None:
    model = tiny_model(center_votes=True, vote_loss_weight=2.0)
    img, t = scene()
    with torch.no_grad():
        loss = model.losses([img], [t])["loss_vote"]
        batch, sizes = model.preprocess([img], train=True)
        _, _, feat = model.network(batch)
        _, _, soft = model._image_targets(t, sizes[0], (batch.shape[-2], batch.shape[-1]))
    votes = feat[0, -2:].numpy()
    soft_np = soft.numpy()
    ys, xs = np.mgrid[0 : soft.shape[1], 0 : soft.shape[2]] * 4.0 + 2.0
    errors = []
    for i, j in zip(*np.nonzero(soft_np.max(0) > 0.5)):
        k = int(soft_np[:, i, j].argmax())
        w = soft_np[k]
        cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
        tx, ty = (cx - xs[i, j]) / model.prior_units[0], (cy - ys[i, j]) / model.prior_units[0]
        errors.append(abs(votes[0, i, j] - tx) + abs(votes[1, i, j] - ty))
    assert len(errors) > 20
    assert math.isclose(float(loss), 2.0 * float(np.mean(errors)), rel_tol=1e-4)


def test_vote_loss_on_images_without_objects_keeps_the_head_in_the_graph() -> None:
    model = tiny_model(center_votes=True)
    empty = Instances((48, 80), masks=torch.zeros(0, 48, 80, dtype=torch.bool))
    out = model.losses([torch.rand(3, 48, 80)], [empty])
    assert set(out) == {"loss_cate", "loss_mask", "loss_vote"} and out["loss_vote"] == 0
    sum(out.values()).backward()  # type: ignore[union-attr]
    assert model.mask_head.vote is not None and model.mask_head.vote.weight.grad is not None


def test_votes_alone_and_the_config_round_trip() -> None:
    """Votes without the position prior: the mask operands are the features + 4 vote
    channels; the option survives ``build_model``'s config and is off by default."""
    model = tiny_model(center_votes=True, grid_canvas=64).eval()
    with torch.no_grad():
        batch, _ = model.preprocess([torch.rand(3, 64, 64)])
        _, kernels, feat = model.network(batch)
        k, f = model.mask_operands(model.flatten(kernels), feat)
    assert feat.shape[1] == 16 + 2 and f.shape[1] == 16 + 4 and k.shape[-1] == 16 + 4
    assert len(model.predict([torch.rand(3, 64, 64)])) == 1
    built = build_model("solov2_light_r18", 3, center_votes=True)
    assert built.config["center_votes"] is True
    rebuilt = build_model("solov2_light_r18", 3, **{
        k: v for k, v in built.config.items() if k not in ("name", "num_classes")
    })  # fmt: skip
    rebuilt.load_state_dict(built.state_dict())  # same parameters, same shapes
    assert build_model("solov2_light_r18", 3).mask_head.vote is None
