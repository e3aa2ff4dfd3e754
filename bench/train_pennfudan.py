"""Accuracy benchmark on PennFudanPed: ours vs torchvision's Mask R-CNN, same budget.

Holds out 20% of /work/shared/data/PennFudanPed (``InstanceDataset.split(0.2, seed=0)``:
109 train / 27 val images), trains each method for ``--minutes`` of wall time with the same
thread count, then evaluates segm AP / AP50 on the held-out images (not counted in the budget).

* ours: ``instseg train --model NAME`` (default: the zoo's recommended CPU Mask R-CNN,
  its recipe and data-adaptive defaults, ``--augment default``); scored as trained and as
  "ours + TTA" (horizontal-flip TTA, one box refinement pass, mask threshold chosen on every
  third training image: ``bench/common.py``);
* reference: torchvision ``MaskRCNN`` on its ImageNet MobileNetV2 (FPN, frozen BatchNorm,
  3-level anchors 32-512), long side 512, AdamW 1e-3 + 50-step warm-up + cosine over the
  budget, batch 2, horizontal flip, clip 10: as a competent user fine-tunes it
  (``bench/baselines.py``);
* solov2: ``instseg train --model NAME`` (default: the recommended SOLOv2).

    python bench/train_pennfudan.py --out runs/pennfudan [--minutes 15] [--methods ours,reference]

Prints ``method | segm AP | AP50 | train min | steps`` and writes ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_common_arguments, add_reference_arguments, run_benchmark  # noqa: E402

METHODS = ("ours", "reference", "solov2")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(p, ",".join(METHODS), augment="default")
    add_reference_arguments(p)
    args = p.parse_args(argv)
    rows = run_benchmark("PennFudanPed", "PennFudanPed", args, METHODS, f1=False)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
