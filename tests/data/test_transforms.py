"""Augmentation: masks and boxes move with the image; boxes recomputed; empties dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.data.transforms import (
    PRESETS,
    AugmentConfig,
    TrainTransform,
    build_transform,
)
from instseg.masks import masks_to_boxes
from instseg.structures import Instances


def _sample(h: int = 40, w: int = 60) -> tuple[torch.Tensor, Instances]:
    masks = np.zeros((3, h, w), bool)
    masks[0, 5:15, 3:20] = True
    masks[1, 20:38, 40:58] = True
    masks[2, 0:4, 0:4] = True  # small, in the corner: cropped away sometimes
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    for i, m in enumerate(masks):
        image[:, torch.from_numpy(m)] = 50 * (i + 1)
    inst = Instances.from_masks(
        masks, labels=[0, 1, 1], iscrowd=[False, True, False], track_ids=[7, 8, 9]
    )
    return image, inst


def test_mask_boxes_of_tensors_match_numpy() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((5, 17, 23)) > 0.97
    m[3] = False
    boxes = masks_to_boxes(torch.from_numpy(m))
    assert isinstance(boxes, torch.Tensor) and boxes.dtype == torch.float32
    np.testing.assert_array_equal(boxes.numpy(), masks_to_boxes(m))
    u8 = torch.from_numpy(m.astype(np.uint8))  # 0/1 masks as the transforms may hold them
    np.testing.assert_array_equal(masks_to_boxes(u8).numpy(), masks_to_boxes(m))
    assert masks_to_boxes(torch.zeros((0, 4, 4), dtype=torch.bool)).shape == (0, 4)


def test_hflip_moves_masks_and_boxes_with_the_image() -> None:
    image, inst = _sample()
    t = TrainTransform(
        AugmentConfig(hflip=True, scale_range=(1, 1), brightness=0, contrast=0, saturation=0)
    )
    flipped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        img2, out = t(image, inst)
        assert out.masks is not None and len(out) == 3
        for i in range(3):  # pixel values under each mask are unchanged: masks followed the image
            assert torch.all(img2[0][out.masks[i]] == 50 * (i + 1))
        np.testing.assert_array_equal(out.boxes.numpy(), masks_to_boxes(out.masks.numpy()))
        flipped += int(not torch.equal(out.masks, inst.masks))
        assert out.labels.tolist() == [0, 1, 1] and out.iscrowd.tolist() == [False, True, False]
    assert 0 < flipped < 8


def test_scale_and_crop_keep_alignment_and_drop_empty_instances() -> None:
    image, inst = _sample()
    t = TrainTransform(
        AugmentConfig(hflip=True, vflip=True, scale_range=(0.5, 2.5), crop_size=(30, 30))
    )
    dropped = 0
    for seed in range(20):
        torch.manual_seed(seed)
        img2, out = t(image, inst)
        h, w = img2.shape[-2:]
        assert h <= 30 and w <= 30 and out.image_size == (h, w)
        assert out.masks is not None and out.masks.shape[1:] == (h, w)
        assert bool(out.masks.flatten(1).any(1).all())  # no empty instance survives
        np.testing.assert_array_equal(out.boxes.numpy(), masks_to_boxes(out.masks.numpy()))
        assert len(out.track_ids) == len(out) == len(out.labels) == len(out.iscrowd)  # type: ignore[arg-type]
        # ids stay attached to the right instance (labels of track 7 == 0, of 8/9 == 1)
        for tid, lab in zip(out.track_ids.tolist(), out.labels.tolist()):  # type: ignore[union-attr]
            assert lab == (0 if tid == 7 else 1)
        dropped += 3 - len(out)
    assert dropped > 0


def test_same_seed_same_augmentation_and_presets() -> None:
    image, inst = _sample()
    t = build_transform("lsj")
    assert t is not None and build_transform("none") is None
    torch.manual_seed(3)
    a, ia = t(image, inst)
    torch.manual_seed(3)
    b, ib = t(image, inst)
    assert torch.equal(a, b) and torch.equal(ia.masks, ib.masks)  # type: ignore[arg-type]
    assert set(PRESETS) >= {"none", "default", "lsj", "microscopy"}
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_transform("nope")


def test_empty_instances_pass_through() -> None:
    image = torch.zeros((3, 20, 30), dtype=torch.uint8)
    inst = Instances.from_masks(np.zeros((0, 20, 30), bool))
    torch.manual_seed(0)
    img2, out = TrainTransform(AugmentConfig(scale_range=(1.5, 1.5)))(image, inst)
    assert len(out) == 0 and out.masks is not None and out.masks.shape[1:] == img2.shape[-2:]


def test_crop_size_crops_the_source_window_then_scales() -> None:
    image, inst = _sample(40, 60)
    cfg = AugmentConfig(
        hflip=False, scale_range=(0.5, 2.0), crop_size=(32, 48), brightness=0, contrast=0,
        saturation=0,
    )  # fmt: skip
    t = TrainTransform(cfg)
    sizes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        img2, out = t(image, inst)
        h, w = img2.shape[-2:]
        assert h <= 32 and w <= 48  # never above the crop, whatever the scale
        sizes.add((h, w))
        assert out.image_size == (h, w) and out.masks is not None
        assert out.masks.shape[1:] == (h, w) and bool(out.masks.flatten(1).any(1).all())
        np.testing.assert_array_equal(out.boxes.numpy(), masks_to_boxes(out.masks.numpy()))
        # every instance's pixels are mostly its own colour (nearest masks vs antialiased image)
        for m in out.masks[out.masks.flatten(1).sum(1) >= 20]:  # tiny ones: all border
            values = img2[0][m].float()
            assert ((values - values.median()).abs() < 1).float().mean() > 0.5
    assert len(sizes) > 1  # at small scales the whole image is smaller than the crop


def test_crop_keeps_labels_crowd_and_track_ids_with_their_masks() -> None:
    """Instances the crop window misses are dropped before resizing; the survivors keep their
    own label / crowd flag / track id (colour i+1 painted under instance i)."""
    image, inst = _sample(40, 60)
    cfg = AugmentConfig(
        hflip=True, vflip=True, scale_range=(0.8, 1.5), crop_size=(16, 16), brightness=0,
        contrast=0, saturation=0,
    )  # fmt: skip
    t = TrainTransform(cfg)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        img2, out = t(image, inst)
        assert out.masks is not None and out.track_ids is not None and out.iscrowd is not None
        for m, tid, crowd, lab in zip(out.masks, out.track_ids, out.iscrowd, out.labels):
            i = int(tid) - 7
            seen.add(i)
            assert (int(lab), bool(crowd)) == ([0, 1, 1][i], [False, True, False][i])
            if int(m.sum()) >= 20:  # tiny ones are all border (antialiased image)
                values = img2[0][m].float()
                assert ((values - 50 * (i + 1)).abs() < 1).float().mean() > 0.5
    assert {0, 1} <= seen
