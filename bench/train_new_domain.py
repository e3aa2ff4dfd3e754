"""New-domain checks of the defaults: data that chose none of instseg's settings.

* ``coco128-person``: coco128-seg restricted to the person class (the other 79 classes'
  annotations dropped, every image kept as it is); the first 100 images (file order) train,
  the other 28 are held out and reported. Methods as in ``train_pennfudan.py``: ours
  (``instseg train`` with the recommended Mask R-CNN and nothing else set), the torchvision
  reference, solov2 (the recommended SOLOv2)::

      python bench/train_new_domain.py coco128-person --out runs/coco_person [--minutes 15]

* ``ctc-finetune``: a user's own cells, fine-tuned from the shipped ``nuclei`` model. The Cell
  Tracking Challenge sequence Fluo-N2DH-SIM+/01 (simulated HL60 nuclei, 16-bit) with its
  SEG masks: frames 0-39 train, frames 45-64 are reported (40-44 left out: near neighbours
  of both). Rows: the shipped model as it is ("before"), and after ``instseg train --init
  nuclei --time-budget MIN --augment microscopy`` on the training frames ("after"; the
  input size refitted to these cells, as ``--init`` does; ``--ours-args`` adds flags)::

      python bench/train_new_domain.py ctc-finetune --out runs/ctc --minutes 5

Prints the same table as the other accuracy benchmarks and writes ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    add_common_arguments,
    add_reference_arguments,
    data_root,
    finish,
    predict_checkpoint,
    run_benchmark,
    score,
    set_threads,
    timed,
    train_ours,
)
from instseg.data.dataset import InstanceDataset  # noqa: E402

METHODS = ("ours", "reference", "solov2")
PERSON_TRAIN = 100  # first images of coco128-seg that train
CTC_SEQUENCE = "ctc_tracking/Fluo-N2DH-SIM+"
CTC_TRAIN, CTC_REPORT = range(0, 40), range(45, 65)


def one_class(ds: InstanceDataset, label: int, name: str) -> InstanceDataset:
    """``ds`` with only the annotations of class ``label``, renamed ``name`` (every image kept)."""
    import dataclasses

    cat = ds.categories[label]
    images = [
        dataclasses.replace(r, annotations=[a for a in r.annotations if a.category_id == cat.id])
        for r in ds.images
    ]
    return InstanceDataset(images, [dataclasses.replace(cat, name=name)], ds.source)


def coco128_person(root: Path) -> tuple[InstanceDataset, InstanceDataset, str]:
    """``(first 100 images, the other 28, how)`` of coco128-seg, person only (YOLO class 0)."""
    import warnings

    from instseg.data.formats import load_dataset

    with warnings.catch_warnings():  # two label files of images the copy does not hold
        warnings.simplefilter("ignore")
        ds = one_class(load_dataset(root / "coco128-seg"), 0, "person")
    n = len(ds)
    how = f"coco128-seg person only: first {PERSON_TRAIN} images train, the other {n - PERSON_TRAIN} report"
    return ds.subset(list(range(PERSON_TRAIN))), ds.subset(list(range(PERSON_TRAIN, n))), how


def ctc_frames(root: Path, frames: range) -> InstanceDataset:
    """Frames of the CTC sequence with their SEG label images as instance masks."""
    from instseg.data.dataset import Category
    from instseg.data.io import read_label_image
    from instseg.data.readers_common import DatasetBuilder, checked_size
    from instseg.data.readers_masks import label_image_rles

    seq = root / CTC_SEQUENCE
    b = DatasetBuilder(seq, skip_invalid=False)
    for t in frames:
        image = seq / "01" / f"t{t:03d}.tif"
        h, w = checked_size(image, False)
        rec = b.add_image(image, seq, h, w)
        for rle in label_image_rles(read_label_image(seq / "01_GT" / "SEG" / f"man_seg{t:03d}.tif")):
            b.add_annotation(rec, 1, rle)
    return b.finish([Category(1, "nucleus")])


def ctc_finetune(args: argparse.Namespace) -> int:
    """The ``ctc-finetune`` check: the shipped model before / after a short fine-tune."""
    set_threads(args.threads)
    root = data_root()
    train_set, report = ctc_frames(root, CTC_TRAIN), ctc_frames(root, CTC_REPORT)
    if args.max_val:
        report = report.subset(list(range(min(args.max_val, len(report)))))
    out = Path(args.out)
    rows = []
    results, eval_s = timed(lambda: predict_checkpoint(Path("nuclei"), report))
    rows.append({"method": "before: shipped nuclei model", **score(report, results, f1=True),
                 "eval_s": eval_s, "train_s": None, "steps": None})  # fmt: skip
    print(f"== {rows[-1]['method']}: AP {rows[-1]['AP']:.3f}", flush=True)
    extra = ["--init", "nuclei", *shlex.split(args.ours_args)]
    info = train_ours(train_set, "", out / "finetune", args.minutes, args.seed, "microscopy", extra)
    results, eval_s = timed(lambda: predict_checkpoint(Path(info["checkpoint"]), report))
    rows.append({"method": f"after: --init nuclei, {args.minutes:g} min", **info,
                 **score(report, results, f1=True), "eval_s": eval_s})  # fmt: skip
    print(f"== {rows[-1]['method']}: AP {rows[-1]['AP']:.3f}", flush=True)
    meta = {"dataset": CTC_SEQUENCE + "/01", "n_train": len(train_set), "n_val": len(report),
            "split": "frames 0-39 train, 45-64 report", "minutes": args.minutes,
            "threads": args.threads}  # fmt: skip
    finish(out, "train_new_domain.py ctc-finetune", rows, True, meta)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("check", choices=("coco128-person", "ctc-finetune"))
    add_common_arguments(p, ",".join(METHODS), augment="default")
    add_reference_arguments(p)
    args = p.parse_args(argv)
    if args.check == "ctc-finetune":
        return ctc_finetune(args)
    split = coco128_person(Path(args.data) if args.data else data_root())
    rows = run_benchmark("train_new_domain.py coco128-person", "coco128-person", args, METHODS,
                         f1=False, split=split)  # fmt: skip
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
