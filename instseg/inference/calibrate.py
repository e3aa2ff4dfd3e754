"""Choose inference thresholds on labelled images, through the models' public tensor API:
the mask threshold (and, with scale test-time augmentation, the power of the views'
agreement) by segm AP, and the detection-score cut-off with the best F1.

The threshold that turns soft mask probabilities into binary masks moves mask AP by several
points and its best value depends on the data (touching nuclei want tighter masks than
pedestrians) and on flip TTA (averaged probabilities are softer). Choose it on images that
are not the evaluation set:

    found = choose_thresholds(model, train_set.subset(list(range(0, len(train_set), 3))))
    apply_thresholds(model, found)

``model`` is a model or a test-time augmentation wrapper (:mod:`.tta`). The network runs once
per image (``forward_raw``); every candidate only re-post-processes the same raw outputs
(``postprocess`` with another ``mask_threshold``), so five candidates cost about one
prediction pass. The score cut-off is chosen by
:func:`instseg.engine.learnt.choose_score_cutoff`, as training does for the checkpoints'
``score_cutoff``. Under :class:`~.tta.ScaleTTA` each threshold's views are clustered once
(:func:`~.fusion.fuse_clusters`) and each agreement power only re-ranks the clusters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from instseg.data.coco import instances_to_coco
from instseg.data.dataset import InstanceDataset
from instseg.data.loader import image_to_tensor
from instseg.engine.evaluate import coco_summary, predict_dataset
from instseg.engine.learnt import SCORE_CANDIDATES, choose_score_cutoff
from instseg.inference.fusion import AGREEMENT_CANDIDATES, fuse_clusters, rank_fused
from instseg.inference.tta import ScaleTTA, base_model
from instseg.structures import Instances

__all__ = [
    "MASK_CANDIDATES",
    "SCORE_CANDIDATES",
    "Thresholds",
    "apply_thresholds",
    "choose_mask_threshold",
    "choose_score_threshold",
    "choose_thresholds",
]

#: mask thresholds tried per model family (SOLOv2's candidate masks are the mean of
#: 1/4-scale probabilities, softer at their borders)
MASK_CANDIDATES = {"maskrcnn": (0.4, 0.5, 0.6, 0.7), "solov2": (0.3, 0.4, 0.45, 0.5, 0.6)}


class Thresholds(NamedTuple):
    """What :func:`choose_thresholds` found: the mask threshold and ``{threshold: segm AP}`` at
    the chosen agreement power; the F1-best score cut-off and ``{cut-off: F1}`` (``None, {}``
    when not asked); the agreement power and ``{power: segm AP}`` at the chosen threshold
    (``{0.0: AP}`` without scale TTA)."""

    mask_threshold: float
    ap: dict[float, float]
    score_cutoff: float | None
    f1: dict[float, float]
    agreement: float
    agreement_ap: dict[float, float]


def _check_score_candidates(candidates: Sequence[float], dataset: InstanceDataset) -> None:
    if not candidates or any(not 0.0 <= float(c) <= 1.0 for c in candidates):
        raise ValueError(f"score cut-off candidates must lie in [0, 1], got {list(candidates)}")
    if len(dataset) == 0:
        raise ValueError("calibration needs at least one labelled image")


def _views_at(model: nn.Module, tensor: torch.Tensor) -> Callable[[float], list[Instances]]:
    """Run the network of ``model`` (a model or wrapper) on one image now -> a function that
    post-processes the same raw outputs at a given mask threshold: the instances of every
    scale view (one view without :class:`~.tta.ScaleTTA`)."""
    m: Any = model
    raw = m.forward_raw([tensor])
    cfg = m.post_config()

    def at(c: float) -> list[Instances]:
        post = dataclasses.replace(cfg, mask_threshold=c)
        if isinstance(model, ScaleTTA):
            return model.view_sets(raw, post, cache=True)[0]
        return [m.postprocess(raw, post, cache=True)[0]]

    return at


@torch.no_grad()
def _results_by_mask_threshold(
    model: nn.Module,
    dataset: InstanceDataset,
    candidates: Sequence[float],
    progress: bool,
    agreements: Sequence[float] = (0.0,),
) -> dict[tuple[float, float], list[dict[str, Any]]]:
    """COCO results of ``dataset`` per ``(mask threshold, agreement power)``; the network
    runs once per image and only the post-processing reruns (scale views clustered once per
    threshold, ranked per power). Without scale TTA the power changes nothing: pass one."""
    limit = int(base_model(model).max_detections)  # type: ignore[arg-type]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: dict[tuple[float, float], list[dict[str, Any]]] = {
        (float(c), float(p)): [] for c in candidates for p in agreements
    }
    indices: Iterable[int] = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="calibrate", unit="img", dynamic_ncols=True)
    scale_tta = model if isinstance(model, ScaleTTA) else None
    try:
        for i in indices:
            tensor = image_to_tensor(dataset.load_image(i)).float().div(255.0).to(device)
            image_id = dataset.images[i].id
            views = _views_at(model, tensor)
            for c in candidates:
                sets = views(float(c))
                fused = None
                if scale_tta is not None and len(sets) > 1:  # one set: kept as predict keeps it
                    fused = fuse_clusters(sets, scale_tta.iou, scale_tta.vote)
                for p in agreements:
                    inst = sets[0] if fused is None else rank_fused(fused, p, limit)
                    coco = instances_to_coco(inst, image_id, dataset.label_to_cat_id)
                    results[float(c), float(p)].extend(coco)
    finally:
        model.train(was_training)
    return results


def choose_mask_threshold(
    model: nn.Module,
    dataset: InstanceDataset,
    candidates: Sequence[float] | None = None,
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """``(best threshold, {threshold: segm AP})`` of a Mask R-CNN or SOLOv2 (or a wrapper of
    one) on ``dataset``'s images (COCO segm AP, our evaluator; ties go to the candidate
    nearest 0.5; default candidates :data:`MASK_CANDIDATES`). Nothing is changed on the
    model."""
    found = choose_thresholds(model, dataset, candidates, None, progress=progress)
    return found.mask_threshold, found.ap


def _mask_candidates(model: nn.Module, given: Sequence[float] | None) -> Sequence[float]:
    family = getattr(base_model(model), "family", None)
    if family not in MASK_CANDIDATES:
        raise TypeError(
            f"mask threshold calibration needs a Mask R-CNN or SOLOv2, got "
            f"{type(base_model(model)).__name__}"
        )
    candidates = MASK_CANDIDATES[str(family)] if given is None else given
    if not candidates or any(not 0.0 < float(c) < 1.0 for c in candidates):
        raise ValueError(f"mask threshold candidates must lie in (0, 1), got {list(candidates)}")
    return candidates


def _agreement_candidates(model: nn.Module, given: Sequence[float] | None) -> Sequence[float]:
    if not isinstance(model, ScaleTTA):  # one view per image: the power is moot
        return (0.0,)
    candidates = AGREEMENT_CANDIDATES if given is None else given
    if not candidates or any(not float(p) >= 0.0 for p in candidates):
        raise ValueError(f"agreement candidates must be >= 0, got {list(candidates)}")
    return candidates


def choose_thresholds(
    model: nn.Module,
    dataset: InstanceDataset,
    mask_candidates: Sequence[float] | None = None,
    score_candidates: Sequence[float] | None = SCORE_CANDIDATES,
    iou: float = 0.5,
    progress: bool = False,
    agreement_candidates: Sequence[float] | None = None,
) -> Thresholds:
    """One network pass per image for all choices (:class:`Thresholds`): the mask threshold
    and, under :class:`~.tta.ScaleTTA`, the agreement power (``agreement_candidates``,
    default :data:`~.fusion.AGREEMENT_CANDIDATES`) by segm AP, jointly; then the cut-off as
    :func:`choose_score_threshold` on the predictions at those (``score_candidates=None``:
    no cut-off, ``None, {}``). Ties go to the threshold nearest 0.5, then to the smaller
    power. Nothing is changed on the model (:func:`apply_thresholds` does that)."""
    masks = _mask_candidates(model, mask_candidates)
    if score_candidates is not None:
        _check_score_candidates(score_candidates, dataset)
    elif len(dataset) == 0:
        raise ValueError("calibration needs at least one labelled image")
    powers = _agreement_candidates(model, agreement_candidates)
    results = _results_by_mask_threshold(model, dataset, masks, progress, powers)
    gt = dataset.to_coco()
    ap = {key: coco_summary(gt, res, "segm")["AP"] for key, res in results.items()}
    best, power = max(ap, key=lambda k: (round(ap[k], 6), -abs(k[0] - 0.5), -k[1]))
    by_threshold = {c: v for (c, p), v in ap.items() if p == power}
    by_power = {p: v for (c, p), v in ap.items() if c == best}
    if score_candidates is None:
        return Thresholds(best, by_threshold, None, {}, power, by_power)
    cutoff, f1 = choose_score_cutoff(gt, results[best, power], score_candidates, iou)
    return Thresholds(best, by_threshold, cutoff, f1, power, by_power)


def apply_thresholds(model: nn.Module, found: Thresholds) -> None:
    """Set what :func:`choose_thresholds` chose: the mask threshold on the model inside any
    wrappers, the agreement power on a :class:`~.tta.ScaleTTA` (the score cut-off is the
    caller's to apply where it filters outputs)."""
    base: Any = base_model(model)
    base.mask_threshold = float(found.mask_threshold)
    if isinstance(model, ScaleTTA):
        model.agreement = float(found.agreement)


def choose_score_threshold(
    model: nn.Module,
    dataset: InstanceDataset,
    candidates: Sequence[float] = SCORE_CANDIDATES,
    iou: float = 0.5,
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """``(best cut-off, {cut-off: F1})``: the score cut-off whose detections (score >= cut-off)
    give the best F1 at IoU ``iou`` on ``dataset`` (one-to-one matching, as
    ``instseg eval``'s F1); ties go to the candidate nearest 0.5. Any model with ``predict``;
    the network runs once per image. Use images that are not the evaluation set: models
    whose scores come from a focal loss (SOLOv2) score true objects lower than a softmax
    classifier does, so a fixed 0.5 under-counts them."""
    _check_score_candidates(candidates, dataset)
    results = predict_dataset(model, dataset, progress=progress)
    return choose_score_cutoff(dataset.to_coco(), results, candidates, iou)
