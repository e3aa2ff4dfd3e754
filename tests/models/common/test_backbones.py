"""Backbones: the FPN pyramid's maps, strides and channels."""

from __future__ import annotations

import pytest
import torch

from instseg.models.common.backbones import mobilenet_v3_fpn, resnet_fpn


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3"])
@pytest.mark.parametrize("min_level", [2, 3])
def test_pyramid_maps_sit_at_their_strides(name: str, min_level: int) -> None:
    torch.manual_seed(0)
    if name == "mobilenet_v3":
        net = mobilenet_v3_fpn(1.0, "gn", min_level, 32).eval()
    else:
        net = resnet_fpn(name, "gn", min_level, 32).eval()
    assert net.strides == [2**lv for lv in range(min_level, 7)]
    assert net.out_channels == 32 and net.feature_names == [str(i) for i in range(6 - min_level)]
    x = torch.rand(2, 3, 128, 192)
    with torch.no_grad():
        out = net(x)
    assert list(out) == [*net.feature_names, "pool"]
    for k, stride in zip(out, net.strides):
        assert out[k].shape == (2, 32, 128 // stride, 192 // stride)
