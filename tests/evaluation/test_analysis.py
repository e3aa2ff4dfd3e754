"""Error analysis: TIDE error types on a hand-made scene, occlusion levels, AP per level, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instseg.errors import DataError
from instseg.evaluation.analysis import analyze, occlusion_levels
from instseg.evaluation.coco_eval import evaluate
from instseg.masks import encode
from tests.conftest import data_path

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def rle(h: int, w: int, box: Box) -> dict[str, Any]:
    m = np.zeros((h, w), bool)
    m[box[0] : box[1], box[2] : box[3]] = True
    return encode(m)[0]


def make_gt(h: int, w: int, objs: list[tuple[int, Any]], crowd: set[int] | None = None) -> dict[str, Any]:
    """objs: (category_id, box or bool mask); ``crowd``: indices that are crowd regions."""
    anns = []
    for i, (cat, geo) in enumerate(objs):
        seg = rle(h, w, geo) if isinstance(geo, tuple) else encode(geo)[0]
        anns.append({"id": i + 1, "image_id": 1, "category_id": cat, "segmentation": seg, "iscrowd": int(i in (crowd or set()))})
    return {
        "images": [{"id": 1, "file_name": "x.png", "height": h, "width": w}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": anns,
    }


def det(h: int, w: int, cat: int, box: Box, score: float) -> dict[str, Any]:
    return {"image_id": 1, "category_id": cat, "segmentation": rle(h, w, box), "score": score}


H = W = 100
TIDE_GT = [
    (1, (0, 10, 0, 10)),  # g1: detected (d1) and duplicated (d2)
    (1, (0, 10, 20, 30)),  # g2: detected with the wrong class (d3)
    (2, (0, 10, 40, 50)),  # g3: detected (d4)
    (1, (30, 40, 0, 10)),  # g4: missed
    (2, (30, 40, 20, 30)),  # g5: only a wrong-class, badly placed detection (d7) -> missed
    (1, (60, 70, 0, 10)),  # g6: mislocalized (d5)
    (1, (60, 70, 40, 50)),  # g7: detected late (d8)
    (1, (80, 100, 0, 20)),  # crowd region
]
TIDE_DT = [
    det(H, W, 1, (0, 10, 0, 10), 0.9),  # d1 TP
    det(H, W, 1, (0, 10, 0, 10), 0.85),  # d2 Dupe
    det(H, W, 2, (0, 10, 20, 30), 0.8),  # d3 Cls
    det(H, W, 2, (0, 10, 40, 50), 0.5),  # d4 TP
    det(H, W, 1, (60, 70, 5, 15), 0.7),  # d5 Loc (IoU 1/3)
    det(H, W, 1, (80, 90, 80, 90), 0.95),  # d6 Bkg
    det(H, W, 1, (30, 40, 25, 35), 0.92),  # d7 Both (IoU 1/3 with a class-2 GT)
    det(H, W, 1, (60, 70, 40, 50), 0.4),  # d8 TP
    det(H, W, 1, (85, 95, 5, 15), 0.99),  # in the crowd region: ignored
]


def test_tide_error_types_and_oracle() -> None:
    gt = make_gt(H, W, TIDE_GT, crowd={7})
    r = analyze(gt, TIDE_DT, "segm")
    counts = {k: int(v["count"]) for k, v in r.errors.items()}
    assert counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1, "Miss": 2}
    # AP50 by hand (101-point interpolation): class a has 5 GT, detections in score order
    # FP FP TP FP FP TP -> precision 1/3 up to recall 0.4 (41 points); class b has 2 GT,
    # FP TP -> precision 1/2 up to recall 0.5 (51 points).
    expect = (41 / 3 / 101 + 51 / 2 / 101) / 2
    assert r.summary["AP50"] == pytest.approx(expect)
    for name, v in r.errors.items():
        assert v["dAP50"] > 0, name  # every error type here costs AP
    assert r.oracle["AP50"] == pytest.approx(1.0)
    # fixing background errors = removing d6, checked against the evaluator directly
    no_bkg = [d for k, d in enumerate(TIDE_DT) if k != 5]
    ap = evaluate(gt, json.loads(json.dumps(no_bkg)), "segm").stats[1]
    assert r.errors["Bkg"]["dAP50"] == pytest.approx(ap - expect)
    text = r.table()
    assert "Dupe" in text and "all errors fixed: AP50 100.00" in text


def test_tide_bbox_mode_uses_boxes() -> None:
    gt = make_gt(H, W, TIDE_GT, crowd={7})
    dts = [{k: v for k, v in d.items() if k != "segmentation"} for d in TIDE_DT]
    for d, src in zip(dts, TIDE_DT):
        from instseg.masks import rle_boxes_xywh

        d["bbox"] = [float(v) for v in rle_boxes_xywh([src["segmentation"]])[0]]
    r = analyze(gt, dts, "bbox")
    assert {k: int(v["count"]) for k, v in r.errors.items()} == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1, "Miss": 2}
    assert r.oracle["AP50"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="result 0: missing 'segmentation'"):
        analyze(gt, dts, "segm")


def test_tide_segm_results_with_boxes() -> None:
    """``instseg predict`` writes segm results with a bbox: the oracle fixes keep one."""
    from instseg.masks import rle_boxes_xywh

    gt = make_gt(H, W, TIDE_GT, crowd={7})
    dts = [{**d, "bbox": [float(v) for v in rle_boxes_xywh([d["segmentation"]])[0]]} for d in TIDE_DT]
    r = analyze(gt, dts, "segm")
    assert r.errors["Loc"]["count"] == 1 and r.errors["Loc"]["dAP50"] > 0
    assert r.oracle["AP50"] == pytest.approx(1.0)


def occlusion_scene() -> dict[str, Any]:
    h = w = 40
    d = np.zeros((h, w), bool)
    d[20:30, 2:12] = True
    d[22:30, 4:12] = False  # D: an L-shape, the rest of its square hidden behind E
    return make_gt(
        h,
        w,
        [
            (1, (2, 8, 2, 8)),  # A: alone
            (1, (2, 12, 20, 30)),  # B: touches C along one side
            (1, (2, 12, 30, 40)),  # C
            (1, d),  # D
            (1, (22, 34, 4, 16)),  # E: in front of D
        ],
    )


def test_occlusion_levels_of_a_hand_made_scene() -> None:
    occ = occlusion_levels(occlusion_scene())
    a, b, c, d, e = (occ[i] for i in range(1, 6))
    assert (a.boundary, a.bbox, a.level) == (0.0, 0.0, "none")
    # B: 36 boundary pixels of a 10x10 square, the 10 of its right column touch C; boxes disjoint
    assert b.boundary == pytest.approx(10 / 36) and b.bbox == 0.0 and b.level == "partial"
    assert c.boundary == pytest.approx(10 / 36) and c.level == "partial"
    # D: 35 of its 36 pixels are boundary, 16 of them next to E; E's box covers 8x8 of D's 10x10
    assert d.boundary == pytest.approx(16 / 35) and d.bbox == pytest.approx(0.64) and d.level == "heavy"
    # E: 44 boundary pixels, 17 next to D; D's box covers 8x8 of E's 12x12
    assert e.boundary == pytest.approx(17 / 44) and e.bbox == pytest.approx(64 / 144) and e.level == "partial"


def test_ap_per_occlusion_level_ignores_other_levels() -> None:
    gt = occlusion_scene()
    dts = [{**det(40, 40, 1, (0, 1, 0, 1), s), "segmentation": a["segmentation"]} for a, s in zip(gt["annotations"][:3], (0.9, 0.8, 0.7))]
    r = analyze(gt, dts, "segm")
    # none: A found; B and C match ignored (partial) GT, so they are not false positives
    assert r.occlusion["none"] == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0), "n_gt": 1.0}
    # partial: B, C found, E missed -> precision 1 up to recall 2/3 (67 of 101 points)
    assert r.occlusion["partial"]["AP50"] == pytest.approx(67 / 101)
    assert r.occlusion["partial"]["n_gt"] == 3.0
    assert r.occlusion["heavy"]["AP50"] == 0.0 and r.occlusion["heavy"]["n_gt"] == 1.0
    assert r.size["small"]["n_gt"] == 5.0


def test_analysis_cli_writes_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_file = data_path("coco_val2017_subset10") / "annotations" / "instances_val2017_subset.json"
    gt = json.loads(gt_file.read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    from instseg.masks import segmentation_to_rle

    rng = np.random.default_rng(0)
    dts = []
    for a in gt["annotations"]:
        if a["iscrowd"] or rng.random() < 0.2:
            continue
        h, w = sizes[a["image_id"]]
        dts.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                    "segmentation": segmentation_to_rle(a["segmentation"], h, w)})
    res = tmp_path / "res.json"
    res.write_text(json.dumps(dts))
    from instseg.cli.main import main

    argv = ["eval", str(gt_file), str(res), "--analysis", "--json", str(tmp_path / "a.json"), "--plots", str(tmp_path / "plots")]
    assert main(argv) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert set(data["errors"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"}
    assert data["errors"]["Miss"]["count"] == 76 - len(dts)
    assert data["oracle"]["AP50"] == pytest.approx(1.0)
    assert sorted(x.name for x in (tmp_path / "plots").iterdir()) == ["ap_by_size_occlusion.png", "tide_errors.png"]
    assert "occlusion" in capsys.readouterr().out


def test_analysis_bad_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from instseg.cli.main import main

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(make_gt(H, W, TIDE_GT[:2])))
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{**TIDE_DT[0], "category_id": 9}]))
    assert main(["eval", str(gt), str(res), "--analysis"]) == 1
    assert "res.json: result 0: category_id 9 is not a GT category" in capsys.readouterr().err
    with pytest.raises(DataError, match="needs integer 'height' and 'width'"):
        analyze({**make_gt(H, W, []), "images": [{"id": 1}]}, [])


def test_miss_fix_counts_an_emptied_category_as_zero_like_tide() -> None:
    gt = make_gt(H, W, [(1, (0, 10, 0, 10)), (2, (50, 60, 50, 60))])
    dts = [det(H, W, 1, (0, 10, 0, 10), 0.9), det(H, W, 2, (80, 90, 0, 10), 0.8)]  # TP, Bkg
    r = analyze(gt, dts, "segm")
    assert r.summary["AP50"] == pytest.approx(0.5)  # class a 1.0, class b 0.0
    assert (r.errors["Miss"]["count"], r.errors["Bkg"]["count"]) == (1, 1)
    # without its GT, class b still has a detection: AP 0 in TIDE's mean, so fixing the miss gains nothing
    assert r.errors["Miss"]["dAP50"] == pytest.approx(0.0)
    assert r.errors["Bkg"]["dAP50"] == pytest.approx(0.0)
    assert r.oracle["AP50"] == pytest.approx(1.0)  # both fixed: class b has neither GT nor detections
