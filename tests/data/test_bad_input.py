"""Bad input of the folder / polygon formats: one-line DataError naming the file and the item,
or (``skip_invalid``) a warning per bad item, the item skipped and counted. Tiny generated data."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from instseg.cli.main import main
from instseg.data.dataset import InstanceDataset
from instseg.data.formats import load_dataset
from instseg.errors import DataError, InvalidItemWarning

VIA = Path(__file__).resolve().parents[1] / "fixtures" / "via"
H, W = 10, 12


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _image(path: Path, h: int = H, w: int = W) -> Path:
    return _png(path, np.full((h, w, 3), 90, np.uint8))


def _labels(n: int, h: int = H, w: int = W) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    for k in range(1, n + 1):
        lab[1 : h - 1, 2 * k : 2 * k + 2] = k
    return lab


def _raises(path: Path, file: str, item: str, text: str, **kw) -> DataError:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as exc:
        load_dataset(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg and file in msg and item in msg and text in msg, msg
    return exc.value


def _skipped(path: Path, n_skipped: int, **kw) -> InstanceDataset:  # type: ignore[no-untyped-def]
    with pytest.warns(InvalidItemWarning):
        ds = load_dataset(path, skip_invalid=True, **kw)
    assert len(ds.skipped) == n_skipped, ds.skipped
    return ds


# -- label-png / label-image --------------------------------------------------------------------
@pytest.fixture
def label_png(tmp_path: Path) -> Path:
    for stem, n in (("a", 2), ("b", 3)):
        _image(tmp_path / "images" / f"{stem}.png")
        _png(tmp_path / "masks" / f"{stem}_mask.png", _labels(n))
    return tmp_path


def test_label_png_good(label_png: Path) -> None:
    ds = load_dataset(label_png)
    assert (len(ds), ds.num_instances) == (2, 5)


def test_label_png_zero_byte_image(label_png: Path) -> None:
    (label_png / "images" / "a.png").write_bytes(b"")
    _raises(label_png, "a.png", "image images/a.png", "empty (0 bytes)")
    ds = _skipped(label_png, 1)
    assert (len(ds), ds.num_instances) == (1, 3)


def test_label_png_truncated_image(label_png: Path) -> None:
    img = label_png / "images" / "b.png"
    img.write_bytes(img.read_bytes()[:-30])
    _raises(label_png, "b.png", "image images/b.png", "cannot read image", check_images=True)
    assert len(load_dataset(label_png)) == 2  # headers only: truncation is found by check_images


def test_label_png_mask_size_differs(label_png: Path) -> None:
    _png(label_png / "masks" / "b_mask.png", _labels(1, H + 1, W))
    _raises(label_png, "b_mask.png", "image images/b.png", "mask is 11x12 but the image is 10x12")
    assert _skipped(label_png, 1).num_instances == 2


def test_label_png_not_single_channel(label_png: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[2:4, 2:4] = (1, 2, 3)
    _png(label_png / "masks" / "a_mask.png", rgb)
    _raises(label_png, "a_mask.png", "image images/a.png", "single-channel")


def test_label_png_missing_and_orphan_mask(label_png: Path) -> None:
    (label_png / "masks" / "b_mask.png").rename(label_png / "masks" / "zzz_mask.png")
    with pytest.warns(InvalidItemWarning, match="zzz_mask.png: label image without a matching image"):
        _raises(label_png, "b.png", "image images/b.png", "no label image for this image")


def test_label_image_flat_not_2d(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((H, W), np.uint16))
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((2, 3, H, W), np.uint16), photometric="minisblack")
    _raises(tmp_path, "mask.tif", "image img.tif", "shape")


def test_label_image_negative_ids(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((H, W), np.uint16))
    lab = np.zeros((H, W), np.int16)
    lab[2:4, 2:4] = -3
    tifffile.imwrite(tmp_path / "mask.tif", lab)
    _raises(tmp_path, "mask.tif", "image img.tif", "negative")


# -- instance-pngs ------------------------------------------------------------------------------
@pytest.fixture
def inst(tmp_path: Path) -> Path:
    for sid, n in (("s1", 2), ("s2", 3)):
        _image(tmp_path / "train" / sid / "images" / f"{sid}.png")
        lab = _labels(n)
        for k in range(1, n + 1):
            _png(tmp_path / "train" / sid / "masks" / f"m{k}.png", (lab == k).astype(np.uint8) * 255)
    return tmp_path


def test_instance_pngs_good(inst: Path) -> None:
    ds = load_dataset(inst)
    assert (len(ds), ds.num_instances) == (2, 5) and ds.images[0].file_name == "train/s1/images/s1.png"


def test_instance_pngs_mask_size_differs(inst: Path) -> None:
    _png(inst / "train" / "s2" / "masks" / "m2.png", np.full((H, W + 2), 255, np.uint8))
    _raises(inst, "m2.png", "image s2", "mask is 10x14 but the image is 10x12")
    ds = _skipped(inst, 1)  # the whole image goes
    assert (len(ds), ds.num_instances) == (1, 2)


def test_instance_pngs_empty_and_unreadable_mask(inst: Path) -> None:
    _png(inst / "train" / "s1" / "masks" / "m1.png", np.zeros((H, W), np.uint8))
    _raises(inst, "m1.png", "image s1", "mask is empty")
    ds = _skipped(inst, 1)  # only that instance goes
    assert (len(ds), ds.num_instances) == (2, 4)
    (inst / "train" / "s1" / "masks" / "m2.png").write_bytes(b"")
    _raises(inst, "m2.png", "image s1", "cannot read label image")


def test_instance_pngs_two_images(inst: Path) -> None:
    _image(inst / "train" / "s1" / "images" / "extra.png")
    _raises(inst, "s1/images", "image s1", "expected one image, found 2", format="instance-pngs")


# -- yolo ---------------------------------------------------------------------------------------
GOOD = "0 0.1 0.1 0.5 0.1 0.5 0.6"


@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    _image(tmp_path / "images" / "train" / "a.jpg")
    _image(tmp_path / "images" / "train" / "b.png")  # no label file: no instances
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text(f"{GOOD}\n2 0.2 0.2 0.9 0.2 0.9 0.9\n")
    return tmp_path


def _yolo_line(root: Path, line: str) -> None:
    (root / "labels" / "train" / "a.txt").write_text(f"{GOOD}\n{line}\n")


def test_yolo_good_and_orphan(yolo: Path) -> None:
    (yolo / "labels" / "train" / "c.txt").write_text(GOOD + "\n")
    with pytest.warns(InvalidItemWarning, match="c.txt: label file without an image"):
        ds = load_dataset(yolo)
    assert (len(ds), ds.num_instances, ds.skipped) == (2, 2, [])
    assert [c.id for c in ds.categories] == [0, 1, 2] and ds.class_names == ["0", "1", "2"]
    assert ds.images[0].annotations[0].segmentation[0] == pytest.approx([1.2, 1.0, 6.0, 1.0, 6.0, 6.0])


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("0 0.1 0.1 0.2 0.2", "polygon has 2 points (needs at least 3)"),
        ("0 0.5 0.5 0.2 0.3", "detection box"),
        ("0 0.1 0.1 0.2 0.2 0.3 0.3", "zero area"),
        ("x 0.1 0.1 0.5 0.1 0.5 0.6", "class index 'x' is not an integer"),
        ("1.5 0.1 0.1 0.5 0.1 0.5 0.6", "class index '1.5' is not an integer"),
        ("-1 0.1 0.1 0.5 0.1 0.5 0.6", "out of range"),
        ("0 0.1 0.1 0.5 zz 0.5 0.6", "coordinate 'zz' is not a number"),
        ("0 0.1 0.1 0.5 0.1 0.5", "odd number of coordinates"),
        ("0 0.1 0.1 1.5 0.1 0.5 0.6", "not normalized"),
    ],
)
def test_yolo_bad_line(yolo: Path, line: str, text: str) -> None:
    _yolo_line(yolo, line)
    _raises(yolo, "a.txt", "line 2", text)
    ds = _skipped(yolo, 1)
    assert ds.num_instances == 1


def test_yolo_class_outside_names(yolo: Path) -> None:
    _raises(yolo, "a.txt", "line 2", "class index 2 is out of range (0..1)", names=["cat", "dog"])
    (yolo / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n  2: bird\n")
    assert load_dataset(yolo).class_names == ["cat", "dog", "bird"]


def test_yolo_zero_byte_image(yolo: Path) -> None:
    (yolo / "images" / "train" / "b.png").write_bytes(b"")
    _raises(yolo, "b.png", "image images/train/b.png", "empty")


# -- via ----------------------------------------------------------------------------------------
@pytest.fixture
def via(tmp_path: Path) -> Path:
    for p in VIA.glob("*.png"):
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(VIA / "via_region_data.json", tmp_path / "via.json")
    return tmp_path


def _edit_region(root: Path, shape: dict) -> None:  # type: ignore[type-arg]
    data = json.loads((root / "via.json").read_text())
    first = next(iter(data.values()))
    first["regions"]["1"]["shape_attributes"] = shape
    (root / "via.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ({"name": "polygon", "all_points_x": [1, 5], "all_points_y": [1, 5]}, "2 points (needs at least 3)"),
        ({"name": "polygon", "all_points_x": [1, 5, 9], "all_points_y": [1, 5]}, "equal length"),
        ({"name": "polygon", "all_points_x": [1, 5, 9], "all_points_y": [1, 5, 9]}, "zero area"),
        ({"name": "rect", "x": 1, "y": 1, "width": 0, "height": 4}, "zero area"),
        ({"name": "rect", "x": 1, "y": 1}, "bad rect attributes"),
        ({"name": "point", "cx": 3, "cy": 3}, "unsupported shape 'point'"),
    ],
)
def test_via_bad_region(via: Path, shape: dict, text: str) -> None:  # type: ignore[type-arg]
    _edit_region(via, shape)
    _raises(via / "via.json", "via.json", "image a.png region 1", text)
    assert _skipped(via / "via.json", 1).num_instances == 3


def test_via_missing_image_and_bad_json(via: Path, tmp_path: Path) -> None:
    (via / "b.png").unlink()
    _raises(via / "via.json", "b.png", "image b.png", "image file not found")
    assert _skipped(via / "via.json", 1).num_instances == 2
    (via / "via.json").write_text('{"a.png": {"filename": "a.png", "regions": ')
    _raises(via / "via.json", "via.json", "", "not valid JSON", format="via")
    (via / "via.json").write_text('{"a.png": 3}')
    _raises(via / "via.json", "via.json", "", "not a VIA file", format="via")


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_exit_codes_on_bad_input(label_png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (label_png / "images" / "a.png").write_bytes(b"")
    assert main(["info", str(label_png)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a.png" in err and "image images/a.png" in err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidItemWarning)
        assert main(["info", str(label_png), "--skip-invalid"]) == 0
    assert "skipped 1 invalid item(s)" in capsys.readouterr().err
