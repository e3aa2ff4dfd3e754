"""Train, score and export the shipped nuclei model (instseg/weights/nuclei.pt).

Same split as ``bench/train_nuclei.py`` (dsb2018_stage1_subset, ``split(0.2, seed=0)``: 87
train / 22 val images); trains with ``instseg train`` (``--augment microscopy``, the
data-adaptive defaults, random crops), scores ``last.pt`` on the 22 held-out images (segm AP,
AP50, F1 at IoU 0.5 of detections scoring >= 0.5; no checkpoint selection on them), and
writes ``--out``/nuclei.pt: fp16 weights + config + the figures + ``object_size`` (stored by
training) and ``score_cutoff`` (F1@0.5-best on the 22 held-out images, the run's validation
split; ``instseg.engine.learnt``), what ``--model nuclei`` loads once copied to
``instseg/weights/``. ``scripts/store_nuclei_settings.py`` added the last two to the current
file without retraining.

    python scripts/train_nuclei_model.py --out runs/nuclei_model --minutes 60
    python scripts/train_nuclei_model.py --out runs/nuclei_model --minutes 7 --device cuda \\
        --batch-size 8 --lr 2e-3 --workers 4
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import load_split, predict_checkpoint, score, train_ours  # noqa: E402

SHIPPED_MODEL = "maskrcnn_mnv3_fpn"  # 6.1 M parameters: 12 MB in fp16 (the limit is 25 MB)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=SHIPPED_MODEL, help="zoo name")
    p.add_argument("--minutes", type=float, default=60.0, help="training budget")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--crop", type=int, default=None, help="`instseg train --crop`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="dataset folder (default: the shared copy)")
    p.add_argument("--max-val", type=int, default=None, help="score the first N val images")
    args = p.parse_args(argv)

    import torch

    from instseg.engine.checkpoint import export_model
    from instseg.engine.learnt import choose_score_cutoff

    train_set, val_set = load_split("dsb2018_stage1_subset", args.data)
    if args.max_val:
        val_set = val_set.subset(list(range(min(args.max_val, len(val_set)))))
    extra = ["--device", args.device]
    for flag in ("batch_size", "lr", "workers", "crop"):
        if getattr(args, flag) is not None:
            extra += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    out = Path(args.out)
    torch.manual_seed(args.seed)
    info = train_ours(train_set, args.model, out, args.minutes, args.seed, "microscopy", extra)
    t0 = time.perf_counter()
    results = predict_checkpoint(out / "last.pt", val_set, device=args.device)
    figures = score(val_set, results, f1=True)
    cutoff, f1 = choose_score_cutoff(val_set.to_coco(), results)
    summary = {
        "model": args.model,
        "data": "dsb2018_stage1_subset (CC0), split(0.2, seed=0)",
        "n_train": len(train_set),
        "n_val": len(val_set),
        "steps": info["steps"],
        "train_min": round(info["train_s"] / 60, 2),
        "eval_s": round(time.perf_counter() - t0, 1),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "command": "python scripts/train_nuclei_model.py " + shlex.join(sys.argv[1:]),
        "train_command": info["command"],
        "val": {k: round(float(v), 4) for k, v in figures.items()},
        "score_cutoff_f1": {f"{c:g}": round(v, 4) for c, v in f1.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    extra = {"card": summary, "score_cutoff": cutoff}
    path = export_model(out / "last.pt", out / "nuclei.pt", half=True, extra=extra)
    size_mb = path.stat().st_size / 2**20
    print(json.dumps(summary, indent=1))
    print(f"wrote {path} ({size_mb:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
