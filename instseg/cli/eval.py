"""Evaluate COCO results against ground truth: the 12 COCO stats (identical to pycocotools).

Also a per-class AP table (--per-class), PR curves and a per-class AP chart as PNG
(--plots DIR), the stats as JSON (--json OUT). --matching (one-to-one matching at --iou) and
--analysis (error analysis) and --tracking (tracked sequences: CTC folders, label-image
folders or MOTS files) are served by their own modules. Loads numpy and
pycocotools.mask only (matplotlib for --plots).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from instseg.cli.common import add_format_arguments, add_inference_arguments
from instseg.cli.eval_matching import add_matching_arguments
from instseg.cli.eval_tracking import add_tracking_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gt", nargs="?", metavar="GT.json", help="COCO ground truth")
    p.add_argument("pred", nargs="?", metavar="PRED.json", help="COCO results (list of detections)")
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm", help="mask or box IoU (default segm)")
    p.add_argument("--per-class", action="store_true", help="also print a per-class AP table")
    p.add_argument("--plots", metavar="DIR", default=None, help="write PR curves and a per-class AP chart (PNG)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the stats (and per-class stats) as JSON")
    p.add_argument("--matching", action="store_true", help="one-to-one matching report (precision/recall/F1/PQ)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold for --matching (default 0.5)")
    p.add_argument("--analysis", action="store_true", help="error / size / occlusion analysis (TIDE-style)")
    p.add_argument("--model", metavar="DIR", default=None, help="predict with this checkpoint, training folder or shipped model (nuclei), then evaluate on --data")
    p.add_argument("--data", metavar="GT", default=None, help="dataset (any format) to predict and evaluate with --model")
    add_format_arguments(p)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass with --model")
    add_inference_arguments(p)
    add_matching_arguments(p)
    add_tracking_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.model:
        if not args.data:
            print("instseg eval: error: --model needs --data GT", file=sys.stderr)
            return 2
        return run_model_eval(args)
    if args.tracking:
        from instseg.cli.eval_tracking import run_tracking

        return run_tracking(args)
    if args.matching:
        from instseg.cli.eval_matching import run_matching

        return run_matching(args)
    if args.analysis:
        from instseg.cli.eval_matching import run_analysis_cli

        return run_analysis_cli(args)
    if not args.gt or not args.pred:
        print("instseg eval: error: GT.json and PRED.json are required", file=sys.stderr)
        return 2
    from instseg.evaluation.coco_eval import evaluate
    from instseg.evaluation.cocoeval_load import load_gt

    gt, _ = load_gt(args.gt)
    res = evaluate(gt, args.pred, args.iou_type)
    print(res)
    names = {c.get("id"): str(c.get("name", c.get("id"))) for c in gt["categories"] if isinstance(c, dict)}
    if args.per_class:
        print()
        print(res.format_table(names))
    if args.json:
        out = {**res.summary(), "iou_type": args.iou_type,
               "per_class": {str(k): v for k, v in res.per_class().items()}}
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.plots:
        from instseg.evaluation.plots import save_plots

        for path in save_plots(res, args.plots, names):
            print(f"wrote {path}")
    return 0


def run_model_eval(args: argparse.Namespace) -> int:
    """``instseg eval --model M --data GT [--json OUT]``: predict the dataset with the model
    (and its inference options), print the segm and bbox summaries, write them as JSON."""
    from instseg.cli.common import inference_from_args
    from instseg.data.formats import load_dataset
    from instseg.device import resolve_device
    from instseg.engine.evaluate import check_categories, coco_summary, predict_dataset
    from instseg.inference.loading import load_model

    device = resolve_device(args.device)
    model, meta = load_model(args.model, device=device)
    runner, _ = inference_from_args(model, args)
    dataset = load_dataset(args.data, format=args.format, images_dir=args.images)
    check_categories(meta, dataset, args.data)
    results = predict_dataset(
        runner, dataset, batch_size=args.batch_size or 1, device=device,
        progress=sys.stderr.isatty(),
    )  # fmt: skip
    gt = dataset.to_coco()
    summary = {t: coco_summary(gt, results, t) for t in ("segm", "bbox")}
    for t, s in summary.items():
        shown = "  ".join(f"{k} {s[k]:.4f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
        print(f"{t}: {shown}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            **summary["segm"],  # the same top-level keys as `instseg eval GT PRED`
            "iou_type": "segm", "model": meta.get("path"), "data": str(args.data),
            **summary, "num_detections": len(results),
        }  # fmt: skip
        out.write_text(json.dumps(report, indent=1))
    return 0
