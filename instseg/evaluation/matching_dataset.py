"""Matching metrics over a dataset: folders of label images, or COCO GT + COCO predictions.

``evaluate_matching(gt, pred)`` picks the route from its inputs:

- two folders: label images (8/16/32-bit PNG or TIFF, 0 = background) paired by file stem;
  a GT image without a prediction is a DataError, extra predictions are warned about.
  Two label image files are one such pair.
  Class-agnostic; no semantic view (label images carry no classes).
- a COCO instances file + a COCO results list (or a second COCO instances file whose image
  ids are the GT's): predictions with ``score < score_threshold`` (default 0.5; instances
  files without scores count as 1.0) are dropped, IoU is pycocotools' RLE IoU (iscrowd=0).
  Crowd GT is not matched; a prediction lying mostly (>= 50 % of its area) inside a crowd
  region of its class is dropped instead of being counted as a false positive.
  Matching is class-aware by default (a prediction matches only GT of its category), and
  the semantic view (per-class IoU, mIoU, see :mod:`instseg.evaluation.semantic`) is added.

Counts are summed over the dataset (see :mod:`instseg.evaluation.matching`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from instseg import masks as mask_codec
from instseg.data.coco import check_segmentation, read_json
from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
from instseg.data.io import read_label_image
from instseg.errors import DataError
from instseg.evaluation.matching import (
    DEFAULT_THRESHOLDS,
    MatchingStats,
    format_table,
    label_image_pairs,
    matching_stats,
    rle_iou,
    sum_stats,
)
from instseg.evaluation.semantic import IGNORE, SemanticAccumulator
from instseg.masks import paint_label_image

LABEL_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass
class MatchingReport:
    """Dataset matching metrics: ``stats`` summed over images, one per threshold."""

    thresholds: list[float]
    stats: list[MatchingStats]
    per_image: dict[str, list[MatchingStats]] = field(default_factory=dict)
    semantic: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def at(self, threshold: float) -> MatchingStats:
        """Summed stats at ``threshold`` (must be one of ``thresholds``)."""
        for s in self.stats:
            if abs(s.threshold - threshold) < 1e-9:
                return s
        raise KeyError(f"threshold {threshold} was not evaluated ({self.thresholds})")

    def to_dict(self, threshold: float) -> dict[str, Any]:
        """JSON-ready: the chosen threshold's ``precision recall f1 tp fp fn ...`` at top level,
        every threshold under ``"thresholds"``, the chosen threshold's counts of each image
        under ``"per_image"``, the semantic view under ``"semantic"``."""
        out: dict[str, Any] = {"iou_threshold": threshold, **self.at(threshold).to_dict()}
        out.pop("threshold")
        out["n_images"] = len(self.per_image)
        out["settings"] = self.settings
        out["thresholds"] = [s.to_dict() for s in self.stats]
        keys = ("tp", "fp", "fn", "precision", "recall", "f1", "panoptic_quality")
        out["per_image"] = {}
        for name, stats in self.per_image.items():
            d = next(x for x in stats if abs(x.threshold - threshold) < 1e-9).to_dict()
            out["per_image"][name] = {k: d[k] for k in keys}
        if self.semantic is not None:
            out["mIoU"] = self.semantic["mIoU"]
            out["semantic"] = self.semantic
        return out

    def table(self, chosen: float | None = None) -> str:
        """Threshold table, plus mIoU and per-class IoU when available."""
        text = format_table(self.stats, chosen)
        if self.semantic is not None:
            rows = [f"semantic view: mIoU {self.semantic['mIoU']:.4f} (object classes), "
                    f"{self.semantic['mIoU_with_background']:.4f} with background"]
            for name, v in self.semantic["class_iou"].items():
                if v is not None:
                    rows.append(f"  {name:<24} IoU {v:.4f}")
            text += "\n" + "\n".join(rows)
        return text


def _with_thresholds(thresholds: Sequence[float], extra: float | None) -> list[float]:
    ts = sorted({round(float(t), 6) for t in thresholds} | ({round(float(extra), 6)} if extra is not None else set()))
    for t in ts:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"IoU thresholds must be in (0, 1], got {t}")
    return ts


# -- label-image folders ---------------------------------------------------------------------
def _label_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES:
            if p.stem in files:
                raise DataError(folder, p.name, f"two label images share the stem '{p.stem}'")
            files[p.stem] = p
    return files


def _label_pair_stats(gpath: Path, ppath: Path, thresholds: list[float]) -> list[MatchingStats]:
    g, p = read_label_image(gpath), read_label_image(ppath)
    if g.shape != p.shape:
        raise DataError(ppath, None, f"size {p.shape[0]}x{p.shape[1]} differs from GT {g.shape[0]}x{g.shape[1]}")
    for arr, path in ((g, gpath), (p, ppath)):
        if arr.size and arr.min() < 0:
            raise DataError(path, None, "label image has negative values")
    pairs, _, _ = label_image_pairs(g, p)
    return matching_stats(pairs, thresholds)


def _evaluate_label_pair(gpath: Path, ppath: Path, thresholds: list[float]) -> MatchingReport:
    per_image = {gpath.stem: _label_pair_stats(gpath, ppath, thresholds)}
    return MatchingReport(thresholds, sum_stats(per_image.values()), per_image, None, {"input": "label images"})


def evaluate_label_folders(
    gt_dir: str | Path, pred_dir: str | Path, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> MatchingReport:
    """Match label images of ``gt_dir`` with those of ``pred_dir`` of the same stem."""
    gdir, pdir = Path(gt_dir), Path(pred_dir)
    gt_files, pred_files = _label_files(gdir), _label_files(pdir)
    if not gt_files:
        raise DataError(gdir, None, f"no label images ({', '.join(LABEL_SUFFIXES)}) in the folder")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise DataError(pdir, missing[0], f"no prediction for this GT label image ({len(missing)} missing)")
    extra = sorted(set(pred_files) - set(gt_files))
    if extra:
        warnings.warn(f"{pdir}: {len(extra)} prediction(s) without GT ignored (first: {extra[0]})", stacklevel=2)
    ts = list(thresholds)
    per_image: dict[str, list[MatchingStats]] = {}
    for stem, gpath in gt_files.items():
        per_image[stem] = _label_pair_stats(gpath, pred_files[stem], ts)
    return MatchingReport(ts, sum_stats(per_image.values()), per_image, None, {"input": "label images"})


# -- COCO ------------------------------------------------------------------------------------
def load_eval_gt(gt: str | Path | dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Validated COCO GT for evaluation: ``(raw dict, InstanceDataset)``.

    Like :func:`instseg.data.coco.parse_coco` but image files are not needed: every image
    entry must carry ``height`` and ``width``. Annotations without ``bbox``/``area`` get them
    from their masks (in the returned dict too).
    """
    src = str(gt) if isinstance(gt, (str, Path)) else "<gt>"
    data = read_json(gt) if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict):
        raise DataError(src, None, f"not a COCO instances file: top level is a {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(src, None, f"not a COCO instances file: '{key}' missing or not a list")
    cats: dict[Any, Category] = {}
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c:
            raise DataError(src, f"categories[{k}]", "category without 'id'")
        cats[c["id"]] = Category(int(c["id"]), str(c.get("name", c["id"])), str(c.get("supercategory", "")))
    recs: dict[Any, ImageRecord] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise DataError(src, f"images[{k}]", "image entry without 'id'")
        if not isinstance(im.get("height"), int) or not isinstance(im.get("width"), int):
            raise DataError(src, f"image id={im['id']}", "evaluation needs integer 'height' and 'width'")
        if im["id"] in recs:
            raise DataError(src, f"image id={im['id']}", "duplicate image id")
        name = str(im.get("file_name", im["id"]))
        recs[im["id"]] = ImageRecord(int(im["id"]), name, Path(name), im["height"], im["width"])
    anns_out = []
    for k, a in enumerate(data["annotations"]):
        item = f"annotation id={a['id']}" if isinstance(a, dict) and "id" in a else f"annotations[{k}]"
        if not isinstance(a, dict) or any(key not in a for key in ("id", "image_id", "category_id", "segmentation")):
            raise DataError(src, item, "annotation needs 'id', 'image_id', 'category_id' and 'segmentation'")
        if a["image_id"] not in recs:
            raise DataError(src, item, f"image_id {a['image_id']} is not in 'images'")
        if a["category_id"] not in cats:
            raise DataError(src, item, f"category_id {a['category_id']} is not declared in 'categories'")
        rec = recs[a["image_id"]]
        problem = check_segmentation(a["segmentation"], rec.height, rec.width)
        if problem:
            raise DataError(src, item, problem)
        ann = make_annotation(
            a["id"], a["image_id"], a["category_id"], a["segmentation"], rec.height, rec.width, int(a.get("iscrowd", 0))
        )
        ann.bbox = [float(v) for v in a.get("bbox", ann.bbox)]
        ann.area = float(a.get("area", ann.area))
        rec.annotations.append(ann)
        anns_out.append({**a, "bbox": ann.bbox, "area": ann.area, "iscrowd": ann.iscrowd})
    ds = InstanceDataset(list(recs.values()), list(cats.values()), src)
    return {**data, "annotations": anns_out}, ds


def load_predictions(pred: str | Path | list[dict[str, Any]] | dict[str, Any], gt_dataset: Any) -> list[dict[str, Any]]:
    """Validated prediction dicts (results list or instances file) with an ``rle`` added."""
    source = str(pred) if isinstance(pred, (str, Path)) else "<predictions>"
    data = read_json(pred) if isinstance(pred, (str, Path)) else pred
    if isinstance(data, dict):
        if not isinstance(data.get("annotations"), list):
            raise DataError(source, None, "predictions must be a COCO results list or a COCO instances file")
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(source, None, f"predictions must be a list, got {type(data).__name__}")
    images = {r.id: r for r in gt_dataset.images}
    out = []
    for k, d in enumerate(data):
        item = f"result {k}"
        if not isinstance(d, dict):
            raise DataError(source, item, "not an object")
        for key in ("image_id", "category_id", "segmentation"):
            if key not in d:
                msg = "has no 'segmentation' (matching metrics need masks)" if key == "segmentation" else f"missing '{key}'"
                raise DataError(source, item, msg)
        if d["image_id"] not in images:
            raise DataError(source, item, f"image_id {d['image_id']} is not in the GT file")
        if d["category_id"] not in gt_dataset.cat_id_to_label:
            raise DataError(source, item, f"category_id {d['category_id']} is not a GT category")
        score = d.get("score", 1.0)
        if not isinstance(score, (int, float)) or not np.isfinite(score):
            raise DataError(source, item, f"score {score!r} is not a finite number")
        rec = images[d["image_id"]]
        problem = check_segmentation(d["segmentation"], rec.height, rec.width)
        if problem:
            raise DataError(source, item, problem)
        rle = mask_codec.segmentation_to_rle(d["segmentation"], rec.height, rec.width)
        out.append({**d, "score": float(score), "rle": rle})
    return out


def evaluate_coco_matching(
    gt: str | Path | dict[str, Any],
    pred: str | Path | list[dict[str, Any]] | dict[str, Any],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    score_threshold: float = 0.5,
    class_aware: bool = True,
    semantic: bool = True,
) -> MatchingReport:
    """Matching metrics (and the semantic view) of COCO predictions against a COCO GT file."""
    gt_path = str(gt) if isinstance(gt, (str, Path)) else "<gt>"
    _, ds = load_eval_gt(gt)
    preds = load_predictions(pred, ds)
    by_image: dict[int, list[dict[str, Any]]] = {r.id: [] for r in ds.images}
    for d in preds:
        if d["score"] >= score_threshold:
            by_image[d["image_id"]].append(d)
    ts = list(thresholds)
    acc = SemanticAccumulator(len(ds.categories)) if semantic and ds.categories else None
    per_image: dict[str, list[MatchingStats]] = {}
    for rec in ds.images:
        h, w = rec.height, rec.width
        anns = rec.annotations
        g_rles = [a.rle(h, w) for a in anns]
        g_lab = np.array([ds.cat_id_to_label[a.category_id] for a in anns], dtype=np.int64)
        crowd = np.array([bool(a.iscrowd) for a in anns], dtype=bool)
        dts = by_image[rec.id]
        p_rles = [d["rle"] for d in dts]
        p_lab = np.array([ds.cat_id_to_label[d["category_id"]] for d in dts], dtype=np.int64)
        if crowd.any() and dts:
            inside = np.asarray(
                mask_utils.iou(
                    [mask_codec.to_compressed(r) for r in p_rles],
                    [mask_codec.to_compressed(g_rles[i]) for i in np.flatnonzero(crowd)],
                    [1] * int(crowd.sum()),
                )
            ).reshape(len(dts), -1)
            same = p_lab[:, None] == g_lab[crowd][None, :] if class_aware else np.ones_like(inside, dtype=bool)
            keep_p = ~((inside >= 0.5) & same).any(axis=1)
        else:
            keep_p = np.ones(len(dts), dtype=bool)
        gi = np.flatnonzero(~crowd)
        pi = np.flatnonzero(keep_p)
        iou = rle_iou([g_rles[i] for i in gi], [p_rles[i] for i in pi])
        if class_aware and iou.size:
            iou = np.where(g_lab[gi][:, None] == p_lab[pi][None, :], iou, 0.0)
        per_image[str(rec.id)] = matching_stats(iou, ts)
        if acc is not None:
            acc.update(
                _paint(g_rles, g_lab, np.ones(len(anns)), h, w, crowd, IGNORE),
                _paint(p_rles, p_lab, np.array([d["score"] for d in dts]), h, w, None, IGNORE),
            )
    if not per_image:
        raise DataError(gt_path, None, "the GT file has no images")
    settings = {"input": "coco", "score_threshold": score_threshold, "class_aware": class_aware}
    sem = acc.result(ds.class_names) if acc is not None else None
    return MatchingReport(ts, sum_stats(per_image.values()), per_image, sem, settings)


def _paint(
    rles: list[dict[str, Any]],
    labels: np.ndarray,
    scores: np.ndarray,
    h: int,
    w: int,
    crowd: np.ndarray | None,
    ignore: int,
) -> np.ndarray:
    """Semantic map from RLEs (ascending score, crowd -> ignore); see ``instances_to_semantic``."""
    if not rles:
        return np.zeros((h, w), dtype=np.int64)
    masks = mask_codec.decode(rles, h, w)
    is_crowd = np.zeros(len(rles), dtype=bool) if crowd is None else np.asarray(crowd, dtype=bool)
    shown = np.flatnonzero(~is_crowd)
    values = np.asarray(labels)[shown] + 1
    out = paint_label_image(
        (h, w), [masks[i] for i in shown], values, np.asarray(scores)[shown], dtype=np.int64
    )
    for i in np.flatnonzero(is_crowd):
        out[masks[i]] = ignore
    return out


def evaluate_matching(
    gt: str | Path,
    pred: str | Path,
    iou_threshold: float | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    score_threshold: float = 0.5,
    class_aware: bool = True,
) -> MatchingReport:
    """Folders of label images, or COCO files (see the module docstring); ``iou_threshold``
    is added to ``thresholds`` when missing."""
    g, p = Path(gt), Path(pred)
    for path in (g, p):
        if not path.exists():
            raise DataError(path, None, "no such file or folder")
    ts = _with_thresholds(thresholds, iou_threshold)
    if g.is_dir() and p.is_dir():
        return evaluate_label_folders(g, p, ts)
    if all(x.is_file() and x.suffix.lower() in LABEL_SUFFIXES for x in (g, p)):
        return _evaluate_label_pair(g, p, ts)
    if g.is_file() and p.is_file():
        return evaluate_coco_matching(g, p, ts, score_threshold, class_aware)
    raise DataError(p, None, "GT and predictions must both be folders (or files) of label images, or both COCO JSON files")
