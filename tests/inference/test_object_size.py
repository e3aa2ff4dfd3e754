"""Objects at the learnt size: the rescaling wrappers, ``auto``, ``Predictor(object_size=...)``,
``instseg predict --object-size`` and 16-bit microscopy TIFFs, with the shipped nuclei model."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from instseg.cli.main import main
from instseg.data.io import read_image, read_label_image
from instseg.data.synthetic_nuclei import make_nuclei_sample
from instseg.engine.checkpoint import save_checkpoint, shipped_path
from instseg.inference import Predictor
from instseg.inference.loading import load_model
from instseg.inference.object_size import ObjectSizeError, Rescaled, ResizedInput, rescale
from instseg.structures import Instances
from tests.conftest import data_path

LEARNT = 21.2  # the shipped model's stored object size (px)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nuclei():  # type: ignore[no-untyped-def]
    return load_model("nuclei")[0]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_nuclei_sample(0, size=(160, 192)).image


def _truth() -> float:
    """The median equivalent diameter of the sample's nuclei (px)."""
    masks = make_nuclei_sample(0, size=(160, 192)).instances.masks
    assert masks is not None
    return float(np.median(np.sqrt(4 * masks.flatten(1).sum(1).numpy() / math.pi)))


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255


def _big(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_LINEAR)


def _confident(inst: Instances, cut: float = 0.5) -> Instances:
    return inst.filter(score_threshold=cut)


def _median_area(inst: Instances) -> float:
    assert inst.masks is not None
    return float(inst.masks.flatten(1).sum(1).float().median())


def test_factor_one_is_the_model_itself(nuclei, image: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    x = _tensor(image)
    a = nuclei.predict([x])[0]
    for wrapped in (Rescaled(nuclei, 1.0), ResizedInput(nuclei, 1.0)):
        b = wrapped.predict([x])[0]
        assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
        assert torch.equal(a.scores, b.scores)
    assert rescale(nuclei, 1.0) is nuclei


def test_rescaled_outputs_are_in_the_input_pixels(nuclei, image: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """The image enlarged 2x seen at factor 0.5 gives the original's objects at 2x the size."""
    small = _confident(nuclei.predict([_tensor(image)])[0])
    big_img = _big(image, 2.0)
    for wrapper in (Rescaled, ResizedInput):
        big = _confident(wrapper(nuclei, 0.5).predict([_tensor(big_img)])[0])
        assert big.image_size == big_img.shape[:2] and big.masks is not None
        assert tuple(big.masks.shape[1:]) == big_img.shape[:2]
        assert abs(len(big) - len(small)) <= 0.15 * len(small)
        assert _median_area(big) / _median_area(small) == pytest.approx(4.0, rel=0.15)
        assert float(big.boxes[:, 2:].max()) <= big_img.shape[1] + 0.5
        # every mask lies in its box: masks and boxes went back through the same mapping
        for m, (x0, y0, x1, y1) in zip(big.masks, big.boxes.tolist()):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert xs.min() >= math.floor(x0) - 2 and xs.max() <= math.ceil(x1) + 1
            assert ys.min() >= math.floor(y0) - 2 and ys.max() <= math.ceil(y1) + 1


def test_auto_recovers_a_known_factor(image: np.ndarray) -> None:
    predictor = Predictor("nuclei", device="cpu", object_size="auto")
    assert predictor.scale_factor is None  # waits for its first image
    one = predictor.estimate_object_size([image]).object_size
    assert one == pytest.approx(_truth(), rel=0.25)
    found = predictor.estimate_object_size([_big(image, 2.5)])
    assert found.found and found.object_size / one == pytest.approx(2.5, rel=0.15)
    assert predictor.scale_factor == pytest.approx(LEARNT / found.object_size)
    assert "object size auto" in found.summary(LEARNT)


def test_auto_estimates_once_on_the_first_image(image: np.ndarray) -> None:
    lines: list[str] = []
    predictor = Predictor("nuclei", device="cpu", object_size="auto", log=lines.append)
    big = _big(image, 2.0)
    inst = predictor(big)
    assert len(lines) == 1
    assert predictor.scale_factor == pytest.approx(LEARNT / (2 * _truth()), rel=0.25)
    assert inst.image_size == big.shape[:2] and len(inst) > 10
    predictor(big)
    assert len(lines) == 1  # reused, not estimated again


def _old_checkpoint(tmp_path: Path, **changes) -> Path:  # type: ignore[no-untyped-def]
    ck = torch.load(shipped_path("nuclei"), map_location="cpu", weights_only=True)
    for key in ("object_size", "score_cutoff"):
        ck.pop(key, None)
    ck.update(changes)
    return save_checkpoint(ck, tmp_path / "old.pt")


def test_predictor_object_size_values_and_errors(tmp_path: Path) -> None:
    assert Predictor("nuclei", device="cpu", object_size=42.4).scale_factor == pytest.approx(0.5)
    assert Predictor("nuclei", device="cpu").scale_factor == 1.0
    for bad in (0, -3, "abc", float("nan")):
        with pytest.raises(ObjectSizeError, match="--object-size"):
            Predictor("nuclei", device="cpu", object_size=bad)
    old = _old_checkpoint(tmp_path)
    with pytest.raises(ObjectSizeError, match="does not know the object size"):
        Predictor(old, device="cpu", object_size="auto")
    # a model resizing every image's short side undoes rescaling
    from instseg.models import zoo

    model = zoo.build_model("maskrcnn_mnv3_fpn", 1, min_size=64, max_size=64)
    short = save_checkpoint({"model": model.state_dict(), "config": model.config,
                             "object_size": 20.0}, tmp_path / "short.pt")  # fmt: skip
    with pytest.raises(ObjectSizeError, match="short side"):
        Predictor(short, device="cpu", object_size=30)


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("in") / "nuclei.png"
    Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
def test_cli_bad_object_size_is_one_line_exit_2(
    value: str, png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", str(png), "--model", "nuclei", "--out", str(tmp_path / "o"),
                 "--object-size", value])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--object-size" in err
    assert not (tmp_path / "o").exists()


def test_cli_old_checkpoint_object_size_is_one_line_exit_2(
    png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _old_checkpoint(tmp_path)
    code = main(["predict", str(png), "--model", str(old), "--out", str(tmp_path / "o"),
                 "--object-size", "auto", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not know the object size" in err


def test_cli_predicts_a_16bit_lzw_tiff_with_auto(
    image: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 16-bit LZW TIFF (what CTC frames are) is read (imagecodecs), stretched to uint8 RGB
    and predicted; the estimate and the cut-off are printed once."""
    gray = _big(image, 2.0)[..., 0].astype(np.uint16) * 40 + 1000
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, gray, compression="lzw")
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (*gray.shape, 3)
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()
    out = tmp_path / "out"
    code = main(["predict", str(path), "--model", "nuclei", "--out", str(out), "--device", "cpu",
                 "--object-size", "auto", "--no-overlays"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("object size auto:") == 1 and err.count("score cut-off 0.4") == 1
    labels = read_label_image(out / "labels" / "frame.png")
    assert labels.shape == gray.shape and labels.max() > 10


def test_ctc_frames_read_as_rgb_uint8() -> None:
    """The shared CTC frames: SIM+ is 16-bit, GOWT1 8-bit; both become RGB uint8."""
    root = data_path("ctc_tracking")
    for seq, depth in (("Fluo-N2DH-SIM+", np.uint16), ("Fluo-N2DH-GOWT1", np.uint8)):
        path = root / seq / "01" / "t000.tif"
        assert tifffile.imread(path).dtype == depth
        rgb = read_image(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.max() == 255 or depth == np.uint8


def test_cli_data_mode_rescales_too(
    image: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data`` with ``--object-size auto``: estimated on the dataset's first image; the
    COCO results stay in the images' pixels."""
    import json

    from PIL import Image

    from instseg.data.dataset import Category, ImageRecord, InstanceDataset

    big = _big(image, 2.0)
    Image.fromarray(big).save(tmp_path / "a.png")
    h, w = big.shape[:2]
    ds = InstanceDataset([ImageRecord(1, "a.png", tmp_path / "a.png", h, w, [])],
                         [Category(1, "nucleus")])  # fmt: skip
    gt = ds.save_coco(tmp_path / "gt.json")
    out = tmp_path / "pred"
    code = main(["predict", "--data", str(gt), "--model", "nuclei", "--out", str(out),
                 "--device", "cpu", "--object-size", "auto"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and err.count("object size auto:") == 1
    results = json.loads((out / "results.json").read_text())
    assert len(results) > 10 and all(r["segmentation"]["size"] == [h, w] for r in results)
