"""Data pipeline: decoding, collate, sampler order = f(seed, epoch), mid-epoch start, workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instseg.data.loader import (
    ResumableSampler,
    TrainingDataset,
    build_loader,
    collate,
    default_num_workers,
)
from instseg.data.transforms import build_transform
from tests.engine import make_shapes_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_images=5)


def test_item_and_collate(shapes) -> None:  # type: ignore[no-untyped-def]
    data = TrainingDataset(shapes)
    image, inst = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 80)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert inst.masks is not None and inst.masks.shape[1:] == (64, 80)
    assert len(inst) == len(shapes.images[0].annotations)
    images, targets = collate([data[0], data[1]])
    assert len(images) == len(targets) == 2


def test_sampler_order_is_function_of_seed_and_epoch() -> None:
    ds = list(range(10))
    a, b = ResumableSampler(ds, seed=1), ResumableSampler(ds, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == ds
    b.set_epoch(4)
    assert list(a) != list(b)
    b.set_epoch(3, start=4)
    assert list(b) == list(a)[4:] and len(b) == 6
    # two ranks: disjoint halves of the same permutation, equal lengths (padding)
    r0, r1 = ResumableSampler(list(range(9)), 2, 0), ResumableSampler(list(range(9)), 2, 1)
    assert len(list(r0)) == len(list(r1)) == 5 and set(r0) | set(r1) == set(range(9))


def test_augmentation_independent_of_workers_and_resume(shapes) -> None:  # type: ignore[no-untyped-def]
    data = TrainingDataset(shapes, transform=build_transform("lsj"), seed=5)
    data.set_epoch(2)
    ref = [data[i] for i in range(len(data))]
    torch.manual_seed(123)  # global RNG state must not matter
    again = data[3]
    assert torch.equal(again[0], ref[3][0]) and torch.equal(again[1].masks, ref[3][1].masks)  # type: ignore[arg-type]
    state = torch.get_rng_state()
    _ = data[1]
    assert torch.equal(state, torch.get_rng_state())  # sample RNG is forked, model RNG untouched

    loader = build_loader(data, batch_size=2, shuffle=True, seed=5, num_workers=1)
    loader.sampler.set_epoch(2, start=2)  # type: ignore[attr-defined]
    order = list(loader.sampler)
    batches = list(loader)
    assert len(batches) == 2  # 3 remaining samples, batch 2
    got = [img for imgs, _ in batches for img in imgs]
    for idx, img in zip(order, got):
        assert torch.equal(img, ref[idx][0])
    data.set_epoch(3)
    assert not torch.equal(data[0][0], ref[0][0]) or not torch.equal(data[1][0], ref[1][0])


def test_default_num_workers() -> None:
    assert 0 <= default_num_workers() <= 4
    assert default_num_workers(world_size=64) == 0
    assert default_num_workers(world_size=64, device="cpu") == 0
    assert 0 <= default_num_workers(device="cpu") <= default_num_workers(device="cuda:0") + 1


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_raises_one_line_data_error(tmp_path: Path, workers: int) -> None:
    from instseg.errors import DataError

    ds = make_shapes_dataset(tmp_path, n_images=2)
    ds.images[1].path.write_bytes(b"not a png")
    loader = build_loader(TrainingDataset(ds), batch_size=1, shuffle=False, num_workers=workers)
    with pytest.raises(DataError, match=r"img1.png: cannot read image") as err:
        list(loader)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
