"""SOLOv2 mask targets inside each object's box (``solov2_targets.soft_masks``) against the
direct full-size resize + pad + pool (``soft_masks_dense``) and ``F.interpolate`` itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instseg.models.solov2.targets import (
    axis_weights,
    bilinear_weights,
    soft_masks,
    soft_masks_dense,
)


@pytest.mark.parametrize(("n_in", "n_out"), [(7, 7), (10, 23), (23, 10), (354, 407), (5, 1)])
def test_bilinear_weights_are_f_interpolate(n_in: int, n_out: int) -> None:
    x = torch.rand(3, n_in)
    want = F.interpolate(x[None], size=n_out, mode="linear", align_corners=False)[0]
    torch.testing.assert_close(x @ bilinear_weights(n_in, n_out).T, want)


def test_axis_weights_resize_pad_and_pool() -> None:
    x = torch.rand(2, 13)
    want = F.avg_pool1d(F.pad(F.interpolate(x[None], size=15, mode="linear"), (0, 5)), 4)[0]
    torch.testing.assert_close(x @ axis_weights(13, 15, 20, 4).T, want)


def _random_masks(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Blobs of random boxes (some touching the border), one empty mask."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n - 1):
        y1 = int(torch.randint(0, h - 2, (1,), generator=g))
        x1 = int(torch.randint(0, w - 2, (1,), generator=g))
        y2 = min(h, y1 + int(torch.randint(1, 30, (1,), generator=g)))
        x2 = min(w, x1 + int(torch.randint(1, 30, (1,), generator=g)))
        masks[i, y1:y2, x1:x2] = torch.rand(y2 - y1, x2 - x1, generator=g) > 0.3
    masks[0, :3, :4] = True  # the corner
    return masks


@pytest.mark.parametrize(
    ("hw", "size", "padded", "stride"),
    [
        ((50, 60), (58, 69), (64, 96), 4),  # upscale (training at scale 1.15)
        ((50, 60), (50, 60), (64, 64), 4),  # same size: no resize
        ((90, 70), (41, 32), (64, 32), 4),  # downscale: some rows reach no output
        ((33, 47), (38, 54), (64, 64), 2),  # half-scale mask features
    ],
)
def test_box_crops_match_full_size_masks(
    hw: tuple[int, int], size: tuple[int, int], padded: tuple[int, int], stride: int
) -> None:
    masks = _random_masks(12, *hw, seed=sum(hw))
    soft, centers = soft_masks(masks, size, padded, stride)
    want_soft, want_centers = soft_masks_dense(masks, size, padded, stride)
    assert soft.shape == want_soft.shape == (12, padded[0] // stride, padded[1] // stride)
    torch.testing.assert_close(soft, want_soft, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(centers, want_centers, atol=1e-3, rtol=1e-5, equal_nan=True)
    assert torch.isnan(centers[-1]).all() and soft[-1].abs().sum() == 0  # the empty mask
    if size[0] >= hw[0]:  # (a downscale may skip a tiny mask's rows: NaN in both)
        assert not torch.isnan(centers[:-1]).any() and (soft[:-1].sum((1, 2)) > 0).all()


def test_no_objects() -> None:
    soft, centers = soft_masks(torch.zeros(0, 20, 30, dtype=torch.bool), (23, 34), (32, 64), 4)
    assert soft.shape == (0, 8, 16) and centers.shape == (0, 2)
