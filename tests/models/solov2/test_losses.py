"""``dice_loss_logits`` (hand-written backward) against ``losses.dice_loss`` on sigmoids."""

from __future__ import annotations

import pytest
import torch

from instseg.models.solov2 import losses
from instseg.models.solov2.losses import dice_loss_logits


@pytest.mark.parametrize(("p", "o", "shape"), [(17, 5, (13, 11)), (1, 1, (4, 4)), (6, 9, (30,))])
def test_values_and_gradients_match_autograd(p: int, o: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(p, *shape) * 3).requires_grad_(True)
    targets = torch.rand(o, *shape)
    targets[0] = 0  # an empty target
    index = torch.randint(0, o, (p,))
    weights = torch.randn(p)
    want = losses.dice_loss(torch.sigmoid(logits), targets[index])
    (want * weights).sum().backward()
    assert logits.grad is not None
    want_grad, logits.grad = logits.grad.clone(), None
    got = dice_loss_logits(logits, targets, index)
    (got * weights).sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(logits.grad, want_grad, rtol=1e-4, atol=1e-7)


def test_gradcheck_float64() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.rand(2, 7, dtype=torch.float64)
    index = torch.tensor([0, 1, 1])
    assert torch.autograd.gradcheck(lambda z: dice_loss_logits(z, targets, index), (x,))


def test_perfect_and_disjoint_masks() -> None:
    t = torch.zeros(2, 10, 10)
    t[0, 2:6, 2:6] = 1
    t[1, 5:9, 1:4] = 1
    sure = (t * 2 - 1) * 30  # logits of the targets themselves
    assert dice_loss_logits(sure, t, torch.tensor([0, 1])).max() < 1e-3
    assert dice_loss_logits(-sure, t, torch.tensor([0, 1])).min() > 0.999


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="grad"):
        dice_loss_logits(torch.zeros(1, 4), torch.zeros(1, 4, requires_grad=True), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        dice_loss_logits(torch.zeros(1, 4), torch.zeros(1, 5), torch.zeros(1, dtype=torch.long))
