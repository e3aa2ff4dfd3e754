"""Export a trained model to ONNX, pre- and post-processing inside the graph.

    instseg export MODEL -o model.onnx [--opset 17] [--score-threshold T]

MODEL is a checkpoint file, a training folder or a shipped model name (``nuclei``). The file
takes one uint8 RGB image (H, W, 3) of any size (SOLOv2 models with fixed-size cells: the size
of ``--size``) and returns masks (N, H, W), boxes (N, 4) xyxy, labels (N,) and scores (N,);
class names, thresholds, input scale and the instseg version are in its metadata, so
``instseg predict SOURCE --model model.onnx --out DIR`` needs nothing else.
"""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    """``HxW`` or ``N`` -> ``(H, W)``."""
    h, _, w = text.lower().partition("x")
    try:
        out = (int(h), int(w or h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}") from None
    if min(out) < 32:
        raise argparse.ArgumentTypeError(f"sizes must be >= 32 px, got {text!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint file, training folder or shipped name")
    p.add_argument("-o", "--out", required=True, metavar="FILE.onnx", help="file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 16-20 (default 17)")
    p.add_argument(
        "--size", type=_size, default=None, metavar="HxW",
        help="example image size (the only size of fixed-size SOLOv2 files; default 384x512, "
        "or their cell canvas)",
    )  # fmt: skip
    p.add_argument("--score-threshold", type=float, default=None, help="default: the model's")
    p.add_argument("--mask-threshold", type=float, default=None, help="default: the model's")
    p.add_argument("--max-detections", type=int, default=None, help="default: the model's")


def run(args: argparse.Namespace) -> int:
    import sys

    from instseg.export import export_onnx

    if not str(args.out).lower().endswith(".onnx"):
        print("instseg export: error: --out must end in .onnx", file=sys.stderr)
        return 2
    report = export_onnx(
        args.model, args.out, opset=args.opset, size=args.size,
        score_threshold=args.score_threshold, mask_threshold=args.mask_threshold,
        max_detections=args.max_detections,
    )  # fmt: skip
    print(report.summary())
    return 0
