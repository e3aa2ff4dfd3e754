"""Accuracy benchmark on DSB 2018 nuclei: ours vs torchvision's Mask R-CNN vs a classical
watershed, same budget.

Holds out 20% of /work/shared/data/dsb2018_stage1_subset (``InstanceDataset.split(0.2,
seed=0)``: 87 train / 22 val images), trains each method for ``--minutes`` of wall time with
the same thread count, then evaluates segm AP / AP50 and F1 at IoU 0.5 (detections scoring
>= 0.5) on the held-out images (evaluation is not counted in the budget).

* ours: ``instseg train --model maskrcnn_r18_fpn --augment microscopy`` (recommended CPU
  Mask R-CNN, its recipe, data-adaptive input scale / anchors / detection budget); scored
  as trained and as "ours + TTA" (h+v flip TTA, one box refinement pass, mask threshold
  chosen on every third training image: ``bench/common.py``);
* reference: torchvision ``MaskRCNN`` on its ImageNet MobileNetV2 (FPN, frozen BatchNorm,
  3-level anchors 32-512), long side 512, AdamW 1e-3 + 50-step warm-up + cosine over the
  budget, batch 2, horizontal flip, clip 10: as a competent user fine-tunes it
  (``bench/baselines.py``);
* watershed: Otsu + distance-transform watershed, no training (``bench/baselines.py``);
* solov2: ``instseg train --model solov2_r18_fpn --augment microscopy``.

    python bench/train_nuclei.py --out runs/nuclei [--minutes 15] [--methods ours,reference,watershed]

Prints ``method | segm AP | AP50 | F1@0.5 | train min | steps``; writes ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_common_arguments, add_reference_arguments, run_benchmark  # noqa: E402

METHODS = ("ours", "reference", "watershed", "solov2")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(p, ",".join(METHODS), augment="microscopy")
    add_reference_arguments(p)
    args = p.parse_args(argv)
    rows = run_benchmark("DSB2018 nuclei", "dsb2018_stage1_subset", args, METHODS, f1=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
