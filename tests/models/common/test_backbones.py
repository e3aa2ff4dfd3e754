"""Backbones: pyramid outputs and the optional stride-2 ``"stem"`` map."""

from __future__ import annotations

import pytest
import torch

from instseg.models.common.backbones import mobilenet_v3_fpn, resnet_fpn


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3"])
def test_stem_output_adds_a_stride_2_map_and_nothing_else(name: str) -> None:
    def build(stem: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        if name == "mobilenet_v3":
            return mobilenet_v3_fpn(1.0, "gn", 2, 32, stem=stem)
        return resnet_fpn(name, "gn", 2, 32, stem=stem)

    plain, with_stem = build(False).eval(), build(True).eval()
    assert plain.stem_channels == 0 and with_stem.stem_channels > 0
    assert plain.state_dict().keys() == with_stem.state_dict().keys()  # no new weights
    x = torch.rand(2, 3, 128, 192)
    with torch.no_grad():
        a, b = plain(x), with_stem(x)
    assert list(b) == [*a, "stem"]
    assert b["stem"].shape == (2, with_stem.stem_channels, 64, 96)
    for k in a:  # the pyramid is untouched
        stride = plain.strides[-1 if k == "pool" else int(k)]
        assert a[k].shape == (2, 32, 128 // stride, 192 // stride)
        torch.testing.assert_close(a[k], b[k])
