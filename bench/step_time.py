"""Training-step time of one zoo model on PennFudan under settings that change its cost
(e.g. frozen backbone stages), each variant over the same batches, in alternating rounds.

The model gets the PennFudan training split's CPU autoconfig, ImageNet weights (where it has
them) and the ``default`` augmentation with its training crop; 12 batches of two images, 2
rounds, the first two steps of each round untimed (20 timed steps per variant). Prints the
median step time of each variant.

    python bench/step_time.py maskrcnn_mnv2_fpn '{"trainable_layers": 6}' '{"trainable_layers": 3}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import load_split, set_threads  # noqa: E402

BATCHES, ROUNDS, UNTIMED = 12, 2, 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="zoo model name")
    p.add_argument("variants", nargs="+", help="JSON build_model overrides, one per variant")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from instseg.data.loader import TrainingDataset
    from instseg.data.transforms import PRESETS, build_transform
    from instseg.models.autoconfig import suggest_for_model, training_crop
    from instseg.models.zoo import MODELS, build_model

    set_threads(args.threads)
    train, _ = load_split("PennFudanPed")
    cfg = suggest_for_model(args.model, train, cpu=True)
    crop = training_crop(cfg, train)
    aug = dataclasses.replace(PRESETS["default"], crop_size=(crop, crop) if crop else None)
    data = TrainingDataset(train, transform=build_transform(aug), seed=0)
    batches = [[data[i] for i in (2 * k, 2 * k + 1)] for k in range(BATCHES)]
    pretrained = "imagenet" if MODELS[args.model].imagenet else "none"
    runs = []
    for text in args.variants:
        torch.manual_seed(0)
        model = build_model(args.model, 1, pretrained, **{**cfg, **json.loads(text)}).train()
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        runs.append((text, model, opt, []))
    for _ in range(ROUNDS):
        for _, model, opt, times in runs:
            for k, batch in enumerate(batches):
                t0 = time.perf_counter()
                loss = sum(model.losses([x for x, _ in batch], [t for _, t in batch]).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                if k >= UNTIMED:
                    times.append(time.perf_counter() - t0)
    for text, _, _, times in runs:
        print(f"{text}: {1000 * statistics.median(times):.0f} ms/step (batch 2, {len(times)} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
