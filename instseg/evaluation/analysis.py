"""Error analysis of COCO predictions: AP by object size and by occlusion, TIDE error breakdown.

``analyze(gt, dt, iou_type="segm") -> AnalysisResult``; ``.table()`` prints, ``.plot(dir)``
draws (matplotlib, Agg, imported lazily), ``.to_dict()`` is JSON-ready. Every AP comes from
the COCO evaluator :func:`instseg.evaluation.coco_eval.evaluate` (or ``evaluator=``).

**Occlusion** of a non-crowd GT object (crowd regions count as occluders, not as objects):

- ``boundary``: fraction of the object's boundary pixels (mask pixels with a 4-neighbour
  outside the mask) that lie on or next to (8-neighbourhood) another GT mask of the image;
- ``bbox``: fraction of the object's box covered by the union of the other GT boxes (tight
  boxes of the masks);
- ``occlusion = max(boundary, bbox)``; level ``none`` below 0.1, ``partial`` below 0.5,
  ``heavy`` from 0.5 (:data:`OCCLUSION_BINS`).

**AP per occlusion level** follows COCO's area ranges: GT of the other levels are *ignored*,
so a detection matched to them is ignored, not a false positive. pycocotools derives its
ignore flag from ``iscrowd`` (overwriting any ``ignore`` key), and ``iscrowd`` would also
change the matching (many-to-one, IoU over the detection's area), so neither is used;
instead the other levels' GT get ``area = 1e12``, beyond the "all" area range (0..1e10),
which is exactly COCO's mechanism for out-of-range GT. Unmatched detections stay false
positives in every level (occlusion is a property of GT only), so a level's AP also pays
for background detections. AP by size is COCO's own APs / APm / APl.

**Errors**: see :mod:`instseg.evaluation.tide`; dAP50 (TIDE's measure, IoU 0.5) and dAP
(0.5:0.95) are AP with one error type oracle-fixed minus AP as is, averaged over the
categories with GT as TIDE does (a category whose GT were all missed counts as 0 after the
``Miss`` fix while it has detections; see ``_tide_ap``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instseg import masks as mask_codec
from instseg.data.coco import read_json
from instseg.errors import DataError
from instseg.evaluation.coco_eval import evaluate
from instseg.evaluation.matching_dataset import load_eval_gt
from instseg.evaluation.tide import ERROR_TYPES, apply_fixes, assign_errors

#: (level, lower bound inclusive, upper bound exclusive) of ``occlusion``
OCCLUSION_BINS: tuple[tuple[str, float, float], ...] = (
    ("none", 0.0, 0.1),
    ("partial", 0.1, 0.5),
    ("heavy", 0.5, math.inf),
)
IGNORED_AREA = 1e12  # > COCO's largest area range bound 1e5**2
SIZE_RANGES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10))

Evaluator = Callable[..., Any]


def _default_evaluator() -> Evaluator:
    return evaluate  # type: ignore[no-any-return]


@dataclass
class Occlusion:
    """Occlusion measures of one GT annotation (see module doc)."""

    boundary: float
    bbox: float

    @property
    def score(self) -> float:
        return max(self.boundary, self.bbox)

    @property
    def level(self) -> str:
        return occlusion_level(self.score)


def occlusion_level(score: float) -> str:
    """``none`` / ``partial`` / ``heavy`` of an occlusion score, by :data:`OCCLUSION_BINS`."""
    for name, lo, hi in OCCLUSION_BINS:
        if lo <= score < hi:
            return name
    return OCCLUSION_BINS[-1][0]


def _box_cover(box: tuple[int, ...], others: list[tuple[int, ...]]) -> float:
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return 0.0
    cover = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for a0, b0, a1, b1 in others:
        cover[max(b0, y0) - y0 : max(min(b1, y1) - y0, 0), max(a0, x0) - x0 : max(min(a1, x1) - x0, 0)] = True
    return float(cover.mean())


def occlusion_levels(gt: dict[str, Any]) -> dict[int, Occlusion]:
    """Occlusion of every non-crowd annotation of a COCO GT dict, by annotation id."""
    from scipy import ndimage
    by_img: dict[Any, list[dict[str, Any]]] = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in gt["images"]}
    out: dict[int, Occlusion] = {}
    cross = ndimage.generate_binary_structure(2, 1)
    square = np.ones((3, 3), dtype=bool)
    for img_id, anns in by_img.items():
        h, w = sizes[img_id]
        rles = []
        for a in anns:
            if "segmentation" in a and a["segmentation"]:
                rles.append(mask_codec.segmentation_to_rle(a["segmentation"], h, w))
            else:  # box-only GT: its box is its mask
                x, y, bw, bh = a["bbox"]
                rles.append(mask_codec.from_polygons([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], h, w))
        masks = mask_codec.decode(rles, h, w)
        count = masks.sum(axis=0, dtype=np.int32)
        boxes = [tuple(int(v) for v in b) for b in mask_codec.masks_to_boxes(masks)]  # xyxy, exclusive
        for i, a in enumerate(anns):
            if a.get("iscrowd", 0):
                continue
            ys, xs = np.nonzero(masks[i])
            if ys.size == 0:
                out[int(a["id"])] = Occlusion(0.0, 0.0)
                continue
            y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, h)
            x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, w)
            m = masks[i, y0:y1, x0:x1]
            others = (count[y0:y1, x0:x1] - m) > 0
            edge = m & ~ndimage.binary_erosion(np.pad(m, 1), cross)[1:-1, 1:-1]
            touch = edge & ndimage.binary_dilation(others, square)
            bfrac = float(touch.sum() / max(edge.sum(), 1))
            cover = _box_cover(boxes[i], [b for j, b in enumerate(boxes) if j != i])
            out[int(a["id"])] = Occlusion(bfrac, cover)
    return out


@dataclass
class AnalysisResult:
    """Result of :func:`analyze`; every AP in [0, 1] (-1 where COCO has no GT to score)."""

    iou_type: str
    summary: dict[str, float]
    size: dict[str, dict[str, float]]
    occlusion: dict[str, dict[str, float]]
    errors: dict[str, dict[str, float]]
    oracle: dict[str, float]
    per_annotation: dict[int, Occlusion] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        """Plain-text tables: AP by size, AP by occlusion, TIDE errors."""
        s = self.summary
        lines = [f"{self.iou_type} AP {s['AP'] * 100:.2f}  AP50 {s['AP50'] * 100:.2f}  AP75 {s['AP75'] * 100:.2f}", ""]
        lines.append(f"{'size':<10}{'#GT':>7}{'AP':>9}")
        for name, v in self.size.items():
            lines.append(f"{name:<10}{int(v['n_gt']):>7}{_pct(v['AP']):>9}")
        lines += ["", f"{'occlusion':<10}{'#GT':>7}{'AP':>9}{'AP50':>9}"]
        for name, v in self.occlusion.items():
            lines.append(f"{name:<10}{int(v['n_gt']):>7}{_pct(v['AP']):>9}{_pct(v['AP50']):>9}")
        lines += ["", f"{'error':<10}{'count':>7}{'dAP50':>9}{'dAP':>9}"]
        for name, v in self.errors.items():
            lines.append(f"{name:<10}{int(v['count']):>7}{v['dAP50'] * 100:>9.2f}{v['dAP'] * 100:>9.2f}")
        lines.append(f"all errors fixed: AP50 {self.oracle['AP50'] * 100:.2f}  AP {self.oracle['AP'] * 100:.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (per-annotation occlusion keyed by annotation id)."""
        return {
            "iou_type": self.iou_type,
            "summary": self.summary,
            "size": self.size,
            "occlusion": self.occlusion,
            "errors": self.errors,
            "oracle": self.oracle,
            "occlusion_per_annotation": {
                str(k): {"boundary": o.boundary, "bbox": o.bbox, "level": o.level}
                for k, o in self.per_annotation.items()
            },
        }

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Bar charts of AP by size / occlusion and of dAP50 per error type; returns the PNG paths."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, (title, data) in zip(axes, (("AP by size", self.size), ("AP by occlusion", self.occlusion))):
            names = list(data)
            ticks = [f"{n}\n({int(data[n]['n_gt'])} GT)" for n in names]
            ax.bar(ticks, [max(data[n]["AP"], 0.0) * 100 for n in names], color="tab:blue")
            ax.set_title(title)
            ax.set_ylabel("AP")
            ax.set_ylim(0, 100)
        fig.tight_layout()
        p1 = out / "ap_by_size_occlusion.png"
        fig.savefig(p1, dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(self.errors)
        ax.bar(names, [self.errors[n]["dAP50"] * 100 for n in names], color="tab:red")
        ax.set_title(f"{self.iou_type} errors: AP50 gained if fixed (base {self.summary['AP50'] * 100:.1f})")
        ax.set_ylabel("dAP50")
        fig.tight_layout()
        p2 = out / "tide_errors.png"
        fig.savefig(p2, dpi=100)
        plt.close(fig)
        return [p1, p2]


def _pct(v: float) -> str:
    return f"{v * 100:.2f}" if v >= 0 else "-"


def _load(gt: dict[str, Any] | str | Path, dt: list[dict[str, Any]] | str | Path, iou_type: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validated raw COCO GT dict (with image sizes) and detection list."""
    gt_data, ds = load_eval_gt(gt)
    dt_src = str(dt) if not isinstance(dt, list) else "<detections>"
    dt_data = read_json(dt) if not isinstance(dt, list) else dt
    if not isinstance(dt_data, list):
        raise DataError(dt_src, None, "detections must be a COCO results list")
    images = {r.id: r for r in ds.images}
    need = "segmentation" if iou_type == "segm" else "bbox"
    out = []
    for k, d in enumerate(dt_data):
        if not isinstance(d, dict):
            raise DataError(dt_src, f"result {k}", "not an object")
        if need == "bbox" and "bbox" not in d and "segmentation" in d and d.get("image_id") in images:
            rec = images[d["image_id"]]  # box of the mask, as pycocotools' loadRes does
            rle = mask_codec.segmentation_to_rle(d["segmentation"], rec.height, rec.width)
            d = {**d, "bbox": [float(v) for v in mask_codec.rle_boxes_xywh([rle])[0]]}
        out.append(d)
        for key in ("image_id", "category_id", "score", need):
            if key not in d:
                raise DataError(dt_src, f"result {k}", f"missing '{key}' (iou_type {iou_type})")
        if d["image_id"] not in images:
            raise DataError(dt_src, f"result {k}", f"image_id {d['image_id']} is not in the GT file")
        if d["category_id"] not in ds.cat_id_to_label:
            raise DataError(dt_src, f"result {k}", f"category_id {d['category_id']} is not a GT category")
    return gt_data, out


def _ap(evaluator: Evaluator, gt: dict[str, Any], dts: list[dict[str, Any]], iou_type: str) -> np.ndarray:
    """COCO stats (12,) of ``dts``; no detections -> AP 0 (the evaluator needs at least one)."""
    if not dts:
        return np.zeros(12)
    return np.asarray(evaluator(gt, copy.deepcopy(dts), iou_type).stats, dtype=np.float64)


def _tide_ap(
    evaluator: Evaluator, gt: dict[str, Any], dts: list[dict[str, Any]], iou_type: str, cats: set[Any]
) -> np.ndarray:
    """``[AP, AP50]`` averaged over the categories ``cats`` that had GT before any fix.

    COCO drops a category without GT from the mean; after the ``Miss`` fix removed all of a
    category's GT, TIDE still counts it as AP 0 while it has detections, and drops it when it
    has none. That is done here from the evaluator's per-category ``precision`` (T, R, K, A, M),
    so the unfixed value equals COCO's AP / AP50.
    """
    if not dts:
        return np.zeros(2)
    res = evaluator(gt, copy.deepcopy(dts), iou_type)
    prec, ids = getattr(res, "precision", None), getattr(res, "cat_ids", None)
    if prec is None or ids is None:
        return np.asarray(res.stats[:2], dtype=np.float64)
    p = np.asarray(prec)[:, :, :, 0, -1]  # area "all", largest maxDets
    with_dets = {d["category_id"] for d in dts}
    vals = []
    for k, cid in enumerate(ids):
        if cid not in cats:
            continue
        if np.all(p[:, :, k] > -1):
            vals.append((p[:, :, k].mean(), p[0, :, k].mean()))
        elif cid in with_dets:
            vals.append((0.0, 0.0))
    return np.asarray(vals).mean(axis=0) if vals else np.zeros(2)


def analyze(
    gt: dict[str, Any] | str | Path,
    dt: list[dict[str, Any]] | str | Path,
    iou_type: str = "segm",
    evaluator: Evaluator | None = None,
) -> AnalysisResult:
    """AP by size and occlusion level, and the TIDE error breakdown (see module doc)."""
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    ev = evaluator or _default_evaluator()
    gt_data, dts = _load(gt, dt, iou_type)
    base = _ap(ev, gt_data, dts, iou_type)
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    summary = {k: float(v) for k, v in zip(keys, base)}
    normal = [a for a in gt_data["annotations"] if not a.get("iscrowd", 0)]
    size: dict[str, dict[str, float]] = {}
    for (name, lo, hi), key in zip(SIZE_RANGES, ("APs", "APm", "APl")):
        size[name] = {"AP": summary[key], "n_gt": float(sum(lo <= float(a["area"]) < hi for a in normal))}

    occ = occlusion_levels(gt_data)
    occlusion: dict[str, dict[str, float]] = {}
    for name, _, _ in OCCLUSION_BINS:
        anns = []
        n_gt = 0
        for a in gt_data["annotations"]:
            if a.get("iscrowd", 0) or occ[int(a["id"])].level == name:
                n_gt += 0 if a.get("iscrowd", 0) else 1
                anns.append(a)
            else:
                anns.append({**a, "area": IGNORED_AREA})
        stats = _ap(ev, {**gt_data, "annotations": anns}, dts, iou_type) if n_gt else np.full(12, -1.0)
        occlusion[name] = {"AP": float(stats[0]), "AP50": float(stats[1]), "n_gt": float(n_gt)}

    assignment = assign_errors(gt_data, dts, iou_type)
    counts = assignment.counts()
    cats = {a["category_id"] for a in normal}
    base_t = _tide_ap(ev, gt_data, dts, iou_type, cats)
    errors: dict[str, dict[str, float]] = {}
    for name in ERROR_TYPES:
        g2, d2 = apply_fixes(gt_data, dts, assignment, {name}, iou_type)
        fixed = _tide_ap(ev, g2, d2, iou_type, cats) if counts[name] else base_t
        errors[name] = {"count": float(counts[name]), "dAP50": float(fixed[1] - base_t[1]), "dAP": float(fixed[0] - base_t[0])}
    g2, d2 = apply_fixes(gt_data, dts, assignment, set(ERROR_TYPES), iou_type)
    oracle_ap = _tide_ap(ev, g2, d2, iou_type, cats)
    oracle = {"AP": float(oracle_ap[0]), "AP50": float(oracle_ap[1])}
    return AnalysisResult(iou_type, summary, size, occlusion, errors, oracle, occ)

