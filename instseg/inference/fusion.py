"""Fusing several prediction sets of one image into one (multi-scale test-time augmentation).

Flip TTA can average a model's outputs cell by cell or RoI by RoI because a flipped image has
the same cells and boxes; an image seen at another input scale does not (SOLOv2's grids and
FPN levels, Mask R-CNN's proposals all change), so scale TTA fuses *instances*, the way
weighted boxes fusion (Solovyev et al., 2021) fuses boxes of an ensemble:

1. pool the detections of all ``V`` views and walk them best score first;
2. each joins the cluster whose leader (its best detection) it overlaps most, if that mask
   IoU is >= ``iou`` (COCO's, via pycocotools RLEs), the label is the same and the cluster
   holds no detection of the same view yet; otherwise it leads a new cluster;
3. a cluster's mask is the score-weighted vote of its members' masks (pixels >= ``vote``),
   its score the sum of its members' scores over ``V``: an object that only one view of
   three found keeps a third of its score;
4. with ``agreement`` ``p > 0`` that score is multiplied by ``a ** p``, ``a`` the mean mask
   IoU of the members with the fused mask (1 for a cluster of one): views that disagree on
   an object's outline mark an uncertain mask, and COCO AP rewards ranking those lower.
   Calibration (:mod:`.calibrate`) chooses ``p`` among :data:`AGREEMENT_CANDIDATES`.

:class:`~instseg.inference.tta.ScaleTTA` produces the views and calls :func:`fuse_instances`.

Masks are bool ``(N, H, W)`` in the image's own pixels; boxes xyxy (x2/y2 exclusive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pycocotools.mask as mask_utils
import torch

from instseg.masks import encode
from instseg.masks import masks_to_boxes as mask_boxes
from instseg.structures import Instances

__all__ = [
    "AGREEMENT_CANDIDATES",
    "FUSION_IOU",
    "Fused",
    "fuse_clusters",
    "fuse_instances",
    "rank_fused",
]

#: mask IoU at which detections of different views are taken for one object
FUSION_IOU = 0.6

#: agreement powers ``p`` tried by calibration (0: the members' score sum alone)
AGREEMENT_CANDIDATES = (0.0, 1.0, 2.0, 4.0)


def _rles(masks: torch.Tensor, chunk: int = 64) -> list[dict]:
    """bool ``(N, H, W)`` -> COCO RLEs (:func:`instseg.masks.encode`, ``chunk`` masks at a
    time so its uint8 copy stays small)."""
    return [r for i in range(0, masks.shape[0], chunk) for r in encode(masks[i : i + chunk].numpy())]


def _clusters(
    ious: np.ndarray, views: np.ndarray, labels: np.ndarray, iou: float
) -> list[list[int]]:
    """Greedy clustering of detections already sorted best first: ``ious (N, N)``, their view
    and label ``(N,)`` each -> member indices per cluster (the leader first)."""
    clusters: list[list[int]] = []
    leaders: list[int] = []
    seen: list[set[int]] = []  # views present in each cluster
    for i in range(len(views)):
        best, best_iou = -1, 0.0
        if leaders:
            lead = np.asarray(leaders)
            cand = ious[i, lead]
            for c in np.flatnonzero(cand >= iou).tolist():
                ok = labels[lead[c]] == labels[i] and int(views[i]) not in seen[c]
                if ok and (best < 0 or cand[c] > best_iou):
                    best, best_iou = c, float(cand[c])
        if best < 0:
            clusters.append([i])
            leaders.append(i)
            seen.append({int(views[i])})
        else:
            clusters[best].append(i)
            seen[best].add(int(views[i]))
    return clusters


class Fused(NamedTuple):
    """Every cluster of :func:`fuse_clusters`, before ranking: ``scores`` the members' sum over
    the number of views, ``agreement`` their mean mask IoU with the fused mask (1 for one
    member), ``labels`` the leaders'; ``crops[i] = (y0, x0, mask)`` the fused bool mask inside
    its box (y0/x0 its top-left pixel)."""

    image_size: tuple[int, int]
    scores: torch.Tensor  # (N,) float
    agreement: torch.Tensor  # (N,) float in [0, 1]
    labels: torch.Tensor  # (N,) int64
    crops: list[tuple[int, int, torch.Tensor]]


def _check_sets(sets: Sequence[Instances]) -> None:
    if not sets:
        raise ValueError("fuse_instances needs at least one prediction set")
    size = sets[0].image_size
    for s in sets:
        if s.image_size != size:
            raise ValueError(f"prediction sets differ in image size: {s.image_size} vs {size}")
        if s.masks is None or s.scores is None:
            raise ValueError("fuse_instances needs masks and scores in every prediction set")


def fuse_clusters(sets: Sequence[Instances], iou: float = FUSION_IOU, vote: float = 0.5) -> Fused:
    """Steps 1-3 of the module docstring for the prediction sets of one image (same
    ``image_size``, with masks and scores): every cluster, unranked and uncapped."""
    _check_sets(sets)
    size = sets[0].image_size
    masks = torch.cat([s.masks.cpu() for s in sets if s.masks is not None]).bool()
    scores = torch.cat([s.scores.cpu() for s in sets if s.scores is not None]).float()
    labels = torch.cat([s.labels.cpu() for s in sets])
    views = torch.cat([torch.full((len(s),), v, dtype=torch.int64) for v, s in enumerate(sets)])
    if masks.shape[0] == 0:
        return Fused(size, scores, torch.ones(0), labels, [])
    order = scores.argsort(descending=True, stable=True)  # masks stay where they are
    rles = _rles(masks)
    ious = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)), dtype=np.float64)
    ious = ious.reshape(len(rles), len(rles))[np.ix_(order.numpy(), order.numpy())]
    groups = [
        order[members]
        for members in _clusters(ious, views[order].numpy(), labels[order].numpy(), iou)
    ]  # member indices into masks, the leader first
    boxes = mask_boxes(masks).round().long()
    agreement = torch.ones(len(groups))
    crops: list[tuple[int, int, torch.Tensor]] = []
    for k, g in enumerate(groups):
        # each cluster inside its members' union box (nothing outside it can reach its vote)
        x0, y0 = boxes[g, :2].min(0).values.tolist()
        x1, y1 = boxes[g, 2:].max(0).values.tolist()
        member = masks[g, y0:y1, x0:x1]
        if len(g) == 1:
            crops.append((y0, x0, member[0]))
            continue
        w = scores[g]
        fused = torch.einsum("n,nhw->hw", w, member.float()) >= vote * w.sum()
        inter = (member & fused).flatten(1).sum(1)
        union = (member | fused).flatten(1).sum(1).clamp(min=1)
        agreement[k] = (inter / union).mean()
        crops.append((y0, x0, fused))
    fused_scores = torch.stack([scores[g].sum() / len(sets) for g in groups])
    lead = torch.stack([g[0] for g in groups])
    return Fused(size, fused_scores, agreement, labels[lead], crops)


def rank_fused(fused: Fused, agreement: float = 0.0, max_detections: int = 100) -> Instances:
    """Step 4 and the cap: the ``max_detections`` best clusters by ``score * agreement **
    p`` (``p = agreement``), scores descending, masks pasted at image size."""
    scores = fused.scores * fused.agreement.pow(agreement) if agreement else fused.scores
    keep = scores.argsort(descending=True, stable=True)[:max_detections]
    out = torch.zeros(len(keep), *fused.image_size, dtype=torch.bool)
    for k, i in enumerate(keep.tolist()):
        y0, x0, crop = fused.crops[i]
        out[k, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return Instances(
        fused.image_size, boxes=mask_boxes(out), labels=fused.labels[keep], scores=scores[keep],
        masks=out,
    )  # fmt: skip


def fuse_instances(
    sets: Sequence[Instances],
    iou: float = FUSION_IOU,
    vote: float = 0.5,
    max_detections: int = 100,
    agreement: float = 0.0,
) -> Instances:
    """Fuse the prediction sets of one image (same ``image_size``, with masks and scores) into
    one (module docstring; ``agreement``: the power ``p`` of step 4), at most
    ``max_detections``, scores descending. One set is returned as it is."""
    if len(sets) == 1:
        _check_sets(sets)  # fuse_clusters checks the sets it fuses
        return sets[0]
    return rank_fused(fuse_clusters(sets, iou, vote), agreement, max_detections)
