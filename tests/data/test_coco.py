"""COCO reader: real data, and every bad input giving a one-line error naming file and item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from instseg.cli.main import main
from instseg.data.coco import load_coco
from instseg.errors import DataError, InvalidItemWarning
from tests.conftest import data_path


def write_image(path: Path, h: int = 20, w: int = 30) -> None:
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def base_coco(tmp: Path) -> dict[str, Any]:
    write_image(tmp / "a.png")
    write_image(tmp / "b.png")
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "segmentation": [[5, 5, 9, 5, 9, 9]], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def dump(tmp: Path, data: Any, name: str = "gt.json") -> Path:
    p = tmp / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_real_coco_subset_counts() -> None:
    root = data_path("coco_val2017_subset10")
    ds = load_coco(root / "annotations" / "instances_val2017_subset.json", images_dir=root / "images", check_images=True)
    st = ds.stats()
    assert (st["images"], st["instances"], st["crowd"], st["categories_used"]) == (10, 77, 1, 18)
    assert st["per_class"]["person"] == 41
    crowd = [a for r in ds.images for a in r.annotations if a.iscrowd]
    assert isinstance(crowd[0].segmentation, dict) and isinstance(crowd[0].segmentation["counts"], list)


def test_roundtrip_keeps_masks(tmp_path: Path) -> None:
    root = data_path("coco_val2017_subset10")
    ds = load_coco(root / "annotations" / "instances_val2017_subset.json", images_dir=root / "images")
    out = ds.save_coco(tmp_path / "sub" / "out.json")
    back = load_coco(out)
    assert len(back) == len(ds) and back.num_instances == ds.num_instances
    for i in range(len(ds)):
        a, b = ds.instances(i), back.instances(i)
        assert a.masks is not None and b.masks is not None
        assert bool((a.masks == b.masks).all()) and a.labels.tolist() == b.labels.tolist()
        assert b.iscrowd is not None and a.iscrowd is not None and bool((a.iscrowd == b.iscrowd).all())


BAD_CASES: list[tuple[str, Any, str]] = [
    ("not_json", "{oops", "not valid JSON"),
    ("not_coco", {"hello": 1}, "missing key 'images'"),
    ("missing_image", "ann_image_99", "annotation id=1: image_id 99 is not in 'images'"),
    ("short_polygon", "poly_2pts", "annotation id=2: polygon 0 has 2 points"),
    ("zero_area_polygon", "poly_flat", "annotation id=2: polygon 0 has zero area"),
    ("mask_size", "rle_size", "annotation id=2: mask size 10x10 differs from image size 20x30"),
    ("undeclared_category", "cat_7", "annotation id=2: category_id 7 is not declared"),
    ("duplicate_ann", "dup_ann", "annotation id=1: duplicate annotation id"),
    ("duplicate_image", "dup_img", "image id=1 (b.png): duplicate image id"),
    ("duplicate_category", "dup_cat", "category id=1: duplicate category id"),
    ("missing_file", "no_file", "image id=2 (b.png)"),
    ("truncated_image", "trunc", "image id=2 (b.png)"),
    ("negative_bbox", "bbox_neg", "annotation id=2: bbox has negative width -5"),
    ("negative_bbox_h", "bbox_neg_h", "annotation id=2: bbox has negative height -1"),
    ("nan_bbox", "bbox_nan", "annotation id=2: bbox [5, nan, 4, 4] has non-finite"),
    ("short_bbox", "bbox_short", "annotation id=2: bbox [5, 5, 4] is not [x, y, width, height]"),
    ("nan_area", "area_nan", "annotation id=2: area is nan"),
    ("negative_area", "area_neg", "annotation id=2: area is negative (-3)"),
    ("bbox_far_from_mask", "bbox_far", "annotation id=2: bbox [20, 12, 4, 4] disagrees with the segmentation"),
    ("nan_polygon", "poly_nan", "annotation id=2: polygon 0 has non-finite"),
    ("size_differs", "size_wrong", "image id=2 (b.png)"),
    ("bad_height", "height_str", "image id=2 (b.png): height '20' is not a positive integer"),
    ("string_image_id", "id_str", "images[1]: id 'two' is not an integer"),
    ("bad_iscrowd", "crowd_7", "annotation id=2: iscrowd 7 is not 0 or 1"),
]


_ANN_EDITS: dict[str, dict[str, Any]] = {
    "bbox_neg": {"bbox": [9, 5, -5, 4]},
    "bbox_neg_h": {"bbox": [5, 5, 4, -1]},
    "bbox_nan": {"bbox": [5, float("nan"), 4, 4]},
    "bbox_short": {"bbox": [5, 5, 4]},
    "area_nan": {"area": float("nan")},
    "area_neg": {"area": -3},
    "bbox_far": {"bbox": [20, 12, 4, 4]},  # the mask is inside [5, 5, 4, 4]
    "poly_nan": {"segmentation": [[5, 5, 9, 5, float("inf"), 9]]},
    "crowd_7": {"iscrowd": 7},
}


def make_bad(tmp: Path, kind: Any) -> Path:
    if not isinstance(kind, str) or kind == "{oops":
        return dump(tmp, kind)
    d = base_coco(tmp)
    ann2 = d["annotations"][1]
    if kind == "ann_image_99":
        d["annotations"][0]["image_id"] = 99
    elif kind == "poly_2pts":
        ann2["segmentation"] = [[1, 1, 5, 5]]
    elif kind == "poly_flat":
        ann2["segmentation"] = [[1, 1, 5, 5, 9, 9]]
    elif kind == "rle_size":
        ann2["segmentation"] = {"size": [10, 10], "counts": [100]}
    elif kind == "cat_7":
        ann2["category_id"] = 7
    elif kind == "dup_ann":
        ann2["id"] = 1
    elif kind == "dup_img":
        d["images"][1]["id"] = 1
    elif kind == "dup_cat":
        d["categories"][1]["id"] = 1
    elif kind == "no_file":
        (tmp / "b.png").unlink()
    elif kind in _ANN_EDITS:
        ann2.update(_ANN_EDITS[kind])
    elif kind == "size_wrong":
        d["images"][1]["height"] = 40
    elif kind == "height_str":
        d["images"][1]["height"] = "20"
    elif kind == "id_str":
        d["images"][1]["id"] = "two"
    elif kind == "trunc":
        data = (tmp / "b.png").read_bytes()
        (tmp / "b.png").write_bytes(data[: len(data) // 2])
    return dump(tmp, d)


@pytest.mark.parametrize("name,kind,expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, kind: Any, expected: str) -> None:
    path = make_bad(tmp_path, kind)
    with pytest.raises(DataError) as info:
        load_coco(path, check_images=True)
    msg = str(info.value)
    assert str(path) in msg and expected in msg and "\n" not in msg
    # CLI: one line on stderr, exit 1, no traceback
    code = main(["info", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


SKIPPABLE = ["ann_image_99", "poly_2pts", "poly_flat", "rle_size", "cat_7", "no_file", "trunc", *_ANN_EDITS, "size_wrong", "height_str"]


@pytest.mark.parametrize("kind", SKIPPABLE)
def test_skip_invalid_warns_and_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = make_bad(tmp_path, kind)
    with pytest.warns(InvalidItemWarning):
        ds = load_coco(path, skip_invalid=True, check_images=True)
    assert len(ds.skipped) == 1
    assert ds.num_instances == 1  # the good annotation survives
    out = tmp_path / "out.json"
    assert main(["convert", str(path), "-o", str(out), "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 invalid item(s)" in err
    assert len(json.loads(out.read_text())["annotations"]) == 1


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert"])
    assert info.value.code == 2


def test_file_name_resolution(tmp_path: Path) -> None:
    d = base_coco(tmp_path)
    sub = tmp_path / "ann"
    sub.mkdir()
    # relative to --images
    p = dump(sub, d)
    with pytest.raises(DataError):
        load_coco(p)  # resolves against ann/, where no images are
    assert len(load_coco(p, images_dir=tmp_path)) == 2
    # absolute paths accepted
    d["images"][0]["file_name"] = str(tmp_path / "a.png")
    d["images"][1]["file_name"] = str(tmp_path / "b.png")
    assert len(load_coco(dump(sub, d, "abs.json"))) == 2


def test_missing_size_read_from_file(tmp_path: Path) -> None:
    d = base_coco(tmp_path)
    for im in d["images"]:
        del im["height"], im["width"]
    ds = load_coco(dump(tmp_path, d))
    assert (ds.images[0].height, ds.images[0].width) == (20, 30)
    assert ds.images[0].annotations[0].area == pytest.approx(80)


def test_coco_results_map_labels_and_refuse_unknown_ones() -> None:
    from instseg.data.coco import coco_results

    rle = {"size": [4, 4], "counts": "04"}
    got = coco_results(7, [[1.0, 2.0, 3.5, 6.0]], [1], [0.123456], [5, 9], [rle])
    assert got == [{"image_id": 7, "category_id": 9, "bbox": [1.0, 2.0, 2.5, 4.0], "score": 0.12346,
                    "segmentation": {"size": [4, 4], "counts": "04"}}]  # fmt: skip
    assert "segmentation" not in coco_results(7, [[0, 0, 1, 1]], [0], [1.0], [5])[0]
    for label in (2, -1):
        with pytest.raises(ValueError, match=f"label {label} has no category id"):
            coco_results(7, [[0, 0, 1, 1]], [label], [1.0], [5, 9])


def test_info_refuses_a_negative_bbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = base_coco(tmp_path)
    d["annotations"][0]["id"] = 7
    d["annotations"][0]["bbox"] = [1, 1, -5, 5]
    path = dump(tmp_path, d)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{path}: annotation id=7: bbox has negative width -5"), err


def test_boxes_that_overlap_little_but_contain_the_mask_pass(tmp_path: Path) -> None:
    d = base_coco(tmp_path)
    ann = d["annotations"][1]  # the mask's box is [5, 5, 4, 4]
    ann["bbox"] = [0, 0, 30, 20]  # IoU 0.03, but it contains the mask: a loose box, kept
    ann["area"] = 8.0
    d["annotations"][0]["bbox"] = [2, 2, 10, 8]
    ds = load_coco(dump(tmp_path, d), check_images=True)
    assert ds.images[1].annotations[0].bbox == [0.0, 0.0, 30.0, 20.0]


def test_a_file_of_another_size_is_refused_when_read(tmp_path: Path) -> None:
    d = base_coco(tmp_path)
    path = dump(tmp_path, d)
    ds = load_coco(path)  # headers are not compared without check_images
    write_image(tmp_path / "b.png", 24, 30)  # the file changed after reading the JSON
    with pytest.raises(DataError, match=r"image id=2 \(b.png\): the file .* is 24x30 but the annotations say 20x30"):
        ds.load_image(1)
