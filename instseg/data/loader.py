"""Torch data pipeline: a Dataset over :class:`InstanceDataset`, collate, resumable sampler.

- :class:`TrainingDataset` decodes image + masks (in the loader's workers) and applies the
  augmentation with torch's RNG seeded from ``(seed, epoch, index)``, so a sample's
  augmentation does not depend on the worker, the worker count, or where training resumed.
  Loading in the main process (the CPU default), it keeps decoded samples in memory
  (:mod:`instseg.data.cache`, masks cropped to their boxes, up to ``cache_bytes``: 2 GiB,
  or ``INSTSEG_CACHE_MB`` from the environment).
- :class:`ResumableSampler` is a ``DistributedSampler`` (one rank or many) whose order is a
  function of ``(seed, epoch)`` and that can start mid-epoch (exact ``--resume``).
- :func:`collate` gives ``(list[Tensor (3, H, W) float32 in [0, 1]], list[Instances])``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from instseg.data.cache import PackedSample, default_cache_bytes, pack_sample, unpack_sample
from instseg.data.dataset import InstanceDataset
from instseg.errors import DataError
from instseg.structures import Instances

Transform = Callable[[torch.Tensor, Instances], tuple[torch.Tensor, Instances]]
Batch = tuple[list[torch.Tensor], list[Instances]]

__all__ = [
    "TrainingDataset",
    "ResumableSampler",
    "build_loader",
    "collate",
    "default_num_workers",
    "sample_seed",
]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` in ``epoch``."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class WorkerDataError(DataError):
    """A :class:`DataError` raised in a loader worker, still one line in the main process.

    torch re-raises a worker's exception as ``type(exc)(formatted traceback)``; this class
    accepts that single argument and keeps the original ``file: item: message`` line.
    """

    def __init__(self, *args: Any) -> None:
        if len(args) == 1:
            lines = [line for line in str(args[0]).splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            super().__init__(None, None, last.split(": ", 1)[-1] if "Error: " in last else last)
        else:
            super().__init__(*args)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> uint8 tensor ``(3, H, W)``."""
    return (
        torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).contiguous()
    )


class TrainingDataset(Dataset[tuple[torch.Tensor, Instances]]):
    """Item ``i`` -> ``(image float32 (3, H, W) in [0, 1] RGB, Instances)`` (augmented).

    Decoded samples are kept in memory until they hold ``cache_bytes`` (0: no cache; default
    :func:`~instseg.data.cache.default_cache_bytes`); only outside loader workers, which are
    recreated every epoch.
    """

    def __init__(
        self,
        dataset: InstanceDataset,
        transform: Transform | None = None,
        seed: int = 0,
        cache_bytes: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.cache_bytes = default_cache_bytes() if cache_bytes is None else int(cache_bytes)
        self._cache: dict[int, PackedSample] = {}
        self._cached = 0  # bytes held

    def set_epoch(self, epoch: int) -> None:
        """Call before creating each epoch's iterator (workers copy the dataset then)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> tuple[np.ndarray, Instances]:
        packed = self._cache.get(index)
        if packed is not None:
            return unpack_sample(packed)
        try:
            array, target = self.dataset[index]
        except DataError as exc:  # one clear line even when raised in a worker process
            raise WorkerDataError(exc.file, exc.item, exc.message) from None
        if self._cached < self.cache_bytes and torch.utils.data.get_worker_info() is None:
            packed = pack_sample(array, target)
            if self._cached + packed.nbytes <= self.cache_bytes:
                self._cache[index] = packed
                self._cached += packed.nbytes
        return array, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Instances]:
        array, target = self._load(index)
        image = image_to_tensor(array)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, self.epoch, index))
                image, target = self.transform(image, target)
        return image.to(torch.float32).div_(255.0), target


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can skip the first samples of an epoch (for resume).

    With ``drop_last=False`` (default) every rank gets ``ceil(n / world_size)`` indices (the
    shuffled list is padded by repeating), so all ranks run the same number of steps.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:  # type: ignore[override]
        """Epoch ``epoch`` (order = f(seed, epoch)), beginning at this rank's ``start``-th sample."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def collate(batch: list[tuple[torch.Tensor, Instances]]) -> Batch:
    """``[(image, Instances), ...]`` -> ``(list of images, list of Instances)`` (sizes may differ)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def default_num_workers(world_size: int = 1, device: str = "cuda") -> int:
    """Loader workers per process.

    GPU training: one core is left to the training process (2 cores -> 1, at most 4).
    CPU training: the model's threads use every core, and a worker competing with them
    costs more than loading in the main process (2 cores: 80 nuclei steps took 68 s with one
    worker, 62 s with none), so 0 up to 4 cores per process, then one per 8 cores (<= 4).
    """
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    per_process = cores // max(1, world_size)
    if str(device).split(":")[0] == "cpu":
        return 0 if per_process <= 4 else min(4, per_process // 8)
    return max(0, min(4, per_process - 1))


def build_loader(
    data: TrainingDataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: str = "cuda",
) -> DataLoader:
    """DataLoader with a :class:`ResumableSampler` (set its epoch/start before iterating).

    The loader has its own ``torch.Generator`` so creating an iterator never draws from the
    global RNG (which the model's own sampling uses and the checkpoint restores).
    """
    workers = default_num_workers(world_size, device) if num_workers is None else num_workers
    sampler = ResumableSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
