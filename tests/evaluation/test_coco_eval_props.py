"""Property tests: instseg.evaluation.evaluate vs pycocotools COCOeval on random cases.

Each case: a few small images (16..64 px), random categories (non-contiguous ids), ground
truth as polygons / boxes / uncompressed-RLE crowds with ``area`` fields on and next to the
32^2 / 96^2 borders, detections as RLEs, boxes or both (loadRes' modes), scores with many
ties, detections on images without ground truth and images with ground truth but no
detections, ground-truth id 0. The 12 stats must be equal (==), precision / recall /
scores within 1e-12.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.evaluation import evaluate

BORDER_AREAS = [1024.0, 1023.0, 1025.0, 9216.0, 9215.5, 9216.5, 0.0, 1e10]


def _rle_str(rle: dict) -> dict:
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, change, flat.size]).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def make_case(rng: np.random.Generator, knobs: dict) -> tuple[dict, list]:
    """Random ground truth dict and results list (see module docstring)."""
    n_img, n_cat = knobs["n_img"], knobs["n_cat"]
    cat_ids = sorted(rng.choice(np.arange(1, 30), n_cat, replace=False).tolist())
    images, anns, dets = [], [], []
    next_id = knobs["first_gt_id"]
    scores = np.array([0.1, 0.5, 0.5, 0.9, 1.0]) if knobs["ties"] else None
    for i in range(n_img):
        h, w = int(rng.integers(16, 65)), int(rng.integers(16, 65))
        img_id = int(rng.integers(1, 1000)) * 1000 + i
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{i}.png"})
        objs = []
        for _ in range(int(rng.integers(0, knobs["max_gt"] + 1))):
            x0, y0 = rng.uniform(-2, w - 2), rng.uniform(-2, h - 2)
            bw, bh = rng.uniform(0.5, w - x0 + 2), rng.uniform(0.5, h - y0 + 2)
            if objs and rng.random() < knobs["p_dup"]:  # identical copy: IoU ties between gts
                poly, (x0, y0, bw, bh), _ = objs[-1]
            elif rng.random() < 0.5:
                poly = [x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]
            else:
                k = int(rng.integers(3, 8))
                poly = np.stack([x0 + rng.uniform(0, bw, k), y0 + rng.uniform(0, bh, k)], 1).ravel().tolist()
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
            crowd = int(rng.random() < knobs["p_crowd"])
            segm: Any = [poly]
            if crowd and rng.random() < 0.7:
                segm = _uncompressed(mask_utils.decode(rle))
            r = rng.random()
            area = float(mask_utils.area(rle)) if r < 0.5 else float(rng.choice(BORDER_AREAS)) if r < 0.8 else bw * bh
            cat = int(rng.choice(cat_ids))
            ann = {"id": next_id, "image_id": img_id, "category_id": cat, "iscrowd": crowd,
                   "area": area, "bbox": [x0, y0, bw, bh], "segmentation": segm}
            if rng.random() < 0.1:
                ann["ignore"] = 1  # overwritten by iscrowd in pycocotools
            next_id += 1
            anns.append(ann)
            objs.append((poly, [x0, y0, bw, bh], cat))
        n_dt = int(rng.integers(0, knobs["max_dt"] + 1))
        for _ in range(n_dt):
            if dets and dets[-1]["image_id"] == img_id and rng.random() < knobs["p_dup"]:
                dets.append(copy.deepcopy(dets[-1]))  # identical detection and score
                continue
            if objs and rng.random() < 0.7:
                poly, box, cat = objs[int(rng.integers(len(objs)))]
                sx, sy = rng.normal(0, 1.5, 2)
                poly = [v + (sx if j % 2 == 0 else sy) + rng.normal(0, 0.7) for j, v in enumerate(poly)]
                box = [box[0] + sx, box[1] + sy, max(box[2] + rng.normal(0, 1), 0.5), max(box[3] + rng.normal(0, 1), 0.5)]
                if rng.random() < 0.15:
                    cat = int(rng.choice(cat_ids))
            else:
                side = float(rng.choice([31.5, 32.0, 32.5, 8.0])) if rng.random() < 0.3 else rng.uniform(1, 30)
                x0, y0 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
                box = [x0, y0, side, side * rng.choice([1.0, 0.5])]
                poly = [x0, y0, x0 + box[2], y0, x0 + box[2], y0 + box[3], x0, y0 + box[3]]
                cat = int(rng.choice(cat_ids))
            score = float(rng.choice(scores)) if scores is not None else float(np.round(rng.random(), 3))
            d: dict[str, Any] = {"image_id": img_id, "category_id": cat, "score": score}
            fmt = knobs["det_format"]
            if fmt in ("rle", "both"):
                d["segmentation"] = _rle_str(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))
            if fmt in ("bbox", "both"):
                d["bbox"] = [float(v) for v in box]
            dets.append(d)
    # shuffle detections across images (pycocotools groups by image; ties keep file order)
    order = rng.permutation(len(dets)) if knobs["shuffle"] else np.arange(len(dets))
    dets = [dets[i] for i in order]
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, dets


def oracle(gt: dict, dets: list, iou_type: str, **params: Any) -> COCOeval:
    """pycocotools on deep copies; an empty results list bypasses loadRes (which crashes)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        if dets:
            res = coco.loadRes(copy.deepcopy(dets))
        else:
            res = COCO()
            res.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            res.createIndex()
        E = COCOeval(coco, res, iou_type)
        for key, value in params.items():
            setattr(E.params, key, value)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def assert_same(E: COCOeval, gt: dict, dets: list, iou_type: str, **kw: Any) -> None:
    res = evaluate(gt, dets, iou_type, **kw)
    assert np.array_equal(res.stats, np.asarray(E.stats)), (res.stats, E.stats)
    for name in ("precision", "recall", "scores"):
        ours, ref = getattr(res, name), E.eval[name]
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max(initial=0) <= 1e-12, name


KNOBS = st.fixed_dictionaries(
    {
        "n_img": st.integers(1, 5),
        "n_cat": st.integers(1, 8),
        "max_gt": st.integers(0, 8),
        "max_dt": st.integers(0, 14),
        "p_crowd": st.sampled_from([0.0, 0.2, 0.5]),
        "ties": st.booleans(),
        "shuffle": st.booleans(),
        "first_gt_id": st.sampled_from([0, 1, 7]),
        "det_format": st.sampled_from(["rle", "bbox", "both"]),
        "p_dup": st.sampled_from([0.0, 0.3]),
    }
)
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@SETTINGS
@given(knobs=KNOBS, seed=st.integers(0, 2**32 - 1))
def test_segm_matches_pycocotools(knobs: dict, seed: int) -> None:
    gt, dets = make_case(np.random.default_rng(seed), knobs)
    assert_same(oracle(gt, dets, "segm"), gt, dets, "segm")


@SETTINGS
@given(knobs=KNOBS, seed=st.integers(0, 2**32 - 1))
def test_bbox_matches_pycocotools(knobs: dict, seed: int) -> None:
    knobs = {**knobs, "det_format": "rle" if knobs["det_format"] == "rle" and seed % 3 == 0 else "bbox"}
    gt, dets = make_case(np.random.default_rng(seed), knobs)
    assert_same(oracle(gt, dets, "bbox"), gt, dets, "bbox")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    knobs=KNOBS,
    seed=st.integers(0, 2**32 - 1),
    iou_type=st.sampled_from(["segm", "bbox"]),
    max_dets=st.sampled_from([[1, 10, 100], [1, 2, 3], [2, 5, 8]]),
    use_cats=st.booleans(),
    subset=st.booleans(),
)
def test_params_match_pycocotools(
    knobs: dict, seed: int, iou_type: str, max_dets: list, use_cats: bool, subset: bool
) -> None:
    """maxDets truncation, useCats=0, and imgIds / catIds restrictions."""
    gt, dets = make_case(np.random.default_rng(seed), knobs)
    params: dict[str, Any] = {"maxDets": max_dets, "useCats": int(use_cats)}
    kw: dict[str, Any] = {"max_dets": max_dets, "use_cats": use_cats}
    if subset:
        img_ids = [im["id"] for im in gt["images"]][::2]
        cat_ids = [c["id"] for c in gt["categories"]][:2]
        params.update(imgIds=img_ids, catIds=cat_ids)
        kw.update(img_ids=img_ids, cat_ids=cat_ids)
    assert_same(oracle(gt, dets, iou_type, **params), gt, dets, iou_type, **kw)
