"""instseg.evaluation.evaluate: pycocotools parity on real COCO data, quirks, API, errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from instseg.errors import DataError
from instseg.evaluation import COCOResult, evaluate
from tests.conftest import data_path
from tests.evaluation.test_coco_eval_props import assert_same, oracle

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _coco_subset() -> dict:
    p = data_path("coco_val2017_subset10") / "annotations" / "instances_val2017_subset.json"
    return json.loads(p.read_text())


def _perturbed(gt: dict, iou_type: str, seed: int) -> list:
    """Jittered copies of the ground truth (class swaps, duplicates), plus false positives."""
    rng = np.random.default_rng(seed)
    imgs = {im["id"]: im for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        im = imgs[a["image_id"]]
        h, w = im["height"], im["width"]
        for _ in range(int(rng.integers(0, 3))):
            cat = a["category_id"] if rng.random() > 0.15 else int(rng.choice(cats))
            x, y, bw, bh = a["bbox"]
            j = rng.normal(0, 0.08 * max(bw, bh) + 0.5, 4)
            d = {"image_id": a["image_id"], "category_id": cat, "score": float(np.round(rng.random(), 2))}
            if iou_type == "bbox":
                d["bbox"] = [x + j[0], y + j[1], max(bw + j[2], 1.0), max(bh + j[3], 1.0)]
            else:
                if isinstance(a["segmentation"], list):
                    polys = [(np.asarray(p) + rng.normal(0, 1.5, len(p))).tolist() for p in a["segmentation"]]
                    rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
                else:
                    rle = mask_utils.frPyObjects(a["segmentation"], h, w)
                d["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            dets.append(d)
    for _ in range(40):
        iid = int(rng.choice(list(imgs)))
        im = imgs[iid]
        box = [rng.random() * im["width"] * 0.8, rng.random() * im["height"] * 0.8, 1 + 120 * rng.random(), 1 + 120 * rng.random()]
        d = {"image_id": iid, "category_id": int(rng.choice(cats)), "score": float(rng.random())}
        if iou_type == "bbox":
            d["bbox"] = box
        else:
            rle = mask_utils.frPyObjects(np.array([box]), im["height"], im["width"])[0]
            d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        dets.append(d)
    order = rng.permutation(len(dets))
    return [dets[i] for i in order]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_coco_subset_matches_pycocotools(iou_type: str, seed: int) -> None:
    gt = _coco_subset()
    assert any(a["iscrowd"] for a in gt["annotations"])  # the crowd RLE is exercised
    dets = _perturbed(gt, iou_type, seed)
    E = oracle(gt, dets, iou_type)
    assert_same(E, gt, dets, iou_type)
    assert E.stats[0] > 0.05  # a meaningful case, not all zeros


def test_paths_and_dicts_give_the_same_result(tmp_path: Path) -> None:
    gt = _coco_subset()
    dets = _perturbed(gt, "segm", 5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    a = evaluate(tmp_path / "gt.json", str(tmp_path / "dt.json"))
    b = evaluate(gt, dets)
    assert np.array_equal(a.stats, b.stats) and np.array_equal(a.precision, b.precision)


def _tiny_gt() -> dict:
    return {
        "images": [{"id": 1, "height": 40, "width": 40}, {"id": 2, "height": 40, "width": 40}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "none"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30]]},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 1,
             "segmentation": [[0, 0, 40, 0, 40, 40, 0, 40]]},
        ],
    }


def test_perfect_boxes_and_api() -> None:
    gt = _tiny_gt()
    dets = [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 7, "bbox": [20, 20, 10, 10], "score": 0.8},
        {"image_id": 2, "category_id": 3, "bbox": [5, 5, 10, 10], "score": 0.7},  # on a crowd: ignored
    ]
    res = evaluate(gt, dets, "bbox")
    assert isinstance(res, COCOResult)
    s = res.summary()
    assert list(s) == KEYS and s["AP"] == pytest.approx(1.0) and s["AR100"] == 1.0
    assert s["APm"] == -1.0 and s["APl"] == -1.0  # no medium / large ground truth
    assert res.precision.shape == (10, 101, 3, 4, 3) and res.recall.shape == (10, 3, 4, 3)
    assert res.cat_ids == [3, 7, 9] and len(res.iou_thresholds) == 10
    per = res.per_class()
    assert per[3]["AP"] == pytest.approx(1.0) and per[9]["AP"] == -1.0  # category without ground truth
    table = res.format_table({3: "cat", 7: "dog", 9: "none"})
    assert "dog" in table and "100.0" in table
    text = str(res)
    assert text.count("\n") == 11 and "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in text
    assert_same(oracle(gt, dets, "bbox"), gt, dets, "bbox")


def test_empty_results_are_no_detections() -> None:
    gt = _tiny_gt()
    res = evaluate(gt, [], "segm")
    assert res.summary()["AP"] == 0.0 and res.summary()["APm"] == -1.0
    assert_same(oracle(gt, [], "segm"), gt, [], "segm")


def test_gt_without_iscrowd_or_area_gets_defaults() -> None:
    gt = _tiny_gt()
    for a in gt["annotations"]:
        del a["iscrowd"], a["area"]
    dets = [{"image_id": 1, "category_id": 3, "segmentation": mask_utils.frPyObjects(np.array([[0.0, 0, 10, 10]]), 40, 40)[0], "score": 0.5}]
    dets[0]["segmentation"]["counts"] = dets[0]["segmentation"]["counts"].decode()
    res = evaluate(gt, dets)
    per = res.per_class()[3]  # 1 of 2 regular gts found: the third one is no longer crowd
    assert per["AR100"] == 0.5 and per["AP"] == pytest.approx(51 / 101)


def test_polygon_results_are_rasterized_like_ground_truth() -> None:
    gt = _tiny_gt()
    dets = [{"image_id": 1, "category_id": 3, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "score": 0.5}]
    assert evaluate(gt, dets).per_class()[3]["AP50"] == pytest.approx(1.0)


def test_runtime_does_not_import_pycocotools_coco_or_heavy_modules() -> None:
    code = (
        "import sys; from instseg.evaluation import evaluate; "
        "gt={'images':[{'id':1,'height':8,'width':8}],'categories':[{'id':1}],'annotations':[]}; "
        "evaluate(gt, [], 'bbox'); "
        "bad=[m for m in ('pycocotools.coco','pycocotools.cocoeval','torch','matplotlib') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "dets, message",
    [
        ([{"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}], "result 0: image_id 99 is not in the ground truth"),
        ([{"image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 1}], "result 0: category_id 4 is not in the ground truth"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}], "result 0: missing 'score'"),
        ([{"category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}], "result 0: missing 'image_id'"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1},
          {"image_id": 1, "category_id": 3, "score": 1}], "result 1: missing 'bbox'"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": "high"}], "result 0: score 'high' is not a number"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, "a", 1, 1], "score": 1}], "result 0: bbox value 'a' is not a number"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 1}], "result 0: bbox [0, 0, 1] is not [x, y, w, h]"),
        ({"not": "a list"}, "not a COCO results file"),
    ],
)
def test_bad_results_raise_one_line_data_error(dets: object, message: str) -> None:
    with pytest.raises(DataError) as exc:
        evaluate(_tiny_gt(), dets, "bbox")  # type: ignore[arg-type]
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_bad_ground_truth_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'annotations' list"):
        evaluate({"images": [], "categories": []}, [])
    gt = _tiny_gt()
    gt["annotations"][1]["id"] = 1
    with pytest.raises(DataError, match="annotation id=1: duplicate annotation id"):
        evaluate(gt, [])
    gt = _tiny_gt()
    gt["annotations"][2]["area"] = "big"
    with pytest.raises(DataError, match="annotation id=3: area 'big' is not a number"):
        evaluate(gt, [], "bbox")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        evaluate(tmp_path / "bad.json", [])
    with pytest.raises(ValueError):
        evaluate(_tiny_gt(), [], "keypoints")


def test_input_is_not_modified() -> None:
    gt = _tiny_gt()
    dets = [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9}]
    before = (copy.deepcopy(gt), copy.deepcopy(dets))
    evaluate(gt, dets, "segm")
    assert (gt, dets) == before


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_more_than_100_detections_per_image_are_truncated_like_pycocotools(iou_type: str) -> None:
    rng = np.random.default_rng(11)
    gt = {"images": [{"id": 5, "height": 64, "width": 64}, {"id": 6, "height": 64, "width": 64}],
          "categories": [{"id": 1}, {"id": 2}], "annotations": []}
    for i in range(30):
        x, y, w, h = (float(v) for v in rng.uniform(0, 40, 2).tolist() + rng.uniform(2, 24, 2).tolist())
        gt["annotations"].append({"id": i + 1, "image_id": 5 if i < 24 else 6, "category_id": 1 if i % 4 else 2, "iscrowd": int(i % 7 == 0),
                                  "area": w * h, "bbox": [x, y, w, h], "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    dets = []
    for a in gt["annotations"] * 6:
        x, y, w, h = (v + rng.normal(0, 2) for v in a["bbox"])
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x, y, abs(w) + 1, abs(h) + 1],
                     "score": float(rng.choice([0.2, 0.4, 0.6]))})
    assert sum(d["image_id"] == 5 and d["category_id"] == 1 for d in dets) > 100
    assert_same(oracle(gt, dets, iou_type), gt, dets, iou_type)
    params = {"imgIds": [5, 999], "catIds": [2]}
    assert_same(oracle(gt, dets, iou_type, **params), gt, dets, iou_type, img_ids=[5, 999], cat_ids=[2])


def test_per_class_agrees_with_overall_stats() -> None:
    gt = _coco_subset()
    res = evaluate(gt, _perturbed(gt, "segm", 7))
    per = [v["AP"] for v in res.per_class().values() if v["AP"] > -1]
    assert np.mean(per) == pytest.approx(res.summary()["AP"], abs=1e-12)


def test_mask_size_mismatch_is_a_data_error() -> None:
    gt = _tiny_gt()
    rle = mask_utils.frPyObjects(np.array([[0.0, 0, 5, 5]]), 30, 40)[0]
    gt["annotations"][0]["segmentation"] = {"size": [30, 40], "counts": rle["counts"].decode()}
    with pytest.raises(DataError, match="annotation id=1: mask size"):
        evaluate(gt, [])
    dets = [{"image_id": 1, "category_id": 3, "segmentation": {"size": [30, 40], "counts": rle["counts"].decode()}, "score": 1}]
    with pytest.raises(DataError, match="result 0: mask size"):
        evaluate(_tiny_gt(), dets)


def test_str_prints_like_pycocotools_summarize() -> None:
    import contextlib
    import io

    gt = _coco_subset()
    dets = _perturbed(gt, "bbox", 3)
    E = oracle(gt, dets, "bbox")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        E.summarize()
    assert str(evaluate(gt, dets, "bbox")) == buf.getvalue().rstrip("\n")
