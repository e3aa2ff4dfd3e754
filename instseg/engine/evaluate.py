"""Model -> COCO results on a dataset, and COCO AP of those results (our evaluator).

``predict_dataset`` runs ``model.predict`` over every image of an :class:`InstanceDataset` and
returns a COCO results list (the dataset's image ids; category ids mapped back from labels
through ``dataset.label_to_cat_id``; segmentation as compressed RLE with ``counts`` str;
``bbox`` xywh; ``score``). ``evaluate_model`` scores it against the dataset's ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    data = TrainingDataset(dataset, cache_bytes=0)  # read once per call: no cache; images in [0, 1]
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
    score_cutoff: bool = False,
) -> dict[str, Any]:
    """Predict ``dataset`` and evaluate -> ``{"segm": {AP, ...}, "bbox": {...}, "num_detections": n}``.

    AP values are in [0, 1] (-1 where COCO has nothing to measure, e.g. no large objects).
    ``score_cutoff``: also ``"score_cutoff"`` and ``"f1_by_cutoff"`` (``{"0.5": F1, ...}``),
    the F1@0.5-best detection-score cut-off of these predictions
    (:func:`instseg.engine.learnt.choose_score_cutoff`).
    """
    from instseg.engine.learnt import choose_score_cutoff

    results = predict_dataset(
        model, dataset, batch_size=batch_size, device=device, progress=progress
    )
    gt = dataset.to_coco()
    out: dict[str, Any] = {t: coco_summary(gt, results, t) for t in iou_types}
    out["num_detections"] = len(results)
    if score_cutoff:
        best, f1 = choose_score_cutoff(gt, results)
        out["score_cutoff"] = best
        out["f1_by_cutoff"] = {f"{c:g}": round(v, 4) for c, v in f1.items()}
    return out


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
