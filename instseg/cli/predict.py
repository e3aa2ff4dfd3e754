"""Predict instances with a trained model: on a dataset, or on files, folders, globs and videos.

    instseg predict --data GT.json --model DIR --out P
    instseg predict SOURCE [SOURCE ...] --model DIR --out P [--resume]
    instseg predict SOURCE --model DIR --out P --engine ray [--address auto] [--actors N]

``--data`` writes ``P/results.json``: a COCO results list over every image of the dataset
(its image ids; category ids mapped back from the model's labels; segmentation as compressed
RLE; bbox xywh; score), so ``instseg eval GT.json P/results.json`` just works.
``SOURCE`` (image files, folders, globs, videos) writes ``results.json`` + ``images.json``
(id -> file), 16-bit label images, overlays and ``instances.csv``; bad inputs are listed at
the end and make the exit code 1. ``--model`` is a checkpoint file, a training folder
(best.pt, else last.pt), a shipped model name (``nuclei``, offline) or a ``.onnx`` file from
``instseg export`` (run with ``--backend onnxruntime|openvino`` on ``--threads`` cores).
``--resume`` finishes an interrupted run (the images done are skipped); ``--engine ray`` runs
:func:`instseg.inference.predict_ray` (Ray actors, local or a cluster; it always resumes).

Score cut-off: the model's stored one (F1@0.5-best on its validation images), ``--calibrate``'s
or ``--score-threshold``'s applies to label images, overlays and ``instances.csv``;
``results.json`` keeps every detection unless ``--score-threshold`` is given. The cut-off in
use is printed once. ``--object-size PX|auto`` rescales the images so that their objects reach
the model at the size it learnt (both modes; ``auto``: estimated on the first image).
"""

from __future__ import annotations

import argparse
from typing import Any

from instseg.cli.common import (
    add_format_arguments,
    add_inference_arguments,
    add_object_size_argument,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", nargs="*", metavar="SOURCE", help="image files, folders, globs or videos"
    )
    p.add_argument(
        "--data", default=None, metavar="DATA", help="dataset whose images to predict (any format)"
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="checkpoint file, training folder, shipped model name (nuclei) or a .onnx file "
        "from instseg export",
    )
    p.add_argument(
        "--backend", default="onnxruntime", choices=("onnxruntime", "openvino"),
        help="engine for a .onnx --model (default onnxruntime; openvino: pip install "
        "'instseg[openvino]')",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads (default: all cores; PyTorch models: torch's default)",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (results.json)")
    add_format_arguments(p)
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument(
        "--score-threshold", type=float, default=None,
        help="drop detections below this score from every output (default: label images, "
        "overlays and instances.csv keep the detections scoring >= the model's stored "
        "cut-off, or --calibrate's; results.json keeps all)",
    )  # fmt: skip
    p.add_argument("--max-detections", type=int, default=None, help="detections kept per image")
    add_object_size_argument(p)
    add_inference_arguments(p)
    g = p.add_argument_group("SOURCE mode")
    g.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    g.add_argument(
        "--resume", action="store_true",
        help="finish an earlier run into --out: skip the images it completed (same SOURCE and "
        "options; its failed images are tried again); --engine ray always resumes",
    )  # fmt: skip
    g.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    g.add_argument("--tile", type=int, default=None, metavar="N", help="tile images larger than N px")
    g.add_argument("--tile-overlap", type=int, default=128, metavar="N", help="tile overlap (px)")
    g.add_argument("--video-stride", type=int, default=1, metavar="K", help="every K-th video frame")
    g.add_argument("--no-labels", action="store_true", help="do not write label images")
    g.add_argument("--no-overlays", action="store_true", help="do not write overlay pictures")
    g.add_argument("--no-csv", action="store_true", help="do not write instances.csv")
    g.add_argument("--semantic", action="store_true", help="also write semantic label maps")
    _add_engine_arguments(p)


def _add_engine_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (SOURCE mode)")
    g.add_argument(
        "--engine", default="local", choices=("local", "ray"),
        help="local: this process (default); ray: Ray actors on this machine or a cluster "
        "(pip install 'instseg[ray]'; images only, also a COCO .json or a .txt list of "
        "paths/URIs; every node must read the inputs and write --out)",
    )  # fmt: skip
    g.add_argument(
        "--address", default=None, metavar="ADDR",
        help="Ray cluster to join: auto or HOST:PORT (default: start Ray on this machine)",
    )  # fmt: skip
    g.add_argument("--actors", type=int, default=1, metavar="N", help="Ray actors (default 1)")
    g.add_argument(
        "--gpus-per-actor", type=float, default=0.0, metavar="F",
        help="GPUs per Ray actor (default 0: CPU; --threads sets the CPUs per actor)",
    )  # fmt: skip


def load_runner(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``(model or its test-time augmentation wrapper, meta, device)`` from ``--model``,
    ``--device``, the threshold and the inference options."""
    from instseg.cli.common import inference_from_args
    from instseg.device import resolve_device
    from instseg.inference.loading import load_model

    device = resolve_device(args.device)
    if str(args.model).lower().endswith(".onnx"):
        from instseg.inference.onnx_model import OnnxModel

        model: Any = OnnxModel(args.model, args.backend, args.threads)
        meta, device = model.meta, resolve_device("cpu")
    else:
        model, meta = load_model(args.model, device=device)
    if args.score_threshold is not None:
        model.score_threshold = args.score_threshold
    if args.max_detections is not None:
        model.max_detections = args.max_detections
    runner, _ = inference_from_args(model, args)
    return runner, meta, device


def _rescaled(runner: Any, meta: dict[str, Any], dataset: Any, args: argparse.Namespace) -> Any:
    """``--data`` with ``--object-size``: the runner seeing objects at the learnt size (an
    ``auto`` size estimated on the dataset's first image, printed)."""
    import sys

    from instseg.data.loader import image_to_tensor
    from instseg.inference.object_size import check_object_size, rescale
    from instseg.inference.size_estimate import MIN_SCORE, estimate_object_size
    from instseg.inference.tta import base_model

    learnt = meta.get("object_size")
    size = check_object_size(args.object_size, learnt, runner, str(meta.get("path", args.model)))
    if size is None or learnt is None:
        return runner
    if size == "auto":
        image = image_to_tensor(dataset.load_image(0)).float().div(255.0)
        stored = meta.get("score_cutoff")
        found = estimate_object_size(base_model(runner), [image], float(learnt),
                                     MIN_SCORE if stored is None else float(stored))  # fmt: skip
        print(found.summary(float(learnt)), file=sys.stderr)
        size = found.object_size
    return rescale(runner, float(learnt) / float(size))


def predict_data(args: argparse.Namespace) -> int:
    """``--data``: predict every image of a dataset -> ``OUT/results.json``."""
    import json
    import sys
    from pathlib import Path

    from instseg.data.formats import load_dataset
    from instseg.engine.evaluate import check_categories, predict_dataset

    model, meta, device = load_runner(args)
    dataset = load_dataset(args.data, format=args.format, images_dir=args.images)
    cat_ids = meta.get("cat_ids")
    if dataset.categories:
        check_categories(meta, dataset, args.data)
    if args.object_size is not None and len(dataset):
        model = _rescaled(model, meta, dataset, args)
    results = predict_dataset(
        model,
        dataset,
        batch_size=args.batch_size,
        device=device,
        progress=sys.stderr.isatty(),
        label_to_cat_id=cat_ids,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results))
    tmp.replace(out / "results.json")
    print(f"wrote {out / 'results.json'}: {len(results)} detections on {len(dataset)} images")
    return 0


def predict_sources_ray(args: argparse.Namespace) -> int:
    """``SOURCE ... --engine ray``: :func:`instseg.inference.predict_ray` into ``--out``."""
    import sys

    from instseg.inference.ray_batch import RAY_MISSING, predict_ray, ray_available

    if not ray_available():
        print(f"instseg predict: error: {RAY_MISSING}", file=sys.stderr)
        return 2
    if args.calibrate or args.actors < 1 or args.gpus_per_actor < 0:
        print("instseg predict: error: --engine ray needs --actors >= 1, --gpus-per-actor >= 0 "
              "and no --calibrate (give --score-threshold)", file=sys.stderr)  # fmt: skip
        return 2
    options = {"backend": args.backend, "threads": args.threads, "tta": args.tta or "none",
               "tta_scales": args.tta_scales or (), "tta_agreement": args.tta_agreement or 0.0,
               "box_refine": args.box_refine or 0, "mask_threshold": args.mask_threshold}  # fmt: skip
    report = predict_ray(
        args.model, args.source if len(args.source) > 1 else args.source[0], args.out,
        address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=float(args.threads or 1), batch_size=args.batch_size,
        overwrite=args.overwrite, progress=sys.stderr.isatty(),
        score_threshold=args.score_threshold, max_detections=args.max_detections,
        object_size=args.object_size, device=args.device, predictor_options=options,
        write_labels=not args.no_labels, write_overlays=not args.no_overlays,
        write_csv=not args.no_csv, write_semantic=args.semantic, recursive=args.recursive,
        tile_size=args.tile, tile_overlap=args.tile_overlap,
    )  # fmt: skip
    print(report.summary(), file=sys.stderr)
    return report.exit_code


def predict_sources(args: argparse.Namespace) -> int:
    """``SOURCE ...``: predict files / folders / globs / videos into ``--out``."""
    import sys

    if args.engine == "ray":
        return predict_sources_ray(args)

    from instseg.cli.common import cutoff_line, inference_from_args
    from instseg.inference import Predictor, run_batch

    predictor = Predictor(
        args.model,
        device=args.device,
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
        batch_size=args.batch_size,
        backend=args.backend,
        threads=args.threads,
        object_size=args.object_size,
        log=lambda line: print(line, file=sys.stderr),
    )
    predictor.runner, found = inference_from_args(predictor.model, args)
    calibrated = found is not None and args.score_threshold is None
    if calibrated:
        predictor.score_cutoff = found.score_cutoff  # the shown outputs' cut-off
    print(cutoff_line(predictor, "--calibrate" if calibrated else None), file=sys.stderr)
    report = run_batch(
        predictor,
        args.source if len(args.source) > 1 else args.source[0],
        args.out,
        overwrite=args.overwrite,
        write_labels=not args.no_labels,
        write_overlays=not args.no_overlays,
        write_csv=not args.no_csv,
        write_semantic=args.semantic,
        progress=sys.stderr.isatty(),
        recursive=args.recursive,
        video_stride=args.video_stride,
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
        resume=args.resume,
    )
    print(report.summary(), file=sys.stderr)
    return report.exit_code


def run(args: argparse.Namespace) -> int:
    import sys

    from instseg.cli.common import check_object_size_arg, usage_error
    from instseg.inference.object_size import ObjectSizeError

    if bool(args.data) == bool(args.source):
        print("instseg predict: error: give either SOURCE ... or --data DATA", file=sys.stderr)
        return 2
    if args.data and args.engine != "local":
        print("instseg predict: error: --engine ray predicts SOURCE ... (for a dataset's "
              "images give its COCO .json as SOURCE)", file=sys.stderr)  # fmt: skip
        return 2
    if args.threads is not None and args.threads < 1:
        print("instseg predict: error: --threads must be >= 1", file=sys.stderr)
        return 2
    if args.threads and not str(args.model).lower().endswith(".onnx"):
        import torch

        torch.set_num_threads(args.threads)
    bad = check_object_size_arg(args, "predict")
    if bad is not None:
        return bad
    try:
        return predict_data(args) if args.data else predict_sources(args)
    except ObjectSizeError as err:  # the model cannot take --object-size: usage
        return usage_error("predict", str(err))
