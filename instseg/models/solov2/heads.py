"""SOLOv2's heads: the category + kernel branches (:class:`SOLOv2Head`, shared over FPN
levels, CoordConv on the kernel branch) and the unified mask-feature branch
(:class:`MaskFeatureHead`, P2..P5 fused at 1/4 scale, optionally 1/2). See
:mod:`instseg.models.solov2` for how :class:`~instseg.models.solov2.SOLOv2` uses them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.common.backbones import group_norm

__all__ = ["MaskFeatureHead", "SOLOv2Head", "conv_gn_relu", "coord_features"]


def conv_gn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias) + GroupNorm + ReLU."""
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, group_norm(cout), nn.ReLU(inplace=True))


def coord_features(x: Tensor) -> Tensor:
    """CoordConv channels ``(B, 2, H, W)``: normalized x then y in [-1, 1]."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None].expand(b, 2, h, w)


class SOLOv2Head(nn.Module):
    """Category and kernel branches, shared over levels.

    ``forward(feats, shapes)`` takes 5 maps ``(B, C, H_l, W_l)`` and the grid ``(rows, cols)``
    of each level (``S_l x S_l``, see :meth:`SOLOv2.grid_shapes`) and returns per level
    ``cate (B, K, rows, cols)`` logits and ``kernels (B, E, rows, cols)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        head_channels: int = 256,
        stacked_convs: int = 4,
        kernel_channels: int = 128,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if stacked_convs < 1:
            raise ValueError(f"stacked_convs must be >= 1, got {stacked_convs}")
        c = head_channels
        self.kernel_convs = nn.Sequential(
            *[conv_gn_relu(in_channels + 2 if i == 0 else c, c) for i in range(stacked_convs)]
        )
        self.cate_convs = nn.Sequential(
            *[conv_gn_relu(in_channels if i == 0 else c, c) for i in range(stacked_convs)]
        )
        self.kernel_pred = nn.Conv2d(c, kernel_channels, 3, padding=1)
        self.cate_pred = nn.Conv2d(c, num_classes, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        assert self.cate_pred.bias is not None
        nn.init.constant_(self.cate_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(
        self, feats: list[Tensor], shapes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        # as the official code: P2 halved to P3's size, P6 brought to P5's size
        feats = [
            F.interpolate(feats[0], scale_factor=0.5, mode="bilinear", align_corners=False),
            *feats[1:4],
            F.interpolate(feats[4], size=feats[3].shape[-2:], mode="bilinear", align_corners=False),
        ]
        cates, kernels = [], []
        for x, shape in zip(feats, shapes):
            x = torch.cat([x, coord_features(x)], 1)
            x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False)
            kernels.append(self.kernel_pred(self.kernel_convs(x)))
            cates.append(self.cate_pred(self.cate_convs(x[:, :-2])))
        return cates, kernels


class MaskFeatureHead(nn.Module):
    """Unified mask features: P2..P5 each brought to 1/4 scale by (conv+GN+ReLU, 2x bilinear)
    steps and summed (CoordConv on P5), then 1x1 conv+GN+ReLU -> ``(B, E, H/4, W/4)``.

    With ``votes``, a 3x3 conv on the fused features adds two linear channels (last): each
    pixel's predicted offset to its object's center (:mod:`.prior`) -> ``(B, E + 2, ...)``.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int = 128,
        out_channels: int = 128,
        num_levels: int = 4,
        votes: bool = False,
    ) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        for lv in range(num_levels):
            steps: list[nn.Module] = []
            for j in range(max(lv, 1)):
                cin = in_channels if j == 0 else mid_channels
                cin += 2 if (lv == num_levels - 1 and j == 0) else 0
                steps.append(conv_gn_relu(cin, mid_channels))
                if lv > 0:
                    steps.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.levels.append(nn.Sequential(*steps))
        self.pred = conv_gn_relu(mid_channels, out_channels, kernel=1)
        self.vote = nn.Conv2d(mid_channels, 2, 3, padding=1) if votes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
        if self.vote is not None:  # votes start at the pixel itself (offset 0)
            assert self.vote.bias is not None
            nn.init.zeros_(self.vote.bias)

    def forward(self, feats: list[Tensor]) -> Tensor:
        out = self.levels[0](feats[0])
        last = len(self.levels) - 1
        for lv in range(1, len(self.levels)):
            x = feats[lv]
            if lv == last:
                x = torch.cat([x, coord_features(x)], 1)
            out = out + self.levels[lv](x)
        if self.vote is not None:
            return torch.cat([self.pred(out), self.vote(out)], 1)
        return self.pred(out)
