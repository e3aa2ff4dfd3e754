"""Run the pipeline end to end on generated data; nothing is downloaded.

The headline: a generated fluorescence-nuclei image (:mod:`instseg.data.synthetic_nuclei`,
exact ground truth) is segmented on the CPU by the shipped ``nuclei`` model; the sample, its
ground truth (label image + COCO JSON), the prediction (overlay, label image, COCO results
JSON) and ``summary.json`` go to ``OUT/nuclei``, and a summary table (instances, mean area,
mean score, precision / recall / F1 at IoU 0.5 against the ground truth) is printed. Then
synthetic shape scenes and a short tracked clip are written (PNG images + COCO JSON) with
ground-truth overlays, and every output's location is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from instseg.data.dataset import InstanceDataset
    from instseg.data.synthetic_nuclei import NucleiSample
    from instseg.structures import Instances

    Predictor = Callable[[np.ndarray], Instances]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="instseg-demo", metavar="DIR", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the generated data (default: %(default)s)",
    )
    p.add_argument(
        "--images",
        type=_positive,
        default=8,
        metavar="N",
        help="number of scenes (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default="nuclei",
        metavar="MODEL",
        help="model that segments the nuclei sample: a shipped name, checkpoint or training "
        "folder (default: %(default)s)",
    )
    p.add_argument(
        "--no-model", action="store_true", help="skip the nuclei segmentation (scenes only)"
    )
    p.add_argument(
        "--frames",
        type=_positive,
        default=16,
        metavar="T",
        help="frames in the clip (default: %(default)s)",
    )


def _draw(
    ds: InstanceDataset, out_dir: Path, prefix: str, predictor: Predictor | None
) -> list[np.ndarray]:
    """Overlay every image of ``ds`` (predictions, or ground truth without a predictor)."""
    from instseg.inference.writers import save_image
    from instseg.viz import overlay

    drawn = []
    for i, rec in enumerate(ds.images):
        image = ds.load_image(i)
        shown = predictor(image) if predictor is not None else ds.instances(i)
        canvas = overlay(image, shown, ds.class_names, show_scores=predictor is not None)
        save_image(out_dir / f"{prefix}{Path(rec.file_name).stem}.png", canvas)
        drawn.append(canvas)
    return drawn


def _grid(images: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tile same-size images ``(H, W, 3)`` into one sheet with 2-pixel white gutters."""
    import numpy as np

    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (h + 2) - 2, min(columns, len(images)) * (w + 2) - 2, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = img
    return sheet


#: detections scoring below this are not counted (as in the model card's F1)
SCORE_THRESHOLD = 0.5


def segment_nuclei(
    out_dir: Path, seed: int = 0, model: str | Path = "nuclei"
) -> tuple[dict[str, Path], dict[str, float | int | str]]:
    """Generate the nuclei sample, segment it on the CPU with ``model``, write the files under
    ``out_dir`` -> ``(paths, summary)``; ``summary`` holds counts, mean area (px), mean score
    and precision / recall / F1 at IoU 0.5 against the generated ground truth."""
    import time

    from instseg.data.synthetic_nuclei import make_nuclei_sample
    from instseg.inference import Predictor
    from instseg.inference.writers import (
        prediction_results,
        to_sparse,
        write_json_atomic,
        write_label_image,
        write_overlay,
    )

    sample = make_nuclei_sample(seed)
    paths = _write_ground_truth(out_dir, sample, seed)
    predictor = Predictor(model, device="cpu", score_threshold=SCORE_THRESHOLD)
    start = time.perf_counter()
    pred = predictor(sample.image)
    seconds = time.perf_counter() - start
    sparse = to_sparse(pred)
    paths["nuclei results (COCO)"] = write_json_atomic(
        out_dir / "results.json", prediction_results(sparse, 1, predictor.cat_ids)
    )
    paths["nuclei labels"] = write_label_image(out_dir / "labels", sparse.to_label_image())
    paths["nuclei overlay"] = write_overlay(
        out_dir / "overlay.png", sample.image, sparse, [], show_labels=False, show_scores=False
    )
    summary = _nuclei_summary(sample, pred, predictor.meta, model, seed, seconds)
    paths["nuclei summary"] = write_json_atomic(out_dir / "summary.json", summary)
    return paths, summary


def _write_ground_truth(out_dir: Path, sample: NucleiSample, seed: int) -> dict[str, Path]:
    """The sample image, its label image and its COCO JSON under ``out_dir`` -> paths."""
    import numpy as np

    from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
    from instseg.inference.writers import save_image, write_label_image
    from instseg.masks import encode

    h, w = sample.labels.shape
    paths = {"nuclei sample": save_image(out_dir / "sample.png", sample.image)}
    paths["nuclei ground truth"] = write_label_image(
        out_dir / "ground_truth_labels", sample.labels.astype(np.uint16)
    )
    gt = sample.instances
    assert gt.masks is not None
    anns = [
        make_annotation(k + 1, 1, 1, rle, h, w) for k, rle in enumerate(encode(gt.masks.numpy()))
    ]
    record = ImageRecord(1, "sample.png", paths["nuclei sample"], h, w, anns)
    gt_json = InstanceDataset([record], [Category(1, "nucleus")], source=f"nuclei seed {seed}")
    paths["nuclei ground truth (COCO)"] = gt_json.save_coco(out_dir / "ground_truth.json")
    return paths


def _nuclei_summary(
    sample: NucleiSample,
    pred: Instances,
    meta: dict[str, Any],
    model: str | Path,
    seed: int,
    seconds: float,
) -> dict[str, float | int | str]:
    """Counts, mean area and score, and matching at IoU 0.5 of ``pred`` against the sample."""
    import numpy as np

    from instseg.evaluation.matching import match_instances

    gt = sample.instances
    assert gt.masks is not None and pred.masks is not None and pred.scores is not None
    m = match_instances(gt, pred, thresholds=[0.5])[0]
    areas = pred.masks.flatten(1).sum(1).tolist()
    h, w = sample.labels.shape
    return {
        "model": str(meta.get("path", model)),
        "architecture": str(meta.get("config", {}).get("name", "?")),
        "seed": seed,
        "image_size": f"{h}x{w}",
        "score_threshold": SCORE_THRESHOLD,
        "seconds": round(seconds, 2),
        "gt_instances": len(gt),
        "instances": len(pred),
        "mean_area": round(float(np.mean(areas)), 1) if areas else 0.0,
        "gt_mean_area": round(float(gt.masks.numpy().sum((1, 2)).mean()), 1) if len(gt) else 0.0,
        "mean_score": round(float(pred.scores.numpy().mean()), 3) if len(pred) else 0.0,
        "precision": round(m.precision, 4),
        "recall": round(m.recall, 4),
        "f1": round(m.f1, 4),
        "mean_matched_iou": round(m.mean_matched_iou, 4),
    }


def format_nuclei_summary(s: dict[str, float | int | str], model: str | Path) -> str:
    """The printed table of :func:`segment_nuclei`'s summary."""
    rows = [
        ("nuclei in ground truth", f"{s['gt_instances']}"),
        (f"instances found (score >= {s['score_threshold']})", f"{s['instances']}"),
        ("mean area (px)", f"{s['mean_area']}  (ground truth {s['gt_mean_area']})"),
        ("mean score", f"{s['mean_score']:.3f}" if isinstance(s["mean_score"], float) else "-"),
        ("precision @ IoU 0.5", f"{s['precision']:.3f}"),
        ("recall @ IoU 0.5", f"{s['recall']:.3f}"),
        ("F1 @ IoU 0.5", f"{s['f1']:.3f}"),
        ("mean matched IoU", f"{s['mean_matched_iou']:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    head = (
        f"generated nuclei sample (seed {s['seed']}, {s['image_size']}) segmented by "
        f"'{model}' ({s['architecture']}) on the CPU in {s['seconds']:.1f} s"
    )
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def run_demo(
    out: str | Path = "instseg-demo",
    seed: int = 0,
    n_images: int = 8,
    n_frames: int = 16,
    predictor: Predictor | None = None,
    log: Callable[[str], None] = print,
    model: str | Path | None = "nuclei",
) -> dict[str, Path]:
    """Segment the nuclei sample with ``model`` (skipped when None), generate scenes and a
    clip, summarise them and draw overlays under ``out``; returns the written paths.

    ``predictor`` maps an RGB uint8 ``(H, W, 3)`` image to ``Instances`` (a trained model's
    predictions, with scores) for the scenes and clip; without one their overlays show the
    ground truth.
    """
    from PIL import Image

    from instseg.cli.info import format_stats
    from instseg.data.synthetic import SceneConfig, make_dataset
    from instseg.data.synthetic_clips import ClipConfig, make_clip_dataset
    from instseg.inference.writers import save_image

    root = Path(out)
    paths: dict[str, Path] = {}
    if model is not None:
        paths, summary = segment_nuclei(root / "nuclei", seed=seed, model=model)
        log(format_nuclei_summary(summary, model) + "\n")
    scenes = make_dataset(
        n_images, SceneConfig(height=256, width=256), seed=seed, out_dir=root / "scenes"
    )
    clip = make_clip_dataset(ClipConfig(num_frames=n_frames), seed=seed, out_dir=root / "clip")
    log(format_stats(scenes.stats(), "synthetic scenes (COCO JSON, RLE masks)"))
    n_tracks = len({a.track_id for r in clip.images for a in r.annotations})
    log(f"\nclip: {len(clip)} frames, {clip.num_instances} instances, {n_tracks} tracks")

    what = "predictions" if predictor is not None else "ground truth"
    drawn = _draw(scenes, root / "overlays", "scene_", predictor)
    frames = _draw(clip, root / "overlays", "clip_", predictor)
    paths |= {
        "scene images": root / "scenes" / "images",
        "scene annotations": root / "scenes" / "annotations.json",
        "clip frames": root / "clip" / "frames",
        "clip annotations": root / "clip" / "annotations.json",
        f"overlays ({what})": root / "overlays",
        "overview": root / "overview.png",
        "clip animation": root / "clip.gif",
    }
    save_image(paths["overview"], _grid(drawn))
    gif = [Image.fromarray(f) for f in frames]
    gif[0].save(paths["clip animation"], save_all=True, append_images=gif[1:], duration=120, loop=0)
    log("")
    width = max(len(k) for k in paths)
    for name, path in paths.items():
        log(f"{name:<{width}}  {path}")
    return paths


def run(args: argparse.Namespace) -> int:
    from instseg.errors import DataError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "output path exists and is not a folder")
    try:
        run_demo(
            out,
            seed=args.seed,
            n_images=args.images,
            n_frames=args.frames,
            model=None if args.no_model else args.model,
        )
    except OSError as exc:
        raise DataError(
            exc.filename or out, None, f"cannot write ({exc.strerror or exc})"
        ) from None
    return 0
