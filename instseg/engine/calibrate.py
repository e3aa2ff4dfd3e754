"""Choose inference thresholds on labelled images: the mask threshold of a Mask R-CNN or a
SOLOv2, and for any model the detection-score cut-off with the best F1
(:func:`choose_score_threshold`).

The threshold that turns soft mask probabilities (Mask R-CNN's pasted 28 x 28 masks,
SOLOv2's full masks) into binary masks moves mask AP by several points and its best value depends on the data (touching nuclei want
tighter masks than pedestrians) and on flip TTA (averaged probabilities are softer). Choose
it on images that are not the evaluation set, e.g. the training images:

    best, ap = choose_mask_threshold(model, train_set.subset(list(range(0, len(train_set), 3))))
    model.mask_threshold = best

The network runs once per image (with the model's ``tta``/``box_refine``, and once per
scale with ``tta_scales``, whose detection sets are fused at every candidate as ``predict``
fuses them); every candidate only re-post-processes the same network outputs, so four
candidates cost about one prediction pass. With ``tta_scales`` the power of the views'
agreement in fused scores (``inference.fusion``, step 4) is chosen jointly with the mask
threshold, among :data:`~instseg.inference.fusion.AGREEMENT_CANDIDATES`: each only re-ranks
the same fused clusters.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch

from instseg.data.dataset import InstanceDataset
from instseg.data.loader import image_to_tensor
from instseg.engine.evaluate import coco_summary, instances_to_coco
from instseg.inference.fusion import AGREEMENT_CANDIDATES, fuse_clusters, rank_fused, scaled
from instseg.structures import Instances

__all__ = [
    "MASK_CANDIDATES",
    "Calibration",
    "SCORE_CANDIDATES",
    "Thresholds",
    "apply_inference_args",
    "apply_inference_options",
    "choose_mask_threshold",
    "choose_score_threshold",
    "choose_thresholds",
]

#: detection-score cut-offs tried by :func:`choose_score_threshold` (from 0.1: scores that
#: multiply in a predicted mask quality, SOLOv2's ``mask_quality``, run lower)
SCORE_CANDIDATES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


#: mask thresholds tried by :func:`choose_mask_threshold` per model family (SOLOv2's
#: candidate masks are the mean of 1/4-scale probabilities, softer at their borders)
MASK_CANDIDATES = {"maskrcnn": (0.4, 0.5, 0.6, 0.7), "solov2": (0.3, 0.4, 0.45, 0.5, 0.6)}


class Calibration(NamedTuple):
    """What ``--calibrate`` chose: the mask threshold (set on the model) and the F1-best
    detection-score cut-off at it."""

    mask_threshold: float
    score_cutoff: float
    agreement: float = 0.0  # power of the views' agreement (scale TTA only)


class Thresholds(NamedTuple):
    """What :func:`choose_thresholds` found: the mask threshold and ``{threshold: segm AP}`` at
    the chosen agreement power; the F1-best score cut-off and ``{cut-off: F1}`` (``None, {}``
    when not asked); the agreement power and ``{power: segm AP}`` at the chosen threshold
    (``{model's power: AP}`` without scale TTA)."""

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


def _best(values: dict[float, float]) -> float:
    """The candidate with the best value; ties go to the one nearest 0.5."""
    return max(values, key=lambda c: (round(values[c], 6), -abs(c - 0.5)))


@torch.no_grad()
def _results_by_mask_threshold(
    model: torch.nn.Module,
    dataset: InstanceDataset,
    candidates: Sequence[float],
    progress: bool,
    agreements: Sequence[float] = (0.0,),
) -> dict[tuple[float, float], list[dict[str, Any]]]:
    """COCO results of ``dataset`` per ``(mask threshold, agreement power)``; the network
    runs once per image (with the model's ``tta``/``box_refine``; per factor of
    ``tta_scales``, the sets fused once per threshold and ranked per power) and only the
    post-processing reruns. Without ``tta_scales`` the power changes nothing: pass one."""
    from instseg.models.mask_rcnn import MaskRCNN
    from instseg.models.solov2 import SOLOv2

    if not isinstance(model, (MaskRCNN, SOLOv2)):
        raise TypeError(
            f"mask threshold calibration needs a Mask R-CNN or SOLOv2, got {type(model).__name__}"
        )
    device = next(model.parameters()).device
    was_training, original = model.training, model.mask_threshold
    model.eval()
    results: dict[tuple[float, float], list[dict[str, Any]]] = {
        (float(c), float(p)): [] for c in candidates for p in agreements
    }
    indices: Iterable[int] = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="calibrate", unit="img", dynamic_ncols=True)
    factors = model.tta_scales or (None,)  # None: the model's own scale, no fusion
    try:
        for i in indices:
            tensor = image_to_tensor(dataset.load_image(i)).float().div(255.0).to(device)
            image_id = dataset.images[i].id
            views: list[Callable[[float], Instances]] = []  # per scale: threshold -> Instances
            for f in factors:
                with scaled(model, f) if f is not None else contextlib.nullcontext():
                    views.append(_threshold_fn(model, tensor))
            for c in candidates:
                sets = [view(float(c)) for view in views]
                fused = fuse_clusters(sets) if len(sets) > 1 else None
                for p in agreements:
                    inst = sets[0] if fused is None else rank_fused(fused, p, model.max_detections)
                    coco = instances_to_coco(inst, image_id, dataset.label_to_cat_id)
                    results[float(c), float(p)].extend(coco)
    finally:
        model.mask_threshold = original
        model.train(was_training)
    return results


def _threshold_fn(model: Any, tensor: torch.Tensor) -> Callable[[float], Instances]:
    """Run the network of ``model`` (Mask R-CNN or SOLOv2, with its ``tta``/``box_refine``) on
    one image now -> a function that post-processes its outputs at a given mask threshold."""
    from instseg.models.mask_rcnn_tta import augmented_detections
    from instseg.models.solov2 import SOLOv2, to_instances
    from instseg.models.solov2_tta import augmented_outputs, postprocess_views

    if isinstance(model, SOLOv2):
        out = augmented_outputs(model, [tensor], model.tta)
        post = model.post_config()
        caches: list[dict[str, torch.Tensor]] = [{}]  # candidate probabilities, kept
        return lambda c: to_instances(
            [tensor], postprocess_views(out, [tensor], replace(post, mask_threshold=c), caches)
        )[0]
    det, in_size, size = augmented_detections(model, tensor, model.tta, model.box_refine)

    def at(c: float) -> Instances:
        old = model.mask_threshold
        model.mask_threshold = c
        try:
            return model._postprocess(det, in_size, size, 32)
        finally:
            model.mask_threshold = old

    return at


def _f1_by_cutoff(
    gt: dict[str, Any], results: list[dict[str, Any]], candidates: Sequence[float], iou: float
) -> dict[float, float]:
    from instseg.evaluation.matching_dataset import evaluate_coco_matching

    f1 = {}
    for c in candidates:
        rep = evaluate_coco_matching(
            gt, results, thresholds=(iou,), score_threshold=float(c), semantic=False
        )
        f1[float(c)] = rep.at(iou).f1
    return f1


def choose_mask_threshold(
    model: torch.nn.Module,
    dataset: InstanceDataset,
    candidates: Sequence[float] | None = None,
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """``(best threshold, {threshold: segm AP})`` of a Mask R-CNN or SOLOv2 on ``dataset``'s
    images (COCO segm AP, our evaluator; ties go to the candidate nearest 0.5; default
    candidates :data:`MASK_CANDIDATES`). The model's own ``mask_threshold`` is left
    unchanged. SOLOv2's threshold also shapes its candidates (areas, maskness, Matrix NMS),
    so its post-processing reruns per candidate on the same network outputs."""
    found = choose_thresholds(model, dataset, candidates, None, progress=progress)
    return found.mask_threshold, found.ap


def choose_thresholds(
    model: torch.nn.Module,
    dataset: InstanceDataset,
    mask_candidates: Sequence[float] | None = None,
    score_candidates: Sequence[float] | None = SCORE_CANDIDATES,
    iou: float = 0.5,
    progress: bool = False,
    agreement_candidates: Sequence[float] | None = None,
) -> Thresholds:
    """One network pass per image for all choices (:class:`Thresholds`): the mask threshold
    and, with ``tta_scales``, the agreement power (``agreement_candidates``, default
    :data:`~instseg.inference.fusion.AGREEMENT_CANDIDATES`) by segm AP, jointly; then the
    cut-off as :func:`choose_score_threshold` on the predictions at those
    (``score_candidates=None``: no cut-off, ``None, {}``). Ties go to the threshold nearest
    0.5, then to the smaller power. The model's own settings are left unchanged."""
    if mask_candidates is None:
        from instseg.models.solov2 import SOLOv2

        mask_candidates = MASK_CANDIDATES["solov2" if isinstance(model, SOLOv2) else "maskrcnn"]
    if not mask_candidates or any(not 0.0 < float(c) < 1.0 for c in mask_candidates):
        raise ValueError(
            f"mask threshold candidates must lie in (0, 1), got {list(mask_candidates)}"
        )
    if score_candidates is not None:
        _check_score_candidates(score_candidates, dataset)
    elif len(dataset) == 0:
        raise ValueError("calibration needs at least one labelled image")
    if not getattr(model, "tta_scales", ()):  # one view per image: the power is moot
        agreement_candidates = (float(getattr(model, "tta_agreement", 0.0)),)
    elif agreement_candidates is None:
        agreement_candidates = AGREEMENT_CANDIDATES
    if not agreement_candidates or any(not float(p) >= 0.0 for p in agreement_candidates):
        raise ValueError(f"agreement candidates must be >= 0, got {list(agreement_candidates)}")
    results = _results_by_mask_threshold(
        model, dataset, mask_candidates, progress, agreement_candidates
    )
    gt = dataset.to_coco()
    ap = {key: coco_summary(gt, res, "segm")["AP"] for key, res in results.items()}
    best, power = max(ap, key=lambda k: (round(ap[k], 6), -abs(k[0] - 0.5), -k[1]))
    by_threshold = {c: v for (c, p), v in ap.items() if p == power}
    by_power = {p: v for (c, p), v in ap.items() if c == best}
    if score_candidates is None:
        return Thresholds(best, by_threshold, None, {}, power, by_power)
    f1 = _f1_by_cutoff(gt, results[best, power], score_candidates, iou)
    return Thresholds(best, by_threshold, _best(f1), f1, power, by_power)


def choose_score_threshold(
    model: torch.nn.Module,
    dataset: InstanceDataset,
    candidates: Sequence[float] = SCORE_CANDIDATES,
    iou: float = 0.5,
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """``(best cut-off, {cut-off: F1})``: the score cut-off whose detections (score >= cut-off)
    give the best F1 at IoU ``iou`` on ``dataset`` (one-to-one matching, as
    ``instseg eval``'s F1); ties go to the candidate nearest 0.5. Any model with ``predict``;
    the network runs once per image. Use images that are not the evaluation set (e.g. every
    third training image): models whose scores come from a focal loss (SOLOv2) score true
    objects lower than a softmax classifier does, so a fixed 0.5 under-counts them."""
    from instseg.engine.evaluate import predict_dataset

    _check_score_candidates(candidates, dataset)
    results = predict_dataset(model, dataset, progress=progress)
    f1 = _f1_by_cutoff(dataset.to_coco(), results, candidates, iou)
    return _best(f1), f1


def apply_inference_options(
    model: torch.nn.Module,
    tta: str | None = None,
    box_refine: int | None = None,
    mask_threshold: float | None = None,
    calibrate: str | None = None,
    data_format: str | None = None,
    images_dir: str | None = None,
    *,
    tta_scales: Sequence[float] | None = None,
    tta_agreement: float | None = None,
) -> Calibration | None:
    """Set a loaded model's inference options (``None`` keeps the model's own); with
    ``calibrate`` (a labelled dataset in any format, not the evaluation set) choose the mask
    threshold on it after ``tta``/``box_refine`` are set (it becomes the model's), and in the
    same pass the F1-best score cut-off (:func:`choose_thresholds`; the caller decides where
    to apply it: ``instseg predict`` filters its outputs with it unless ``--score-threshold``
    is given). ``tta_scales``: factors of a fixed-scale model's ``input_scale`` for scale
    TTA (:mod:`instseg.inference.fusion`; ``()`` turns it off), ``tta_agreement`` the power
    of its step 4 (``calibrate`` chooses it when scales are set). Returns the :class:`Calibration`, else ``None``. Errors
    (:class:`~instseg.errors.InstsegError`) name the option and the model."""
    from instseg.errors import InstsegError
    from instseg.models.mask_rcnn import MaskRCNN
    from instseg.models.solov2 import SOLOv2

    name = type(model).__name__
    if box_refine is not None and not isinstance(model, MaskRCNN):
        raise InstsegError(f"--box-refine: Mask R-CNN models only, got {name}")
    if (tta is not None or tta_scales or calibrate) and not isinstance(model, (MaskRCNN, SOLOv2)):
        raise InstsegError(
            f"--tta/--tta-scales/--calibrate: Mask R-CNN or SOLOv2 models only, got {name}"
        )
    if tta is not None and not isinstance(model, SOLOv2):
        from instseg.models.ops import TRANSPOSED

        if tta in TRANSPOSED:
            raise InstsegError(f"--tta {tta}: transposed views are SOLOv2-only, got {name}")
    if box_refine is not None and box_refine < 0:
        raise InstsegError(f"--box-refine must be >= 0, got {box_refine}")
    if tta_agreement is not None and not tta_agreement >= 0.0:
        raise InstsegError(f"--tta-agreement must be >= 0, got {tta_agreement}")
    if mask_threshold is not None and not 0.0 < mask_threshold < 1.0:
        raise InstsegError(f"--mask-threshold must lie in (0, 1), got {mask_threshold}")
    if tta_scales is not None:
        from instseg.inference.fusion import check_scales, scaled

        try:
            factors = check_scales(tta_scales)
            if factors:
                with scaled(model, 1.0):  # raises for short-side (min_size) models
                    pass
        except ValueError as e:
            raise InstsegError(f"--tta-scales: {e}") from None
    m: Any = model  # a MaskRCNN, or any model with a mask_threshold attribute
    if tta_scales is not None:
        m.tta_scales = factors
    if tta_agreement is not None:
        m.tta_agreement = float(tta_agreement)
    if tta is not None:
        m.tta = tta
    if box_refine is not None:
        m.box_refine = int(box_refine)
    if mask_threshold is not None:
        m.mask_threshold = float(mask_threshold)
    if not calibrate:
        return None
    from instseg.data.formats import load_dataset

    dataset = load_dataset(calibrate, format=data_format, images_dir=images_dir)
    if len(dataset.categories) != m.num_classes:
        from instseg.errors import DataError

        raise DataError(
            calibrate, "categories",
            f"--calibrate: dataset has {len(dataset.categories)} classes, model has {m.num_classes}",
        )  # fmt: skip
    found = choose_thresholds(model, dataset, progress=sys.stderr.isatty())
    cut = found.score_cutoff
    assert cut is not None
    m.mask_threshold, m.tta_agreement = found.mask_threshold, found.agreement
    shown = ", ".join(f"{c:g}: {v:.4f}" for c, v in found.ap.items())
    best = found.mask_threshold
    print(f"calibrated mask threshold {best:g} on {calibrate} (segm AP {shown})", file=sys.stderr)
    if m.tta_scales:
        shown = ", ".join(f"{p:g}: {v:.4f}" for p, v in found.agreement_ap.items())
        print(
            f"calibrated scale-TTA agreement power {found.agreement:g} on {calibrate} "
            f"(segm AP {shown})", file=sys.stderr,
        )  # fmt: skip
    shown = ", ".join(f"{c:g}: {v:.3f}" for c, v in found.f1.items())
    print(f"calibrated score cut-off {cut:g} on {calibrate} (F1@0.5 {shown})", file=sys.stderr)
    return Calibration(best, cut, found.agreement)


def apply_inference_args(model: torch.nn.Module, args: Any) -> Calibration | None:
    """:func:`apply_inference_options` from the CLI's ``--tta --tta-scales --tta-agreement
    --box-refine --mask-threshold --calibrate`` (``instseg.cli.common.add_inference_arguments``;
    missing ones are ``None``)."""
    names = ("tta", "box_refine", "mask_threshold", "calibrate")
    return apply_inference_options(
        model,
        *(getattr(args, k, None) for k in names),
        tta_scales=getattr(args, "tta_scales", None),
        tta_agreement=getattr(args, "tta_agreement", None),
    )
