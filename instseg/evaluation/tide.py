"""Error breakdown in the spirit of TIDE (Bolya et al., ECCV 2020), on COCO dicts.

Each detection is matched as COCO does at IoU ``pos`` (0.5): per category, in descending
score order, to the unmatched non-crowd GT of highest IoU >= ``pos``. A detection that does
not match but lies in a crowd region of its class (crowd IoU >= ``pos``) is ignored, as COCO
ignores it. Every other detection is a false positive, classified in TIDE's order:

1. ``Loc``:  best same-class GT IoU in [bg, pos)          -> fix: take that GT's mask / box
2. ``Cls``:  a GT of another class with IoU >= pos         -> fix: take that GT's class
3. ``Dupe``: a same-class GT with IoU >= pos, already matched -> fix: remove the detection
4. ``Bkg``:  IoU < bg with every GT                         -> fix: remove the detection
5. ``Both``: anything else (wrong class and poorly localized) -> fix: remove the detection

``Miss``: GT neither matched nor the target of a ``Cls``/``Loc`` error -> fix: remove the GT.
Only one error can be fixed per GT (the highest-scoring ``Cls``/``Loc`` error targeting an
unmatched GT); the others, and those targeting an already matched GT, are removed instead.
``bg`` is 0.1. dAP of an error type = AP with only that type fixed - AP as is, from the COCO
evaluator; fixing every type at once gives AP50 = 1 (the oracle).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from instseg import masks as mask_codec

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")


@dataclass
class ErrorAssignment:
    """Per-detection outcome (index into the detection list) and missed GT ids."""

    outcome: list[str]  # "TP", "ignored", or one of ERROR_TYPES[:5]
    target_gt: list[int | None]  # GT annotation id a Cls/Loc error points at
    fixable: list[bool]  # the Cls/Loc error that gets fixed for its GT
    missed: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {t: 0 for t in ERROR_TYPES}
        for o in self.outcome:
            if o in out:
                out[o] += 1
        out["Miss"] = len(self.missed)
        return out


def _geometry(obj: dict[str, Any], iou_type: str, h: int, w: int) -> Any:
    if iou_type == "bbox":
        return [float(v) for v in obj["bbox"]]
    return mask_codec.to_compressed(mask_codec.segmentation_to_rle(obj["segmentation"], h, w))


def _iou(dts: list[Any], gts: list[Any], crowd: list[int], iou_type: str) -> np.ndarray:
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    if iou_type == "bbox":
        d, g = np.asarray(dts, dtype=np.float64), np.asarray(gts, dtype=np.float64)
        return np.asarray(mask_utils.iou(d, g, crowd)).reshape(len(dts), len(gts))
    return np.asarray(mask_utils.iou(dts, gts, crowd)).reshape(len(dts), len(gts))


def assign_errors(
    gt: dict[str, Any], dts: list[dict[str, Any]], iou_type: str = "segm", pos: float = 0.5, bg: float = 0.1
) -> ErrorAssignment:
    """Classify every detection of ``dts`` against the COCO GT dict ``gt`` (see module doc)."""
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in gt["images"]}
    gts_by_img: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for a in gt["annotations"]:
        gts_by_img[a["image_id"]].append(a)
    dts_by_img: dict[Any, list[int]] = defaultdict(list)
    for k, d in enumerate(dts):
        dts_by_img[d["image_id"]].append(k)
    n = len(dts)
    outcome = ["TP"] * n
    target: list[int | None] = [None] * n
    fixable = [False] * n
    missed: list[int] = []
    for img_id in set(gts_by_img) | set(dts_by_img):
        h, w = sizes[img_id]
        anns = gts_by_img.get(img_id, [])
        normal = [a for a in anns if not a.get("iscrowd", 0)]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        didx = sorted(dts_by_img.get(img_id, []), key=lambda k: -float(dts[k]["score"]))
        dgeo = [_geometry(dts[k], iou_type, h, w) for k in didx]
        iou = _iou(dgeo, [_geometry(a, iou_type, h, w) for a in normal], [0] * len(normal), iou_type)
        ciou = _iou(dgeo, [_geometry(a, iou_type, h, w) for a in crowd], [1] * len(crowd), iou_type)
        g_cls = np.array([a["category_id"] for a in normal])
        c_cls = np.array([a["category_id"] for a in crowd])
        used = np.zeros(len(normal), dtype=bool)
        fps: list[int] = []
        for row, k in enumerate(didx):
            same = g_cls == dts[k]["category_id"]
            cand = np.where(same & ~used, iou[row], -1.0)
            if cand.size and cand.max() >= pos:
                used[int(cand.argmax())] = True
                continue
            if ciou.size and np.any((c_cls == dts[k]["category_id"]) & (ciou[row] >= pos)):
                outcome[k] = "ignored"
                continue
            fps.append(row)
        best: dict[int, tuple[float, int]] = {}  # GT index -> (score, detection index)
        for row in fps:
            k = didx[row]
            same = g_cls == dts[k]["category_id"]
            cls_iou = np.where(same, iou[row], 0.0)
            other_iou = np.where(~same, iou[row], 0.0)
            used_cls = np.where(same & used, iou[row], 0.0)
            kind, gi = "Both", -1
            if cls_iou.size and bg <= cls_iou.max() < pos:
                kind, gi = "Loc", int(cls_iou.argmax())
            elif other_iou.size and other_iou.max() >= pos:
                kind, gi = "Cls", int(other_iou.argmax())
            elif used_cls.size and used_cls.max() >= pos:
                kind = "Dupe"
            elif not iou[row].size or iou[row].max() < bg:
                kind = "Bkg"
            outcome[k] = kind
            if gi >= 0:
                target[k] = int(normal[gi]["id"])
                if not used[gi]:
                    score = float(dts[k]["score"])
                    if gi not in best or score > best[gi][0]:
                        best[gi] = (score, k)
        for _, k in best.values():
            fixable[k] = True
        for gi, a in enumerate(normal):
            if not used[gi] and gi not in best:
                missed.append(int(a["id"]))
    return ErrorAssignment(outcome, target, fixable, missed)


def apply_fixes(
    gt: dict[str, Any],
    dts: list[dict[str, Any]],
    errors: ErrorAssignment,
    fix: set[str] | frozenset[str],
    iou_type: str = "segm",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Copies of ``(gt, dts)`` with the error types in ``fix`` oracle-fixed (see module doc)."""
    anns = {a["id"]: a for a in gt["annotations"]}
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in gt["images"]}
    out_dts: list[dict[str, Any]] = []
    for k, d in enumerate(dts):
        kind = errors.outcome[k]
        if kind not in fix:
            out_dts.append(d)
            continue
        if kind in ("Cls", "Loc") and errors.fixable[k]:
            g = anns[errors.target_gt[k]]  # type: ignore[index]
            nd = {key: v for key, v in d.items() if key not in ("area", "bbox", "segmentation")}
            if kind == "Cls":
                nd.update({key: d[key] for key in ("bbox", "segmentation") if key in d})
                nd["category_id"] = g["category_id"]
            elif iou_type == "bbox":
                nd["bbox"] = list(g["bbox"])
            else:
                h, w = sizes[g["image_id"]]
                nd["segmentation"] = mask_codec.segmentation_to_rle(g["segmentation"], h, w)
                if "bbox" in d:  # results that carry boxes keep them (the loader needs all or none)
                    nd["bbox"] = [float(v) for v in mask_codec.rle_boxes_xywh([nd["segmentation"]])[0]]
            out_dts.append(nd)
        # every other error in ``fix`` is removed
    out_gt = gt
    if "Miss" in fix and errors.missed:
        drop = set(errors.missed)
        out_gt = copy.copy(gt)
        out_gt["annotations"] = [a for a in gt["annotations"] if a["id"] not in drop]
    return out_gt, out_dts
