"""Our GroupNorm (channels-last CPU backward) against ``nn.GroupNorm``: values, gradients,
layouts, the paths that must stay native, and a whole SOLOv2 training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from instseg.models.common import group_norm as group_norm_module
from instseg.models.common.backbones import group_norm
from instseg.models.common.group_norm import GroupNorm


def _pair(groups: int, channels: int) -> tuple[nn.GroupNorm, GroupNorm]:
    ref = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = GroupNorm(groups, channels)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "g"),
    [(1, 64, 48, 50, 32), (2, 16, 60, 41, 8), (1, 16, 64, 64, 8), (3, 2, 48, 48, 1), (2, 6, 50, 49, 6)],
)
def test_channels_last_backward_matches_native(n: int, c: int, h: int, w: int, g: int) -> None:
    torch.manual_seed(0)
    ref, ours = _pair(g, c)
    x = (torch.randn(n, c, h, w) * 3 + 1).contiguous(memory_format=torch.channels_last)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_ref, y_ours = ref(x_ref), ours(x_ours)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_ours.backward(grad)
    assert y_ours.grad_fn is not None and "ChannelsLast" in type(y_ours.grad_fn).__name__
    torch.testing.assert_close(y_ours, y_ref)
    assert x_ours.grad is not None and x_ref.grad is not None
    assert x_ours.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_gradcheck_float64_function() -> None:
    from instseg.models.common.group_norm import _ChannelsLastGroupNorm

    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    inputs = (x.requires_grad_(True), w.requires_grad_(True), b.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda *t: _ChannelsLastGroupNorm.apply(*t, 2, 1e-5), inputs)


def test_native_paths_where_the_fast_one_does_not_apply() -> None:
    _, ours = _pair(4, 8)
    x = torch.randn(1, 8, 48, 48)
    plain = ours(x.requires_grad_(True))  # contiguous input
    assert "ChannelsLast" not in type(plain.grad_fn).__name__
    small = torch.randn(1, 8, 40, 40).contiguous(memory_format=torch.channels_last)
    assert "ChannelsLast" not in type(ours(small.requires_grad_(True)).grad_fn).__name__
    _, wide = _pair(2, 8)  # 4 channels per group: the native kernel is fast there
    big = torch.randn(1, 8, 64, 64).contiguous(memory_format=torch.channels_last)
    assert "ChannelsLast" not in type(wide(big.requires_grad_(True)).grad_fn).__name__
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # inference
        torch.testing.assert_close(ours(cl), nn.functional.group_norm(cl, 4, ours.weight, ours.bias))
    traced = torch.jit.trace(ours, cl)  # export traces see the native op
    assert "group_norm" in str(traced.graph)


def test_backbone_norms_are_ours_and_a_solov2_step_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    from instseg.models.zoo import build_model
    from instseg.structures import Instances

    assert isinstance(group_norm(64), GroupNorm)
    monkeypatch.setattr(group_norm_module, "MIN_PIXELS", 1)  # every map of this small image
    monkeypatch.setattr(group_norm_module, "MAX_GROUP_CHANNELS", 1000)  # and every width
    masks = torch.zeros(2, 96, 96, dtype=torch.bool)
    masks[0, 10:30, 12:40] = True
    masks[1, 50:80, 40:70] = True
    target = Instances(
        boxes=torch.tensor([[12.0, 10, 40, 30], [40, 50, 70, 80]]),
        labels=torch.zeros(2, dtype=torch.int64),
        masks=masks,
        image_size=(96, 96),
    )
    image = torch.rand(3, 96, 96)
    grads = []
    for native in (True, False):
        torch.manual_seed(0)
        model = build_model("solov2_light_mnv3", 1).train()
        forward = GroupNorm.forward
        if native:
            GroupNorm.forward = nn.GroupNorm.forward  # type: ignore[method-assign]
        try:
            losses = model.losses([image], [target])
            sum(losses.values()).backward()  # type: ignore[union-attr]
        finally:
            GroupNorm.forward = forward  # type: ignore[method-assign]
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-3, atol=1e-5, msg=k)
