"""``instseg eval``: stats output, --json / --per-class / --plots, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instseg.cli.main import main
from tests.evaluation.test_coco_eval_props import make_case, oracle

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
KNOBS = {"n_img": 4, "n_cat": 3, "max_gt": 6, "max_dt": 10, "p_crowd": 0.2, "ties": True,
         "shuffle": True, "first_gt_id": 1, "det_format": "both", "p_dup": 0.0}


_DET = {"image_id": 582000, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}  # in the fixture's GT


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, dict, list]:
    gt, dets = make_case(np.random.default_rng(3), KNOBS)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    return tmp_path / "gt.json", tmp_path / "pred.json", gt, dets


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_json_stats_equal_pycocotools(files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture, iou_type: str) -> None:
    gt_path, pred_path, gt, dets = files
    out = tmp_path / "stats.json"
    assert main(["eval", str(gt_path), str(pred_path), "--iou-type", iou_type, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [data[k] for k in KEYS] == list(oracle(gt, dets, iou_type).stats)
    text = capsys.readouterr().out
    assert text.count("Average Precision") == 6 and text.count("Average Recall") == 6


def test_per_class_and_plots(files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_path, pred_path, gt, _ = files
    plots = tmp_path / "plots"
    assert main(["eval", str(gt_path), str(pred_path), "--per-class", "--plots", str(plots)]) == 0
    text = capsys.readouterr().out
    for c in gt["categories"]:
        assert c["name"] in text
    for name in ("pr_curves.png", "per_class_ap.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "pred, expected",
    [
        ([{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "result 0: image_id 12345 is not in the ground truth"),
        ([{"image_id": None, "bbox": [0, 0, 1, 1], "score": 1}], "result 0: missing 'category_id'"),
        ({"images": []}, "not a COCO results file"),
        ([_DET, {**_DET, "score": float("nan")}], "result 1: score is nan (not a finite number)"),
        ([{**_DET, "score": float("inf")}], "result 0: score is inf (not a finite number)"),
        ([{**_DET, "score": "0.9"}], "result 0: score '0.9' is not a number"),
        ([_DET, _DET, {**_DET, "bbox": [0, float("nan"), 1, 1]}], "result 2: bbox value is nan"),
        ([{**_DET, "bbox": [0, 0, -1, 1]}], "result 0: bbox [0, 0, -1, 1] has a negative width or height"),
        ([{**_DET, "bbox": [0, 0, 1]}], "result 0: bbox [0, 0, 1] is not [x, y, w, h]"),
        ([_DET, {"image_id": 582000, "category_id": 3, "bbox": [0, 0, 1, 1]}], "result 1: missing 'score'"),
        ([{**_DET, "image_id": [1]}], "result 0: image_id [1] is not in the ground truth"),
        ([{**_DET, "category_id": 999}], "result 0: category_id 999 is not in the ground truth"),
        ([_DET, {"image_id": 582000, "category_id": 3, "score": 1}], "result 1: missing 'bbox' (the first result has one)"),
    ],
)
def test_bad_input_exits_1_with_one_line(files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture, pred: object, expected: str) -> None:
    gt_path = files[0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(pred))
    assert main(["eval", str(gt_path), str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.json" in err and expected in err


def test_not_coco_ground_truth_exits_1(files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "gt_bad.json"
    bad.write_text("[1, 2]")
    assert main(["eval", str(bad), str(files[1])]) == 1
    assert "gt_bad.json: not a COCO ground-truth file" in capsys.readouterr().err


def test_usage_errors_exit_2(files: tuple) -> None:
    assert main(["eval", str(files[0])]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(files[0]), str(files[1]), "--iou-type", "keypoints"])
    assert exc.value.code == 2


def test_eval_process_stays_light(files: tuple) -> None:
    """The whole `instseg eval` process loads neither torch nor matplotlib nor pycocotools' COCO."""
    code = (
        "import sys; from instseg.cli.main import main; rc = main(sys.argv[1:]); "
        "print([m for m in ('torch', 'matplotlib', 'pycocotools.coco', 'cv2', 'scipy') if m in sys.modules], rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, "eval", str(files[0]), str(files[1])],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] 0"


def test_matching_flag_runs(files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.json"
    assert main(["eval", str(files[0]), str(files[1]), "--matching", "--iou", "0.7", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"precision", "recall", "f1", "tp", "fp", "fn"} <= set(data)
    assert "IoU 0.7: precision" in capsys.readouterr().out


def test_model_flag_needs_data(capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--model", "somewhere"]) == 2
    assert "--model needs --data" in capsys.readouterr().err


def test_boxes_reaching_out_of_the_image_rasterize_as_pycocotools(files: tuple) -> None:
    """Box-only results evaluated as segm: the box polygon is clamped to the image +-1 px
    before rasterizing (the same pixels; a box 1e12 px wide would exhaust the memory)."""
    from instseg.evaluation.coco_eval import evaluate

    _, _, gt, dets = files
    rng = np.random.default_rng(5)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    boxes = []
    for d in dets:
        h, w = sizes[d["image_id"]]
        x, y = float(rng.uniform(-w, w)), float(rng.uniform(-h, h))
        boxes.append({k: d[k] for k in ("image_id", "category_id", "score")}
                     | {"bbox": [x, y, float(rng.uniform(0, 2 * w)), float(rng.uniform(0, 2 * h))]})  # fmt: skip
    assert list(evaluate(gt, boxes, "segm").stats) == list(oracle(gt, boxes, "segm").stats)
    huge = [{**boxes[0], "bbox": [-1e12, -1e12, 3e12, 3e12]}]
    assert evaluate(gt, huge, "segm").stats is not None  # one whole-image mask, at once
