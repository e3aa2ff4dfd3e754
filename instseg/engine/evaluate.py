"""Model -> COCO results on a dataset, and COCO AP of those results (our evaluator).

``predict_dataset`` runs ``model.predict`` over every image of an :class:`InstanceDataset` and
returns a COCO results list (the dataset's image ids; category ids mapped back from labels
through ``dataset.label_to_cat_id``; segmentation as compressed RLE with ``counts`` str;
``bbox`` xywh; ``score``). ``evaluate_model`` scores it against the dataset's ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from instseg.data.coco import instances_to_coco
from instseg.data.dataset import InstanceDataset
from instseg.data.loader import TrainingDataset, collate
from instseg.evaluation.coco_eval import evaluate

__all__ = [
    "coco_summary",
    "evaluate_model",
    "instances_to_coco",
    "predict_dataset",
    "run_model_eval",
]

SUMMARY_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: InstanceDataset,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    label_to_cat_id: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Predict every image of ``dataset`` -> COCO results list (see module docstring).

    ``label_to_cat_id`` overrides the dataset's map (e.g. the checkpoint's ``cat_ids``).
    """
    cat_map = list(label_to_cat_id) if label_to_cat_id is not None else dataset.label_to_cat_id
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    data = TrainingDataset(dataset)  # no transform: decoded image in [0, 1]
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    index = 0
    bar = None
    if progress:
        bar = tqdm(total=len(dataset), desc="predict", unit="img", dynamic_ncols=True)
    try:
        for images, _ in loader:
            preds = model.predict([im.to(dev) for im in images])  # type: ignore[operator]
            for pred in preds:
                rec = dataset.images[index]
                results.extend(instances_to_coco(pred.to("cpu"), rec.id, cat_map))
                index += 1
            if bar is not None:
                bar.update(len(images))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return results


def coco_summary(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str
) -> dict[str, float]:
    """COCO summary (AP, AP50, ... ARl) of ``results`` on ``gt`` with our evaluator."""
    if iou_type == "segm":
        results = [r for r in results if "segmentation" in r]
    if not results:
        return {k: 0.0 for k in SUMMARY_KEYS}
    return {k: float(v) for k, v in evaluate(gt, results, iou_type=iou_type).summary().items()}


def evaluate_model(
    model: nn.Module,
    dataset: InstanceDataset,
    iou_types: Sequence[str] = ("segm", "bbox"),
    batch_size: int = 1,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict ``dataset`` and evaluate -> ``{"segm": {AP, ...}, "bbox": {...}, "num_detections": n}``.

    AP values are in [0, 1] (-1 where COCO has nothing to measure, e.g. no large objects).
    """
    results = predict_dataset(
        model, dataset, batch_size=batch_size, device=device, progress=progress
    )
    gt = dataset.to_coco()
    out: dict[str, Any] = {t: coco_summary(gt, results, t) for t in iou_types}
    out["num_detections"] = len(results)
    return out


def run_model_eval(args: argparse.Namespace) -> int:
    """CLI helper for ``instseg eval --model DIR --data GT --json OUT.json``.

    Uses ``args.model`` (checkpoint or training folder), ``args.data`` (dataset in any format),
    ``args.json`` (optional output: the segm and bbox summaries), ``args.format``, ``args.images``;
    optional ``args.device``, ``args.batch_size``. Prints one line per IoU type.
    """
    from instseg.data.formats import load_dataset
    from instseg.engine.checkpoint import load_model

    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_model(args.model, device=device)
    from instseg.engine.calibrate import apply_inference_args

    apply_inference_args(model, args)
    dataset = load_dataset(
        args.data, format=getattr(args, "format", None), images_dir=getattr(args, "images", None)
    )
    check_categories(meta, dataset, args.data)
    results = predict_dataset(
        model,
        dataset,
        batch_size=getattr(args, "batch_size", None) or 1,
        device=device,
        progress=sys.stderr.isatty(),
    )
    gt = dataset.to_coco()
    summary = {t: coco_summary(gt, results, t) for t in ("segm", "bbox")}
    for t, s in summary.items():
        print(
            f"{t}: AP {s['AP']:.4f}  AP50 {s['AP50']:.4f}  AP75 {s['AP75']:.4f}  APs {s['APs']:.4f}  APm {s['APm']:.4f}  APl {s['APl']:.4f}"
        )
    if getattr(args, "json", None):
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    **summary["segm"],  # the same top-level keys as `instseg eval GT PRED`
                    "iou_type": "segm",
                    "model": meta.get("path"),
                    "data": str(args.data),
                    **summary,
                    "num_detections": len(results),
                },
                indent=1,
            )
        )
    return 0


def check_categories(meta: dict[str, Any], dataset: InstanceDataset, source: Any) -> None:
    """DataError unless the model's categories (ids, else count) match the dataset's."""
    from instseg.errors import DataError

    cat_ids = meta.get("cat_ids")
    if cat_ids is not None and list(cat_ids) != dataset.label_to_cat_id:
        raise DataError(
            source,
            "categories",
            f"model was trained on category ids {list(cat_ids)}, dataset has {dataset.label_to_cat_id}",
        )
    k = int(meta["config"]["num_classes"])
    if cat_ids is None and k != len(dataset.categories):
        raise DataError(
            source, "categories", f"model has {k} classes, dataset has {len(dataset.categories)}"
        )
