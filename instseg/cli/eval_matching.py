"""``instseg eval --matching GT PRED`` and ``instseg eval GT PRED --analysis`` (argparse only here).

The eval command (``instseg/cli/eval.py``) defines ``gt``, ``pred``, ``--matching``, ``--iou``
and ``--json``; it calls :func:`add_matching_arguments` for the options below and dispatches to
:func:`run_matching` / :func:`run_analysis_cli`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _has_option(parser: argparse.ArgumentParser, option: str) -> bool:
    return option in parser._option_string_actions


def add_matching_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``--matching`` and ``--analysis``; options the parser already has are kept."""
    group = parser.add_argument_group("matching metrics (--matching) and error analysis (--analysis)")
    if not _has_option(parser, "--score-threshold"):
        group.add_argument(
            "--score-threshold",
            type=float,
            default=0.5,
            metavar="S",
            help="--matching with COCO predictions: drop predictions scoring below S (default 0.5; "
            "matching counts have no ranking, so low-confidence detections would all be false positives)",
        )
    if not _has_option(parser, "--class-agnostic"):
        group.add_argument(
            "--class-agnostic",
            action="store_true",
            help="--matching with COCO files: let a prediction match GT of any category",
        )
    if not _has_option(parser, "--plots"):
        group.add_argument("--plots", default=None, metavar="DIR", help="--analysis: write PNG plots to DIR")
    if not _has_option(parser, "--iou-type"):
        group.add_argument(
            "--iou-type", choices=("segm", "bbox"), default="segm", help="--analysis: mask or box IoU (default segm)"
        )


def _write_json(path: str | Path, data: Any) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, out)


def run_matching(args: argparse.Namespace) -> int:
    """Print the matching table (IoU 0.1..0.9 and ``args.iou``); write JSON to ``args.json``."""
    from instseg.evaluation.matching_dataset import evaluate_matching

    if not getattr(args, "gt", None) or not getattr(args, "pred", None):
        print("instseg eval: error: --matching needs GT and PRED", file=sys.stderr)
        return 2
    iou = float(getattr(args, "iou", None) or 0.5)
    if not 0.0 < iou <= 1.0:
        print(f"instseg eval: error: --iou must be in (0, 1], got {iou}", file=sys.stderr)
        return 2
    report = evaluate_matching(
        args.gt,
        args.pred,
        iou_threshold=iou,
        score_threshold=float(getattr(args, "score_threshold", 0.5)),
        class_aware=not getattr(args, "class_agnostic", False),
    )
    print(report.table(chosen=iou))
    s = report.at(iou)
    print(
        f"IoU {iou:g}: precision {s.precision:.4f}  recall {s.recall:.4f}  F1 {s.f1:.4f}  "
        f"TP {s.tp}  FP {s.fp}  FN {s.fn}  ({len(report.per_image)} images)"
    )
    if getattr(args, "json", None):
        _write_json(args.json, report.to_dict(iou))
    return 0


def run_analysis_cli(args: argparse.Namespace) -> int:
    """``--analysis``: AP by size and occlusion, TIDE-style error breakdown; table, plots, JSON."""
    from instseg.evaluation.analysis import analyze

    if not getattr(args, "gt", None) or not getattr(args, "pred", None):
        print("instseg eval: error: --analysis needs GT.json and PRED.json", file=sys.stderr)
        return 2
    result = analyze(args.gt, args.pred, iou_type=getattr(args, "iou_type", "segm") or "segm")
    print(result.table())
    plots = getattr(args, "plots", None)
    if plots:
        for p in result.plot(plots):
            print(f"wrote {p}")
    if getattr(args, "json", None):
        _write_json(args.json, result.to_dict())
    return 0
