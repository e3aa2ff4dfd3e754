"""SOLOv2 ops: Matrix NMS against a loop over the paper's formula, losses, target helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from instseg.masks import masks_to_boxes
from instseg.models.solov2 import assign, losses, nms


def matrix_nms_loop(
    masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, kernel: str, sigma: float
) -> torch.Tensor:
    """Direct transcription of SOLOv2's Matrix NMS (Eq. 4 of the paper), one pair at a time."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    m = masks.reshape(n, -1).double()

    def iou(a: int, b: int) -> float:
        inter = float((m[a] * m[b]).sum())
        union = float(m[a].sum() + m[b].sum()) - inter
        return inter / union if union > 0 else 0.0

    def f(x: float) -> float:
        return math.exp(-sigma * x * x) if kernel == "gaussian" else 1.0 - x

    out = scores.clone().double()
    for rank_j, j in enumerate(order):
        decay = 1.0
        for rank_i in range(rank_j):
            i = order[rank_i]
            if labels[i] != labels[j]:
                continue
            # compensation: the largest IoU of i with any higher-scored same-class candidate
            comp = max(
                [iou(order[k], i) for k in range(rank_i) if labels[order[k]] == labels[i]],
                default=0.0,
            )
            decay = min(decay, f(iou(i, j)) / f(comp))
        out[j] = float(scores[j]) * decay
    return out.float()


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_nms_matches_loop(kernel: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, h, w = 25, 16, 16
    # overlapping random rectangles plus noise, so IoUs span 0..1
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for k in range(n):
        y, x = torch.randint(0, 10, (2,), generator=g).tolist()
        hh, ww = torch.randint(3, 7, (2,), generator=g).tolist()
        masks[k, y : y + hh, x : x + ww] = True
    masks ^= torch.rand(n, h, w, generator=g) < 0.05
    labels = torch.randint(0, 3, (n,), generator=g)
    scores = torch.rand(n, generator=g)
    got = nms.matrix_nms(masks, labels, scores, kernel=kernel, sigma=2.0)
    want = matrix_nms_loop(masks, labels, scores, kernel, 2.0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got <= scores + 1e-7).all()
    # permuting the input permutes the output
    perm = torch.randperm(n, generator=g)
    torch.testing.assert_close(
        nms.matrix_nms(masks[perm], labels[perm], scores[perm], kernel), got[perm]
    )


def test_matrix_nms_hand_cases() -> None:
    a = torch.zeros(8, 8, dtype=torch.bool)
    a[1:5, 1:5] = True
    b = torch.zeros(8, 8, dtype=torch.bool)
    b[5:8, 5:8] = True
    masks = torch.stack([a, a, b, a])
    labels = torch.tensor([0, 0, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    gauss = nms.matrix_nms(masks, labels, scores, "gaussian", sigma=2.0)
    assert gauss[0] == pytest.approx(0.9)  # top candidate untouched
    assert gauss[1] == pytest.approx(0.8 * math.exp(-2.0))  # exact duplicate decayed
    assert gauss[2] == pytest.approx(0.7)  # disjoint mask untouched
    assert gauss[3] == pytest.approx(0.6)  # same mask, other class untouched
    linear = nms.matrix_nms(masks, labels, scores, "linear")
    assert linear[1] == pytest.approx(0.0) and linear[2] == pytest.approx(0.7)
    # a third duplicate: its decay is compensated by the second one's own suppression
    three = nms.matrix_nms(
        torch.stack([a, a, a]), torch.zeros(3, dtype=torch.int64), torch.tensor([0.9, 0.8, 0.7])
    )
    assert three[2] == pytest.approx(0.7 * math.exp(-2.0))
    assert nms.matrix_nms(masks[:0], labels[:0], scores[:0]).shape == (0,)
    with pytest.raises(ValueError, match="kernel"):
        nms.matrix_nms(masks, labels, scores, "box")


def test_dice_loss() -> None:
    t = torch.zeros(2, 10, 10)
    t[:, 2:6, 2:6] = 1
    assert losses.dice_loss(t, t).max() < 1e-3
    assert losses.dice_loss(1 - t, t).min() > 0.999
    p = torch.rand(3, 5, 5)
    q = (torch.rand(3, 5, 5) > 0.5).float()
    want = 1 - 2 * (p * q).sum((1, 2)) / ((p * p).sum((1, 2)) + (q * q).sum((1, 2)) + 2e-3)
    torch.testing.assert_close(losses.dice_loss(p, q), want)


def test_focal_loss_ignores_and_background() -> None:
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 2, 3, 3, -1, 1])  # 3 = background, -1 = ignored
    onehot = torch.zeros(6, 3)
    onehot[0, 0] = onehot[1, 2] = onehot[5, 1] = 1
    full = sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=2.0, reduction="none")
    want = full[[0, 1, 2, 3, 5]].sum()
    torch.testing.assert_close(losses.focal_loss(logits, labels), want)


def test_center_of_mass_and_regions() -> None:
    m = torch.zeros(1, 256, 256)
    m[0, 40:80, 80:120] = 1  # 40x40 square, mass center (60, 100)
    c = assign.center_of_mass(m)
    torch.testing.assert_close(c, torch.tensor([[60.0, 100.0]]))
    assert torch.isnan(assign.center_of_mass(torch.zeros(1, 4, 4))).all()
    boxes = torch.tensor([[80.0, 40.0, 120.0, 80.0]])
    # grid 40 on 256 px: cell 6.4 px; center cell (row 9, col 15); sigma box +-4 px
    reg = assign.center_regions(c, boxes, 40, (256, 256), sigma=0.2)
    assert reg.tolist() == [[8, 10, 15, 16]]
    # a huge sigma box is clipped to 3x3 around the center cell
    assert assign.center_regions(c, boxes, 40, (256, 256), sigma=5.0).tolist() == [[8, 10, 14, 16]]
    # a tiny object keeps its center cell
    assert assign.center_regions(c, boxes, 40, (256, 256), sigma=0.0).tolist() == [[9, 9, 15, 15]]


def test_points_nms_keeps_local_maxima() -> None:
    heat = torch.zeros(1, 1, 4, 4)
    heat[0, 0, 1, 1] = 0.9
    heat[0, 0, 1, 2] = 0.5  # neighbour of a larger score: removed
    heat[0, 0, 3, 3] = 0.4
    out = nms.points_nms(heat)
    assert out[0, 0, 1, 1] == pytest.approx(0.9) and out[0, 0, 3, 3] == pytest.approx(0.4)
    assert out[0, 0, 1, 2] == 0


def test_mask_boxes_match_numpy_codec() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((6, 9, 11)) < 0.1
    masks[2] = False
    got = masks_to_boxes(torch.from_numpy(masks))
    want = torch.from_numpy(masks_to_boxes(masks)).float()
    torch.testing.assert_close(got, want)
    assert got[2].tolist() == [0, 0, 0, 0]


def test_mask_iou_matrix_exact_for_bool_and_soft() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(9, 13, 7, generator=g) < 0.4
    masks[3] = False  # empty mask: IoU 0 with everything, itself included
    m = masks.reshape(9, -1).double()
    inter = m @ m.t()
    area = m.sum(1)
    want = (inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6)).float()
    got = nms.mask_iou_matrix(masks)  # bool: the int8 matmul on CPU
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(nms.mask_iou_matrix(masks.float()), got, rtol=0, atol=1e-6)
    assert got[3].abs().sum() == 0 and got[0, 0] == 1.0


def test_mask_boxes_bool_and_numeric_agree() -> None:
    masks = torch.rand(5, 20, 30, generator=torch.Generator().manual_seed(1)) < 0.02
    masks[1] = False
    boxes = masks_to_boxes(masks)
    torch.testing.assert_close(masks_to_boxes(masks.to(torch.uint8) * 3), boxes)
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert boxes[1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("n", [1, 3, 7, 40])
def test_mask_iou_matrix_upper_triangle(n: int) -> None:
    masks = torch.rand(n, 6, 9, generator=torch.Generator().manual_seed(n)) < 0.5
    full = nms.mask_iou_matrix(masks)
    upper = nms.mask_iou_matrix(masks, upper=True)
    keep = torch.ones(n, n, dtype=torch.bool).triu()
    torch.testing.assert_close(upper[keep], full[keep], rtol=0, atol=0)
    torch.testing.assert_close(full, full.t())
