"""Format readers on the shared datasets: exact counts (SOURCE.md), detection, pixel-exact
COCO round trips, and the ``info`` / ``convert`` CLI on every folder."""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from instseg import masks as mask_codec
from instseg.cli.common import DATASET_FORMATS
from instseg.cli.main import main
from instseg.data.coco import load_coco
from instseg.data.dataset import InstanceDataset
from instseg.data.formats import FORMATS, detect_format, load_dataset
from instseg.data.readers_common import binary_mask_rle, label_image_rles
from instseg.errors import DataError, InvalidItemWarning
from tests.conftest import data_path

VIA = Path(__file__).resolve().parents[1] / "fixtures" / "via"


def _load_quiet(path: Path, **kw) -> tuple[InstanceDataset, list[str]]:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(path, **kw)
    return ds, [str(w.message) for w in caught if issubclass(w.category, InvalidItemWarning)]


@pytest.fixture(scope="module")
def dsb() -> InstanceDataset:
    """The 5,501-mask set, read once for the module."""
    return load_dataset(data_path("dsb2018_stage1_subset"))


def _roundtrip(ds: InstanceDataset, tmp_path: Path) -> InstanceDataset:
    out = ds.save_coco(tmp_path / "out" / "ds.json")
    back = load_coco(out)
    assert len(back) == len(ds) and back.num_instances == ds.num_instances
    assert [r.path.resolve() for r in back.images] == [r.path.resolve() for r in ds.images]
    return back


def _masks(ds: InstanceDataset, i: int) -> np.ndarray:
    rec = ds.images[i]
    return mask_codec.decode([a.rle(rec.height, rec.width) for a in rec.annotations], rec.height, rec.width)


def test_cli_formats_match_library() -> None:
    assert DATASET_FORMATS == FORMATS


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("PennFudanPed", "label-png"),
        ("dsb2018_stage1_subset", "instance-pngs"),
        ("stardist_nuclei_2d", "label-image"),
        ("coco128-seg", "yolo"),
        ("coco_val2017_subset10", "coco"),
        ("coco_val2017_subset10/annotations/instances_val2017_subset.json", "coco"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    root = data_path(name.split("/")[0])
    assert detect_format(root.parent / name) == fmt


def test_detect_via_json_and_folder() -> None:
    assert detect_format(VIA) == "via"
    assert detect_format(VIA / "via_region_data.json") == "via"


def test_pennfudan_counts_and_roundtrip(tmp_path: Path) -> None:
    root = data_path("PennFudanPed")
    ds = load_dataset(root)
    assert len(ds) == 136 and ds.num_instances == 331
    assert ds.class_names == ["object"]  # default; --class-name person in the CLI test
    per_image = [len(r.annotations) for r in ds.images]
    assert min(per_image) == 1 and max(per_image) == 6
    assert all(isinstance(a.segmentation, dict) for r in ds.images for a in r.annotations)
    back = _roundtrip(ds, tmp_path)
    for i in range(0, 136, 17):  # a spread of images, compared against the label PNG itself
        rec = back.images[i]
        label = np.asarray(Image.open(root / "PedMasks" / f"{rec.path.stem}_mask.png"))
        expected = np.stack([label == k for k in range(1, int(label.max()) + 1)])
        assert np.array_equal(_masks(back, i), expected)


def test_dsb_counts(dsb: InstanceDataset) -> None:
    assert len(dsb) == 109 and dsb.num_instances == 5501
    with open(data_path("dsb2018_stage1_subset") / "manifest.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    counts = {r.path.stem: len(r.annotations) for r in dsb.images}
    assert counts == {row["image_id"]: int(row["n_instances"]) for row in rows}
    by_kind: Counter[str] = Counter()
    for row in rows:
        by_kind[row["kind"].split("_")[0]] += counts[row["image_id"]]
    assert by_kind == {"fluorescence": 3817, "brightfield": 1242 + 442}
    stained = sum(counts[r["image_id"]] for r in rows if r["kind"] == "brightfield_stained_rgb")
    assert stained == 1242
    assert all(a.area > 0 for r in dsb.images for a in r.annotations)


def test_dsb_roundtrip_pixel_identical(dsb: InstanceDataset, tmp_path: Path) -> None:
    back = _roundtrip(dsb, tmp_path)
    for i in (0, 50, 108):
        rec = back.images[i]
        files = sorted((rec.path.parents[1] / "masks").glob("*.png"))
        expected = np.stack([np.asarray(Image.open(p)) > 0 for p in files])  # PIL, not our cv2 path
        assert np.array_equal(_masks(back, i), expected)


def test_stardist_counts_and_roundtrip(tmp_path: Path) -> None:
    root = data_path("stardist_nuclei_2d")
    ds = load_dataset(root)
    assert len(ds) == 1 and ds.num_instances == 125
    assert ds.images[0].path.name == "img2d.tif" and (ds.images[0].height, ds.images[0].width) == (512, 512)
    label = tifffile.imread(root / "mask2d.tif")
    ids = np.unique(label)[1:]
    assert len(ids) == 125 and ids.max() == 183  # non-consecutive ids
    back = _roundtrip(ds, tmp_path)
    assert np.array_equal(_masks(back, 0), label[None] == ids[:, None, None])
    areas = sorted(a.area for a in back.images[0].annotations)
    assert areas[0] == 25 and areas[-1] == 751


def test_coco128_counts_orphans_and_roundtrip(tmp_path: Path) -> None:
    root = data_path("coco128-seg")
    ds, warned = _load_quiet(root)
    assert len(ds) == 128 and ds.num_instances == 929
    assert sorted(Path(w.split(":")[0]).name for w in warned) == ["000000000656.txt", "000000000659.txt"]
    assert ds.skipped == []  # orphans are warnings, not invalid items
    stats = ds.stats()
    assert stats["categories_used"] == 71 and stats["images_without_instances"] == 2
    # no names given: classes named by index; SOURCE.md's 261 persons include 7 in the orphans
    assert stats["per_class"]["0"] == 254
    assert [c.id for c in ds.categories] == list(range(80))
    back = _roundtrip(ds, tmp_path)
    for i in (0, 7, 64):
        a, b = ds.images[i].annotations, back.images[i].annotations
        assert [x.segmentation for x in a] == [x.segmentation for x in b]
        assert np.array_equal(_masks(ds, i), _masks(back, i))


def test_yolo_names_file(tmp_path: Path) -> None:
    root = data_path("coco128-seg")
    names = [f"class{i}" for i in range(80)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    ds, _ = _load_quiet(root, names=tmp_path / "names.txt")
    assert ds.class_names == names and ds.stats()["per_class"]["class0"] == 254


def test_yolo_polygons_are_absolute_pixels() -> None:
    root = data_path("coco128-seg")
    ds, _ = _load_quiet(root)
    rec = next(r for r in ds.images if r.path.stem == "000000000009")
    line = (root / "labels/train2017/000000000009.txt").read_text().splitlines()[0].split()
    first = rec.annotations[0].segmentation[0]
    assert isinstance(first, list)
    assert first[0] == pytest.approx(float(line[1]) * rec.width)
    assert first[1] == pytest.approx(float(line[2]) * rec.height)


def test_coco_folder() -> None:
    root = data_path("coco_val2017_subset10")
    ds = load_dataset(root)
    assert len(ds) == 10 and ds.num_instances == 77 and ds.stats()["crowd"] == 1
    assert all(r.path.is_file() and r.path.parent == root / "images" for r in ds.images)


def test_via_fixture_roundtrip(tmp_path: Path) -> None:
    ds = load_dataset(VIA, check_images=True)
    assert len(ds) == 3 and ds.num_instances == 4
    assert [(c.id, c.name) for c in ds.categories] == [(1, "balloon"), (2, "kite")]
    assert ds.stats()["per_class"] == {"balloon": 3, "kite": 1}
    rect = ds.images[1].annotations[1]
    assert rect.segmentation == [[20.0, 18.0, 30.0, 18.0, 30.0, 26.0, 20.0, 26.0]]
    assert rect.bbox == [20.0, 18.0, 10.0, 8.0] and rect.area == 80.0
    back = _roundtrip(ds, tmp_path)
    for i in range(3):
        assert np.array_equal(_masks(ds, i), _masks(back, i))


def test_via_without_class_attribute(tmp_path: Path) -> None:
    data = json.loads((VIA / "via_region_data.json").read_text())
    for entry in data.values():
        regions = entry["regions"].values() if isinstance(entry["regions"], dict) else entry["regions"]
        for r in regions:
            r["region_attributes"] = {}
    (tmp_path / "v.json").write_text(json.dumps(data))
    ds = load_dataset(tmp_path / "v.json", images_dir=VIA, class_name="thing")
    assert ds.class_names == ["thing"] and ds.num_instances == 4


# -- CLI ----------------------------------------------------------------------------------------
CLI_SETS = ["PennFudanPed", "stardist_nuclei_2d", "coco128-seg", "coco_val2017_subset10"]
CLI_COUNTS = {"PennFudanPed": (136, 331), "stardist_nuclei_2d": (1, 125), "coco128-seg": (128, 929),
              "coco_val2017_subset10": (10, 77), "dsb2018_stage1_subset": (109, 5501)}


@pytest.mark.parametrize("name", CLI_SETS)
def test_cli_info_and_convert(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = data_path(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidItemWarning)
        assert main(["info", str(root), "--json", "--no-verify"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["format"] == detect_format(root)
        assert (stats["images"], stats["instances"]) == CLI_COUNTS[name]
        out = tmp_path / "c.json"
        verify = [] if name in ("stardist_nuclei_2d", "coco_val2017_subset10") else ["--no-verify"]
        assert main(["convert", str(root), "-o", str(out), "--class-name", "person", *verify]) == 0
    back = load_coco(out, check_images=False)
    assert (len(back), back.num_instances) == CLI_COUNTS[name]
    if name in ("PennFudanPed", "stardist_nuclei_2d"):
        assert back.class_names == ["person"]
    assert all(r.path.is_file() for r in back.images)


@pytest.mark.slow
def test_cli_convert_dsb_matches_library(dsb: InstanceDataset, tmp_path: Path) -> None:
    out = tmp_path / "dsb.json"
    root = data_path("dsb2018_stage1_subset")
    assert main(["convert", str(root), "-o", str(out), "--no-verify", "--class-name", "nucleus"]) == 0
    data = json.loads(out.read_text())
    assert data["categories"] == [{"id": 1, "name": "nucleus", "supercategory": ""}]
    assert data["annotations"] == dsb.to_coco()["annotations"]


def test_cli_via_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(VIA)]) == 0
    assert "via" in capsys.readouterr().out
    assert main(["convert", str(VIA / "via_region_data.json"), "-o", str(tmp_path / "v.json")]) == 0
    assert load_coco(tmp_path / "v.json").num_instances == 4
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 1
    assert "cannot detect the dataset format" in capsys.readouterr().err
    assert main(["info", str(VIA), "--format", "yolo"]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["info", str(VIA), "--format", "nonsense"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(VIA)])  # missing -o
    assert exc.value.code == 2


# -- layouts and pairing rules on tiny generated data ----------------------------------------------
def _img(path: Path, h: int = 8, w: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 70, np.uint8)).save(path)


def _lab(path: Path, ids: list[int], dtype: type = np.uint8) -> np.ndarray:
    lab = np.zeros((8, 10), dtype)
    for k, v in enumerate(ids):
        lab[1:7, 2 * k : 2 * k + 2] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, lab)
    else:
        Image.fromarray(lab).save(path)
    return lab


def test_label_image_flat_folder_pairing(tmp_path: Path) -> None:
    _img(tmp_path / "cell.png")
    _lab(tmp_path / "cell_mask.png", [3, 9])
    _img(tmp_path / "img7.png")
    lab = _lab(tmp_path / "labels7.tif", [1000, 65000, 2], np.uint16)
    assert detect_format(tmp_path) == "label-image"
    ds = load_dataset(tmp_path)
    assert [(r.file_name, len(r.annotations)) for r in ds.images] == [("cell.png", 2), ("img7.png", 3)]
    expected = np.stack([lab == v for v in (2, 1000, 65000)])  # ascending ids
    assert np.array_equal(_masks(ds, 1), expected)


def test_label_image_two_folders_nested(tmp_path: Path) -> None:
    _img(tmp_path / "images" / "train" / "a.png")
    _lab(tmp_path / "labels" / "train" / "a_labels.tif", [1, 2], np.uint16)
    _img(tmp_path / "images" / "val" / "a.png")
    _lab(tmp_path / "labels" / "val" / "a.tif", [5], np.uint16)
    assert detect_format(tmp_path) == "label-image"
    ds = load_dataset(tmp_path)
    assert [len(r.annotations) for r in ds.images] == [2, 1]
    assert [r.file_name for r in ds.images] == ["images/train/a.png", "images/val/a.png"]


def test_instance_pngs_masks_per_image_folder(tmp_path: Path) -> None:
    for stem, n in (("a", 2), ("b", 0)):
        _img(tmp_path / "images" / f"{stem}.png")
        (tmp_path / "masks" / stem).mkdir(parents=True)
        for k in range(n):
            m = np.zeros((8, 10), np.uint8)
            m[k : k + 3, 1:4] = 255
            Image.fromarray(m).save(tmp_path / "masks" / stem / f"{k}.png")
    assert detect_format(tmp_path) == "instance-pngs"
    ds = load_dataset(tmp_path)
    assert [len(r.annotations) for r in ds.images] == [2, 0]
    assert [a.area for a in ds.images[0].annotations] == [9.0, 9.0]


def test_via2_project_shapes_and_checkbox(tmp_path: Path) -> None:
    _img(tmp_path / "p.png", 40, 50)
    regions = [
        {"shape_attributes": {"name": "circle", "cx": 20, "cy": 20, "r": 8},
         "region_attributes": {"type": {"cell": True, "debris": False}}},
        {"shape_attributes": {"name": "ellipse", "cx": 30, "cy": 15, "rx": 6, "ry": 3, "theta": 0.3},
         "region_attributes": {"label": "debris"}},
    ]
    project = {"_via_settings": {}, "_via_img_metadata": {"p.png123": {"filename": "p.png", "size": 123,
                                                                        "regions": regions}}}
    (tmp_path / "project.json").write_text(json.dumps(project))
    assert detect_format(tmp_path / "project.json") == "via"
    ds = load_dataset(tmp_path / "project.json")
    assert [(c.id, c.name) for c in ds.categories] == [(1, "cell"), (2, "debris")]
    circle, ellipse = ds.images[0].annotations
    assert circle.category_id == 1 and len(circle.segmentation[0]) == 64
    assert circle.area == pytest.approx(np.pi * 8**2, rel=0.1)
    assert ellipse.area == pytest.approx(np.pi * 6 * 3, rel=0.2)


def test_coco_folder_split_and_ambiguous(tmp_path: Path) -> None:
    _img(tmp_path / "images" / "val2017" / "x.jpg")
    coco = {"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [],
            "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))
    ds = load_dataset(tmp_path)
    assert ds.images[0].path == tmp_path / "images" / "val2017" / "x.jpg"
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="expected one instances JSON"):
        load_dataset(tmp_path)
    # a folder holding just one COCO JSON (file names relative to it)
    (tmp_path / "annotations" / "instances_train2017.json").rename(tmp_path / "images" / "val2017" / "c.json")
    assert detect_format(tmp_path / "images" / "val2017") == "coco"
    assert len(load_dataset(tmp_path / "images" / "val2017", check_images=True)) == 1


def test_yolo_data_yaml_list(tmp_path: Path) -> None:
    _img(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.1 0.1 0.9 0.1 0.5 0.9\n")
    (tmp_path / "data.yaml").write_text("path: .\nnames: [cat, dog, bird]\n")
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["cat", "dog", "bird"] and ds.stats()["per_class"] == {"dog": 1}


def test_strip_rle_identical_to_pycocotools() -> None:
    """The column-strip encoders give byte-identical RLEs to instseg.masks.encode."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 20, 2))
        lab = rng.integers(0, 4, (h, w)) * int(rng.choice([1, 7, 100_000_000, -5]))
        if rng.random() < 0.2:
            lab[:] = lab.max()
        ids = np.unique(lab)
        ids = ids[ids != 0]
        expected = mask_codec.encode(lab[None] == ids[:, None, None]) if len(ids) else []
        assert label_image_rles(lab) == expected
        mask = lab != 0
        assert binary_mask_rle(mask) == (mask_codec.encode(mask)[0] if mask.any() else None)


def test_cli_names_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _img(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.1 0.1 0.9 0.1 0.5 0.9\n")
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    assert main(["info", str(tmp_path), "--names", str(tmp_path / "names.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["per_class"] == {"dog": 1}
    assert main(["info", str(tmp_path), "--names", str(tmp_path / "missing.txt")]) == 1
    assert "names file not found" in capsys.readouterr().err
