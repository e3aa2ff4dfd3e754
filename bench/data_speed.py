"""Training-data loading speed: ``TrainingDataset`` with its decoded-sample cache vs without.

What one CPU training step spends before the model runs: read the image, decode every mask
(RLE) of the image, crop / flip / scale / colour-jitter (``--augment``, random ``--crop``
px windows as ``instseg train`` uses for fixed-scale models). Without the cache every epoch
decodes everything again; with it (the default when loading in the main process) only the
first epoch does. ``--epochs`` epochs over the training split of the DSB nuclei subset
(``split(0.2, seed=0)``), one item at a time in this process, ``torch.set_num_threads``
(``--threads``); the same items in the same order for both.

    python bench/data_speed.py [--epochs 3] [--crop 445] [--augment microscopy]

Prints ms per item (all epochs, and the epochs after the first), the ratio, and the bytes
the cache holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import load_split  # noqa: E402
from instseg.data.cache import DEFAULT_CACHE_BYTES  # noqa: E402
from instseg.data.loader import TrainingDataset  # noqa: E402
from instseg.data.transforms import PRESETS, build_transform  # noqa: E402


def run(data: TrainingDataset, epochs: int) -> list[float]:
    """Seconds per epoch, every item once per epoch in index order."""
    out = []
    for epoch in range(epochs):
        data.set_epoch(epoch)
        start = time.perf_counter()
        for i in range(len(data)):
            data[i]
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="dsb2018_stage1_subset")
    p.add_argument("--data", default=None, help="dataset path (default: the shared data)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--crop", type=int, default=445, help="random crop side (0: none)")
    p.add_argument("--augment", default="microscopy", choices=sorted(PRESETS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch fills the cache)")
    torch.set_num_threads(args.threads)
    train, _ = load_split(args.dataset, args.data)
    crop = (args.crop, args.crop) if args.crop else None
    aug = dataclasses.replace(PRESETS[args.augment], crop_size=crop)
    rows = {}
    for name, cap in (("no cache", 0), ("cache", DEFAULT_CACHE_BYTES)):
        data = TrainingDataset(train, build_transform(aug), seed=0, cache_bytes=cap)
        rows[name] = (run(data, args.epochs), data._cached)
    n = len(train)
    print(f"{args.dataset}: {n} training images, {args.epochs} epochs, crop {args.crop}, "
          f"--augment {args.augment}, {args.threads} threads")  # fmt: skip
    print("| loading | ms/item, all epochs | ms/item, epochs 2.. | cache MB |")
    print("|---|---|---|---|")
    for name, (secs, held) in rows.items():
        print(f"| {name} | {1000 * sum(secs) / (n * len(secs)):.1f} | "
              f"{1000 * sum(secs[1:]) / (n * (len(secs) - 1)):.1f} | {held / 2**20:.1f} |")  # fmt: skip
    base, fast = rows["no cache"][0], rows["cache"][0]
    print(f"speed-up, epochs 2..: {sum(base[1:]) / sum(fast[1:]):.2f}x; "
          f"all epochs: {sum(base) / sum(fast):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
