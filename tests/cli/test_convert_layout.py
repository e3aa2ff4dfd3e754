"""``instseg convert`` on a COCO JSON in the standard layout: ``file_name`` resolves against
``--images``, the JSON's folder, then ``../images/[<split>/]``, ``../<split>/`` and
``../<split>2017/``; when nothing matches the one-line error lists the folders tried."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.cli.main import main
from instseg.data.image_paths import candidate_folders


def _layout(root: Path, json_name: str, image_dir: str | None) -> Path:
    """``root/annotations/<json_name>`` and two 20x30 images under ``root/<image_dir>``."""
    (root / "annotations").mkdir(parents=True)
    names = ["000000000001.jpg", "000000000002.png"]
    if image_dir is not None:
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            Image.fromarray(np.full((20, 30, 3), 60 * k, np.uint8)).save(root / image_dir / name)
    data = {
        "images": [{"id": k + 1, "file_name": n, "height": 20, "width": 30} for k, n in enumerate(names)],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 8], "area": 80.0,
                         "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    path = root / "annotations" / json_name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "json_name, image_dir",
    [
        ("instances_val2017_subset.json", "images"),  # ../shared/data/coco_val2017_subset10
        ("instances_val2017.json", "images/val2017"),
        ("instances_val2017.json", "val2017"),
        ("instances_train.json", "train2017"),
        ("instances_val2017.json", "annotations"),  # beside the JSON
    ],
)
def test_convert_finds_the_images_of_the_standard_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_name: str, image_dir: str
) -> None:
    src = _layout(tmp_path / "coco", json_name, image_dir)
    out = tmp_path / "out" / "converted.json"
    assert main(["convert", str(src), "-o", str(out)]) == 0, capsys.readouterr().err
    assert "2 images, 1 instances" in capsys.readouterr().out
    written = json.loads(out.read_text())
    for im in written["images"]:  # relative to the output, pointing at the found files
        assert (out.parent / im["file_name"]).resolve() == (
            tmp_path / "coco" / image_dir / Path(im["file_name"]).name
        ).resolve()


def test_images_flag_comes_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _layout(tmp_path / "coco", "instances_val2017.json", "images")
    other = tmp_path / "elsewhere"
    other.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(other / "000000000001.jpg")
    out = tmp_path / "out.json"
    assert main(["convert", str(src), "-o", str(out), "--images", str(other)]) == 0
    names = [im["file_name"] for im in json.loads(out.read_text())["images"]]
    assert names == ["elsewhere/000000000001.jpg", "coco/images/000000000002.png"]


def test_no_images_anywhere_lists_the_folders_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _layout(tmp_path / "coco", "instances_val.json", None)
    assert main(["convert", str(src), "-o", str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err.strip()
    root = tmp_path / "coco"
    tried = [
        root / "annotations",
        root / "images" / "val",
        root / "images",
        root / "val",
        root / "val2017",
    ]
    assert len(err.splitlines()) == 1 and "image id=1 (000000000001.jpg)" in err
    assert f"looked in: {', '.join(map(str, tried))}" in err and "pass --images DIR" in err
    assert candidate_folders(src) == tried


def test_real_coco_subset_converts_without_images_flag(tmp_path: Path) -> None:
    from tests.conftest import data_path

    src = data_path("coco_val2017_subset10") / "annotations" / "instances_val2017_subset.json"
    assert main(["convert", str(src), "-o", str(tmp_path / "out.json"), "--no-verify"]) == 0
    assert len(json.loads((tmp_path / "out.json").read_text())["annotations"]) == 77
