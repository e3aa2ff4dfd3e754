"""The decoded-sample cache of TrainingDataset: exact round trip, same augmented items as
without it, the memory cap, fresh arrays on every access."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.data.cache import pack_sample, unpack_sample
from instseg.data.loader import TrainingDataset
from instseg.data.transforms import PRESETS, build_transform
from instseg.structures import Instances
from tests.engine import make_shapes_dataset


def _same(a: Instances, b: Instances) -> None:
    assert a.image_size == b.image_size
    for name in ("boxes", "labels", "scores", "iscrowd", "track_ids", "masks"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name


def test_pack_unpack_round_trip_hand_made() -> None:
    masks = np.zeros((4, 30, 40), dtype=bool)
    masks[0, 2:9, 3:7] = True
    masks[1, 10:30, 0:40] = True  # touches the image border
    masks[1, 12, 5] = False  # a hole inside the box
    masks[3, 29, 39] = True  # one pixel in the corner; mask 2 stays empty
    target = Instances.from_masks(
        masks.transpose(0, 2, 1).copy().transpose(0, 2, 1),  # column-major, like decoded RLE
        labels=[0, 1, 1, 2],
        iscrowd=[False, True, False, False],
        track_ids=[5, 6, 7, 8],
    )
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    packed = pack_sample(image, target)
    assert packed.nbytes < image.nbytes + masks.size // 4  # crops, not full masks
    got_image, got = unpack_sample(packed)
    assert np.array_equal(got_image, image)
    _same(got, target)
    got_image[:] = 0  # fresh arrays: the cache is never changed through what it returned
    assert got.masks is not None
    got.masks[1] = False
    again_image, again = unpack_sample(packed)
    assert np.array_equal(again_image, image)
    _same(again, target)


def test_pack_unpack_box_only_and_empty_targets() -> None:
    image = np.zeros((8, 9, 3), np.uint8)
    boxes = Instances((8, 9), boxes=torch.tensor([[1.0, 2.0, 5.0, 6.0]]), labels=[1])
    _same(unpack_sample(pack_sample(image, boxes))[1], boxes)
    empty = Instances.from_masks(np.zeros((0, 8, 9), bool))
    _same(unpack_sample(pack_sample(image, empty))[1], empty)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
def test_cached_items_equal_uncached_over_epochs(tmp_path: Path, cache_bytes: int) -> None:
    shapes = make_shapes_dataset(tmp_path, n_images=4)
    transform = build_transform(PRESETS["microscopy"])
    plain = TrainingDataset(shapes, build_transform(PRESETS["microscopy"]), seed=3, cache_bytes=0)
    cached = TrainingDataset(shapes, transform, seed=3, cache_bytes=cache_bytes)
    for epoch in range(2):  # epoch 0 fills the cache, epoch 1 reads it
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(shapes)):
            (ia, ta), (ib, tb) = plain[i], cached[i]
            assert torch.equal(ia, ib)
            _same(ta, tb)
    assert len(cached._cache) == (len(shapes) if cache_bytes else 0)
    assert 0 < cached._cached <= cache_bytes or cache_bytes == 0


def test_cache_stops_at_its_cap(tmp_path: Path) -> None:
    shapes = make_shapes_dataset(tmp_path, n_images=4)
    one = pack_sample(*shapes[0]).nbytes
    data = TrainingDataset(shapes, cache_bytes=int(one * 1.5))
    for i in range(len(shapes)):
        data[i]
    assert len(data._cache) == 1 and data._cached <= data.cache_bytes
