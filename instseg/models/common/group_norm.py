"""GroupNorm with a faster backward for channels-last CPU training.

PyTorch's CPU ``native_group_norm_backward`` is several times slower on channels-last
tensors than on contiguous ones when groups are narrow (2 channels: ~4x at 64 x 192 x 192),
and our CPU SOLOv2 trains channels-last because its convolutions are faster that way.
:class:`GroupNorm` is ``nn.GroupNorm`` (same parameters, same state dict, same forward);
only when it trains on a large channels-last CPU map with narrow groups (``MIN_PIXELS``,
``MAX_GROUP_CHANNELS``) does it route through
:class:`_ChannelsLastGroupNorm`, whose backward is two per-channel reductions and one fused
elementwise pass that keep the channels-last layout:

    x_hat = (x - mean_g) * rstd_g,  y = gamma_c * x_hat + beta_c
    dx = (rstd_g * gamma_c) * dy + k2_g * x + k3_g     (per sample n, group g, channel c)

with ``k2_g = -rstd_g^2 B_g / D`` and ``k3_g = -rstd_g A_g / D - k2_g mean_g``, where
``A_g = sum_{c in g} gamma_c sum_hw dy`` and ``B_g = sum_{c in g} gamma_c sum_hw dy x_hat``
and ``D`` = channels per group x H x W. Inference, export and other devices use the native op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MAX_GROUP_CHANNELS", "MIN_PIXELS", "GroupNorm", "group_norm_channels_last"]

#: where the native kernel is slow (``bench/train_step_speed.py``): 2 channels per group or
#: fewer (ours 1.5-2.3x faster at 56-192 px; with 3 or 9 channels per group native is faster)
#: on maps of ``MIN_PIXELS`` or more (below, the native op's lower fixed overhead wins)
MAX_GROUP_CHANNELS, MIN_PIXELS = 2, 48 * 48


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """``F.group_norm`` for ``(N, C, H, W)`` channels-last inputs, backward without relayout."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float
    ) -> Tensor:
        n, c, h, w = x.shape
        out, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return out

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        g = ctx.groups
        cg = c // g
        dy = dy.contiguous(memory_format=torch.channels_last)
        # per-channel sums over H, W: (N, C); the channels-last layout reduces the outer dims
        sum_dy = dy.sum((2, 3))
        sum_dyx = (dy * x).sum((2, 3))  # (einsum is ~10x slower here)
        mean_c = mean.view(n, g, 1).expand(n, g, cg).reshape(n, c)
        rstd_c = rstd.view(n, g, 1).expand(n, g, cg).reshape(n, c)
        sum_dy_xhat = (sum_dyx - mean_c * sum_dy) * rstd_c  # (N, C): sum_hw dy * x_hat
        d_weight = sum_dy_xhat.sum(0)
        d_bias = sum_dy.sum(0)
        a = (sum_dy * weight).view(n, g, cg).sum(2)  # (N, G)
        b = (sum_dy_xhat * weight).view(n, g, cg).sum(2)  # (N, G)
        count = float(cg * h * w)
        r = rstd.view(n, g)
        k2 = -(r * r) * b / count  # (N, G)
        k3 = -r * a / count - k2 * mean.view(n, g)
        k1 = (rstd_c * weight).view(n, c, 1, 1)
        k2c = k2.view(n, g, 1).expand(n, g, cg).reshape(n, c, 1, 1)
        k3c = k3.view(n, g, 1).expand(n, g, cg).reshape(n, c, 1, 1)
        dx = dy * k1
        dx.addcmul_(x, k2c).add_(k3c)
        return dx, d_weight.to(weight.dtype), d_bias.to(weight.dtype), None, None


def group_norm_channels_last(
    x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float = 1e-5
) -> Tensor:
    """``F.group_norm(x, groups, weight, bias, eps)`` for a channels-last ``(N, C, H, W)``
    float32 tensor, with the channels-last backward of this module."""
    out: Tensor = _ChannelsLastGroupNorm.apply(x, weight, bias, groups, eps)
    return out


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and results) whose CPU channels-last training
    backward runs without PyTorch's slow channels-last kernel; see the module docstring."""

    def forward(self, x: Tensor) -> Tensor:
        if (
            self.affine
            and x.dim() == 4
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and torch.is_grad_enabled()
            and self.num_channels <= MAX_GROUP_CHANNELS * self.num_groups
            and x.shape[2] * x.shape[3] >= MIN_PIXELS
            and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous()
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
        ):
            return group_norm_channels_last(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
