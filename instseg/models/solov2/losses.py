"""SOLOv2's losses: the focal loss over cells, the Dice loss of masks (on probabilities:
:func:`dice_loss`, the reference), and the Dice loss straight from mask logits with a
hand-written backward (:func:`dice_loss_logits`, what training uses).

A crowded nuclei crop has hundreds of positive cells, each with a ``(H/4 * W/4)`` mask: the
autograd graph of ``dice_loss(sigmoid(logits), targets[index])`` writes about ten
``(P, M)`` temporaries (products, their gradients, the sigmoid's backward). Here the forward
keeps ``p = sigmoid(logits)`` and the gathered targets, takes the three row sums as dot
products, and the backward is one buffer updated in place:

    L_i = 1 - 2 a_i / d_i,  a_i = sum p_i t_i,  d_i = sum p_i^2 + sum t_i^2 + 2 eps
    dL_i / dlogit_i = (-2 t_i / d_i + 4 a_i p_i / d_i^2) * p_i * (1 - p_i)

Same values as :func:`dice_loss` on ``sigmoid(logits)`` (a test checks values and
gradients); ``bench/train_step_speed.py`` times the two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

__all__ = ["dice_loss", "dice_loss_logits", "focal_loss"]


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(1)`` for ``(P, M)`` tensors without a ``(P, M)`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _DiceFromLogits(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, targets: Tensor, index: Tensor, eps: float
    ) -> Tensor:
        p = torch.sigmoid(logits)
        t = targets.index_select(0, index)
        inter = _rowdot(p, t)
        t_sq = _rowdot(targets, targets).index_select(0, index)
        denom = _rowdot(p, p) + t_sq + 2.0 * eps
        ctx.save_for_backward(p, t, inter, denom)
        return 1.0 - 2.0 * inter / denom

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        p, t, inter, denom = ctx.saved_tensors
        c_t = (-2.0 * grad / denom).unsqueeze(1)
        c_p = (4.0 * grad * inter / (denom * denom)).unsqueeze(1)
        d = t * c_t
        d.addcmul_(p, c_p)  # dL/dp
        d.mul_(p)
        d.addcmul_(d, p, value=-1.0)  # * p (1 - p): the sigmoid's derivative
        return d, None, None, None


def dice_loss_logits(logits: Tensor, targets: Tensor, index: Tensor, eps: float = 1e-3) -> Tensor:
    """Per-cell Dice loss ``(P,)`` of ``sigmoid(logits)`` against ``targets[index]``.

    ``logits (P, H, W)`` or ``(P, M)`` float32 (the positive cells' mask logits);
    ``targets (O, H, W)`` or ``(O, M)`` soft targets in [0, 1], no gradient; ``index (P,)``
    int64: the object of each cell. ``1 - 2 sum(pt) / (sum(p^2) + sum(t^2))`` (SOLO's form).
    """
    if targets.requires_grad:
        raise ValueError("dice_loss_logits: targets must not require grad")
    flat = logits.reshape(logits.shape[0], -1)
    t = targets.reshape(targets.shape[0], -1).to(flat.dtype)
    if flat.shape[1] != t.shape[1]:
        raise ValueError(f"dice_loss_logits: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}")
    out: Tensor = _DiceFromLogits.apply(flat, t, index, eps)
    return out


# -- losses ---------------------------------------------------------------------------------
def dice_loss(probs: Tensor, targets: Tensor, eps: float = 1e-3) -> Tensor:
    """Per-instance Dice loss ``(N,)``: ``1 - 2 sum(pt) / (sum(p^2) + sum(t^2))`` (SOLO's form).

    ``probs`` and ``targets`` are ``(N, H, W)`` in [0, 1] (targets may be soft).
    """
    p = probs.reshape(probs.shape[0], -1)
    t = targets.reshape(targets.shape[0], -1).to(p.dtype)
    inter = (p * t).sum(1)
    denom = (p * p).sum(1) + eps + (t * t).sum(1) + eps
    return 1.0 - 2.0 * inter / denom


def focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Summed sigmoid focal loss (torchvision) of ``logits (M, K)``.

    ``labels (M,)`` int64: ``0..K-1`` positive class, ``K`` background, ``-1`` ignored.
    """
    num_classes = logits.shape[1]
    valid = labels >= 0
    onehot = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes].to(logits.dtype)
    loss = sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="none")
    return (loss * valid[:, None].to(loss.dtype)).sum()
