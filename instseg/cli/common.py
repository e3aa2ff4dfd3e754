"""Argument helpers shared by commands (argparse only at import)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

#: same as instseg.data.formats.FORMATS (kept literal so the CLI imports no numpy at startup)
DATASET_FORMATS = ("coco", "label-png", "label-image", "instance-pngs", "yolo", "via")


def add_format_arguments(p: argparse.ArgumentParser) -> None:
    """``[--format F] [--images DIR]``: how to read a dataset given in any format."""
    p.add_argument(
        "--format", "-f", default=None, choices=DATASET_FORMATS, help="dataset format (detected when omitted)"
    )
    p.add_argument(
        "--images", default=None, metavar="DIR",
        help="folder that COCO/VIA file names are relative to (COCO, when a name is not found "
        "there: the JSON's folder, then ../images/[<split>/], ../<split>/, ../<split>2017/)",
    )  # fmt: skip


def add_dataset_arguments(p: argparse.ArgumentParser, src_help: str = "dataset file or folder") -> None:
    """``SRC [--format F] [--images DIR] [--skip-invalid]``."""
    p.add_argument("src", metavar="SRC", help=src_help)
    add_format_arguments(p)
    p.add_argument("--class-name", default=None, metavar="NAME", help="name of the single class of mask formats (default: object)")
    p.add_argument("--names", default=None, metavar="FILE", help="YOLO class names: data.yaml or one name per line")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad items with a warning each and a count at the end, instead of stopping",
    )


def load_from_args(args: argparse.Namespace, check_images: bool = True) -> Any:
    """Load the dataset named by :func:`add_dataset_arguments`'s arguments."""
    from instseg.data.formats import load_dataset

    return load_dataset(
        args.src,
        format=args.format,
        images_dir=args.images,
        skip_invalid=args.skip_invalid,
        class_name=getattr(args, "class_name", None),
        names=getattr(args, "names", None),
        check_images=check_images,
    )


def report_skipped(skipped: list[str]) -> None:
    """Print the count of skipped items (each was already warned about)."""
    if skipped:
        print(f"skipped {len(skipped)} invalid item(s)", file=sys.stderr)


def _scales(text: str) -> tuple[float, ...]:
    """``--tta-scales`` value: comma-separated factors > 0."""
    try:
        factors = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,1.2,1.4, got {text!r}") from None
    if not factors or any(not f > 0 for f in factors):
        raise argparse.ArgumentTypeError(f"expected factors > 0 like 1,1.2,1.4, got {text!r}")
    return factors


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """``--tta --tta-scales --tta-agreement --box-refine --mask-threshold --calibrate`` (see
    :func:`inference_from_args`)."""
    g = p.add_argument_group("inference options (Mask R-CNN; --tta, --calibrate also SOLOv2)")
    g.add_argument(
        "--tta", default=None, choices=("none", "h", "v", "hv"),
        help="flip test-time augmentation: each detection's score, box and mask (SOLOv2: each "
        "grid cell's score and mask) averaged over the image and its mirror images (h "
        "horizontal, v vertical, hv both; use the flips the model trained with: hv after "
        "--augment microscopy, h otherwise); 2-4x slower",
    )  # fmt: skip
    g.add_argument(
        "--tta-scales", type=_scales, default=None, metavar="F,F,...",
        help="scale test-time augmentation for fixed-scale models (input_scale, e.g. "
        "microscopy): predict at each factor of the model's input scale (with --tta's flips "
        "at each) and fuse the detections (an object's mask is its views' vote, its score "
        "their sum over the number of scales), e.g. 1,1.2,1.4; one pass per factor",
    )  # fmt: skip
    g.add_argument(
        "--tta-agreement", type=float, default=None, metavar="P",
        help="with --tta-scales: multiply each fused score by the mean mask IoU of its views "
        "with the fused mask to the power P (0 off, the default; --calibrate chooses it among "
        "0, 1, 2, 4)",
    )  # fmt: skip
    g.add_argument(
        "--box-refine", type=int, default=None, metavar="N",
        help="extra box-head passes on the regressed boxes (1 helps small, dense objects; "
        "Mask R-CNN only)",
    )  # fmt: skip
    g.add_argument(
        "--mask-threshold", type=float, default=None, metavar="T",
        help="soft-mask probability above which a pixel is in the mask (default 0.5)",
    )  # fmt: skip
    g.add_argument(
        "--calibrate", default=None, metavar="DATA",
        help="choose --mask-threshold (Mask R-CNN among 0.4-0.7, SOLOv2 0.3-0.6) by segm AP "
        "on this labelled dataset (e.g. training images; never the set you evaluate on), and "
        "the score cut-off with the best F1 there (predict SOURCE mode applies it unless "
        "--score-threshold is given)",
    )  # fmt: skip


def _check_inference_args(model: Any, args: argparse.Namespace) -> None:
    """One-line errors (:class:`~instseg.errors.InstsegError`) naming the flag and the model."""
    from instseg.errors import InstsegError

    name, family = type(model).__name__, getattr(model, "family", None)
    box_refine = getattr(args, "box_refine", None)
    if box_refine is not None and family != "maskrcnn":
        raise InstsegError(f"--box-refine: Mask R-CNN models only, got {name}")
    wants = getattr(args, "tta", None) or getattr(args, "tta_scales", None)
    if (wants or getattr(args, "calibrate", None)) and family not in ("maskrcnn", "solov2"):
        raise InstsegError(
            f"--tta/--tta-scales/--calibrate: Mask R-CNN or SOLOv2 models only, got {name}"
        )
    if box_refine is not None and box_refine < 0:
        raise InstsegError(f"--box-refine must be >= 0, got {box_refine}")
    agreement = getattr(args, "tta_agreement", None)
    if agreement is not None and not agreement >= 0.0:
        raise InstsegError(f"--tta-agreement must be >= 0, got {agreement}")
    threshold = getattr(args, "mask_threshold", None)
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InstsegError(f"--mask-threshold must lie in (0, 1), got {threshold}")


def inference_from_args(model: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """``model`` set up from ``--tta --tta-scales --tta-agreement --box-refine
    --mask-threshold --calibrate`` (missing ones are ``None``) -> ``(model or its test-time
    augmentation wrapper, Thresholds or None)``. With ``--calibrate`` (a labelled dataset in
    any format, never the evaluation set) the mask threshold (and agreement power) chosen
    there are set, and the choices are printed; the F1-best score cut-off is returned for the
    caller to apply. Errors are one line naming the flag."""
    from instseg.data.formats import load_dataset
    from instseg.errors import DataError, InstsegError
    from instseg.inference.calibrate import apply_thresholds, choose_thresholds
    from instseg.inference.tta import with_tta

    _check_inference_args(model, args)
    if getattr(args, "mask_threshold", None) is not None:
        model.mask_threshold = float(args.mask_threshold)
    try:  # flips and refinement are checked above: what is left is the scales' (ScaleTTA)
        wrapped = with_tta(
            model,
            getattr(args, "tta", None) or "none",
            getattr(args, "tta_scales", None) or (),
            float(getattr(args, "tta_agreement", None) or 0.0),
            int(getattr(args, "box_refine", None) or 0),
        )
    except ValueError as err:
        raise InstsegError(f"--tta-scales: {err}") from None
    source = getattr(args, "calibrate", None)
    if not source:
        return wrapped, None
    dataset = load_dataset(source, format=getattr(args, "format", None),
                           images_dir=getattr(args, "images", None))  # fmt: skip
    if len(dataset.categories) != model.num_classes:
        raise DataError(
            source, "categories",
            f"--calibrate: dataset has {len(dataset.categories)} classes, model has "
            f"{model.num_classes}",
        )  # fmt: skip
    found = choose_thresholds(wrapped, dataset, progress=sys.stderr.isatty())
    apply_thresholds(wrapped, found)
    _print_calibration(found, source, scales=bool(getattr(args, "tta_scales", None)))
    return wrapped, found


def _print_calibration(found: Any, source: str, scales: bool) -> None:
    shown = ", ".join(f"{c:g}: {v:.4f}" for c, v in found.ap.items())
    print(f"calibrated mask threshold {found.mask_threshold:g} on {source} (segm AP {shown})",
          file=sys.stderr)  # fmt: skip
    if scales:
        shown = ", ".join(f"{p:g}: {v:.4f}" for p, v in found.agreement_ap.items())
        print(f"calibrated scale-TTA agreement power {found.agreement:g} on {source} "
              f"(segm AP {shown})", file=sys.stderr)  # fmt: skip
    shown = ", ".join(f"{c:g}: {v:.3f}" for c, v in found.f1.items())
    print(f"calibrated score cut-off {found.score_cutoff:g} on {source} (F1@0.5 {shown})",
          file=sys.stderr)  # fmt: skip


def add_object_size_argument(p: argparse.ArgumentParser) -> None:
    """``--object-size PX|auto`` (see :func:`check_object_size_arg`)."""
    p.add_argument(
        "--object-size", default=None, metavar="PX|auto",
        help="typical diameter of the objects in these images, in pixels: each image is "
        "rescaled by the model's learnt object size / PX so that its objects reach the model "
        "at the size it learnt (masks and boxes come back in the image's pixels); auto: "
        "estimated on the first image (printed) and kept for the rest",
    )  # fmt: skip


def usage_error(command: str, message: str) -> int:
    """Print ``instseg COMMAND: error: MESSAGE`` (one line) and return the usage exit code 2."""
    print(f"instseg {command}: error: {message}", file=sys.stderr)
    return 2


def check_object_size_arg(args: argparse.Namespace, command: str) -> int | None:
    """Parse ``args.object_size`` in place (pixels, ``"auto"`` or ``None``); a bad value is
    one line on stderr and the exit code 2 is returned, else ``None``. Pass the value on to
    ``Predictor(object_size=...)`` and catch its
    :class:`~instseg.inference.object_size.ObjectSizeError` (a model that does not know its
    object size) with :func:`usage_error` too."""
    from instseg.inference.object_size import ObjectSizeError, parse_object_size

    try:
        args.object_size = parse_object_size(getattr(args, "object_size", None))
    except ObjectSizeError as err:
        return usage_error(command, str(err))
    return None


def cutoff_line(predictor: Any, source: str | None = None) -> str:
    """One line saying which score cut-off ``predictor`` applies and where it comes from:
    ``source`` (e.g. ``"--calibrate"``), ``--score-threshold``, the model's stored one, or
    none."""
    cut = predictor.score_cutoff
    if cut is None:
        return ("score cut-off: none (the model stores none; --score-threshold T sets one): "
                "every detection is kept")  # fmt: skip
    if predictor.score_threshold is not None:
        return f"score cut-off {cut:g} (--score-threshold): every output"
    origin = source or "the model's, F1@0.5-best on its validation images"
    return (f"score cut-off {cut:g} ({origin}): label images, overlays, instances.csv and "
            "tracked instances; results.json keeps every detection for AP")  # fmt: skip

