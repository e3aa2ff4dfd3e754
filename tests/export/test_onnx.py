"""Exported files predict what the PyTorch models predict, on real images of two sizes or
more, for both families; the file alone is enough; bad input is one line and exit 1."""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from instseg.cli.main import main
from instseg.data.io import read_image
from instseg.data.synthetic_nuclei import make_nuclei_sample
from instseg.errors import DataError
from instseg.export import export_model, export_onnx
from instseg.inference import Predictor
from instseg.inference.onnx_model import OnnxModel, read_metadata
from instseg.models.zoo import MODELS, build_model
from instseg.structures import Instances
from tests.conftest import data_path

pytest.importorskip("onnxruntime")


def assert_same_instances(a: Instances, b: Instances, what: str) -> None:
    """One-to-one matching by mask IoU: same count, every pair IoU >= 0.98, same label, score
    difference <= 1e-3."""
    assert a.image_size == b.image_size, what
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} instances"
    if len(a) == 0:
        return
    assert a.masks is not None and b.masks is not None and a.scores is not None and b.scores is not None
    x, y = a.masks.flatten(1).float(), b.masks.flatten(1).float()
    inter = x @ y.t()
    iou = inter / (x.sum(1)[:, None] + y.sum(1)[None, :] - inter).clamp(min=1)
    rows, cols = linear_sum_assignment(-iou.numpy())
    worst = float(iou[rows, cols].min())
    assert worst >= 0.98, f"{what}: a matched pair has mask IoU {worst:.3f}"
    assert torch.equal(a.labels[rows], b.labels[cols]), what
    diff = float((a.scores[rows] - b.scores[cols]).abs().max())
    assert diff <= 1e-3, f"{what}: score difference {diff:.2e}"


@pytest.fixture(scope="module")
def solov2_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A SOLOv2 (light MobileNetV3) trained 60 steps on PennFudan, and its export."""
    data = data_path("PennFudanPed")
    out = tmp_path_factory.mktemp("solov2")
    args = ["train", "--data", str(data), "--model", "solov2_light_mnv3", "--out", str(out / "run"),
            "--steps", "60", "--workers", "0"]  # fmt: skip
    assert main(args) == 0
    report = export_onnx(out / "run", out / "solov2.onnx")
    assert report.metadata["input_size"] is None  # paper grids: any image size
    return out / "run", out / "solov2.onnx"


@pytest.fixture(scope="module")
def nuclei_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nuclei") / "nuclei.onnx"
    export_onnx("nuclei", path)
    return path


def test_solov2_file_matches_eager_on_pennfudan(solov2_files: tuple[Path, Path]) -> None:
    ckpt, file = solov2_files
    eager, exported = Predictor(ckpt, device="cpu"), Predictor(file, threads=2)
    files = sorted(glob.glob(str(data_path("PennFudanPed") / "PNGImages" / "*.png")))[:4]
    sizes, total = set(), 0
    for f in files:
        image = read_image(f)
        a, b = eager(image), exported(image)
        assert_same_instances(a, b, f)
        sizes.add(image.shape[:2])
        total += len(a)
    assert len(sizes) >= 2 and total > 0  # one file, several sizes, something detected


def test_maskrcnn_file_matches_eager_on_dsb(nuclei_file: Path) -> None:
    eager, exported = Predictor("nuclei", device="cpu"), Predictor(nuclei_file, threads=2)
    root = data_path("dsb2018_stage1_subset") / "stage1_train"
    sizes: dict[tuple[int, ...], str] = {}
    for f in sorted(glob.glob(str(root / "*" / "images" / "*.png"))):
        sizes.setdefault(read_image(f).shape[:2], f)
        if len(sizes) == 3:
            break
    for f in sizes.values():
        image = read_image(f)
        a, b = eager(image), exported(image)
        assert len(a) > 0
        assert_same_instances(a, b, f)


def test_file_carries_what_predicting_needs(nuclei_file: Path) -> None:
    meta = read_metadata(nuclei_file)
    assert meta["family"] == "maskrcnn" and meta["class_names"] == ["nucleus"]
    assert meta["input_scale"] == pytest.approx(1.7) and meta["version"]
    model = OnnxModel(nuclei_file)
    assert (model.score_threshold, model.max_detections) == (meta["score_threshold"], meta["max_detections"])
    predictor = Predictor(nuclei_file)
    assert predictor.class_names == ["nucleus"] and predictor.cat_ids == meta["cat_ids"]
    with pytest.raises(DataError, match="lower one"):
        Predictor(nuclei_file, score_threshold=meta["score_threshold"] / 2)
    with pytest.raises(ValueError, match="test-time augmentation"):
        Predictor(nuclei_file, tta="h")


def test_file_carries_object_size_and_cutoff(nuclei_file: Path) -> None:
    """The stored object size and score cut-off travel into the file; ``object_size`` resizes
    the image for the graph (``ResizedInput``) and gives about the checkpoint's detections."""
    meta = read_metadata(nuclei_file)
    assert meta["object_size"] == pytest.approx(21.2) and meta["score_cutoff"] == pytest.approx(0.4)
    image = cv2.resize(make_nuclei_sample(0, size=(128, 160)).image, (320, 256))
    eager = Predictor("nuclei", device="cpu", object_size=40)
    exported = Predictor(nuclei_file, threads=2, object_size=40)
    assert exported.score_cutoff == 0.4 and exported.scale_factor == pytest.approx(21.2 / 40)
    a, b = eager(image), exported(image)
    assert b.image_size == image.shape[:2] and b.masks is not None
    assert len(a) > 5 and abs(len(a) - len(b)) <= max(2, 0.15 * len(a))


def test_nothing_detected_gives_empty_outputs(tmp_path: Path) -> None:
    for name in ("solov2_light_mnv3", "maskrcnn_mnv3_fpn"):
        model = build_model(name, 2, score_threshold=0.999).eval()
        export_model(model, tmp_path / f"{name}.onnx")
        inst = OnnxModel(tmp_path / f"{name}.onnx").predict_array(np.zeros((70, 90, 3), np.uint8))
        assert len(inst) == 0 and inst.masks is not None and inst.masks.shape == (0, 70, 90)


def test_fixed_size_solov2_takes_its_size_only(tmp_path: Path) -> None:
    """Fixed-size cells compute the grid in Python: the file says its size and refuses others
    in one line."""
    model = build_model("solov2_light_mnv3", 1, grid_canvas=256, input_scale=1.0, max_size=256,
                        score_threshold=0.0, update_threshold=0.0).eval()  # fmt: skip
    report = export_model(model, tmp_path / "fixed.onnx", size=(256, 256))
    assert report.metadata["input_size"] == [256, 256]
    onnx_model = OnnxModel(tmp_path / "fixed.onnx")
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    want = model.predict([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert_same_instances(want, onnx_model.predict_array(image), "fixed size")
    with pytest.raises(DataError, match="exported for 256x256 images, got 200x256"):
        onnx_model.predict_array(image[:200])


def test_openvino_runs_the_same_file(nuclei_file: Path) -> None:
    pytest.importorskip("openvino")
    image = read_image(sorted(glob.glob(str(data_path("dsb2018_stage1_subset") / "stage1_train" / "*" / "images" / "*.png")))[0])
    a = OnnxModel(nuclei_file, threads=2).predict_array(image)
    b = OnnxModel(nuclei_file, backend="openvino", threads=2).predict_array(image)
    assert len(a) > 0
    assert_same_instances(a, b, "openvino")


def test_predict_cli_with_a_file(nuclei_file: Path, tmp_path: Path) -> None:
    root = data_path("dsb2018_stage1_subset") / "stage1_train"
    images = sorted(glob.glob(str(root / "*" / "images" / "*.png")))[:2]
    out = tmp_path / "pred"
    args = ["predict", *images, "--model", str(nuclei_file), "--out", str(out), "--threads", "2"]
    assert main([*args, "--tile", "192", "--tile-overlap", "64"]) == 0  # tiles of a 256 px image
    assert (out / "results.json").is_file() and len(list(out.rglob("*.png"))) >= 2


def test_bad_inputs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.onnx")]) == 1
    assert main(["export", "nuclei", "-o", str(tmp_path / "m.onnx"), "--opset", "9"]) == 1
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (20, 20)).save(image)
    for bad in (corrupt, foreign, tmp_path / "absent.onnx"):
        assert main(["predict", str(image), "--model", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("instseg ") for line in err), err
    assert "missing.pt" in err[0] and "opset 9" in err[1] and "corrupt.onnx" in err[2]
    assert "without instseg metadata" in err[3] and "absent.onnx" in err[4]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_zoo_model_exports(tmp_path: Path, name: str) -> None:
    """Each zoo architecture (untrained, every candidate kept) exports, and its file gives the
    PyTorch detections on an image of another size than the traced one."""
    kw: dict[str, float] = {"score_threshold": 0.0}
    if MODELS[name].family == "solov2":
        kw["update_threshold"] = 0.0
    torch.manual_seed(0)
    model = build_model(name, 3, **kw).eval()
    export_model(model, tmp_path / "m.onnx", size=(256, 320))
    image = np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    got = OnnxModel(tmp_path / "m.onnx", threads=2).predict_array(image)
    with torch.no_grad():
        want = model.predict([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert len(got) == len(want) > 0
    assert got.scores is not None and want.scores is not None
    # untrained scores tie: compare them sorted, and the labels as counts
    torch.testing.assert_close(got.scores.sort().values, want.scores.sort().values, atol=1e-3, rtol=0)
    assert torch.equal(got.labels.bincount(minlength=3), want.labels.bincount(minlength=3))
