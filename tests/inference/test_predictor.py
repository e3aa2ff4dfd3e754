"""Predictor: every input kind, EXIF orientation, batching, thresholds, checkpoints, a zoo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instseg.errors import DataError
from instseg.inference import Predictor, load_input, predict_tiled, resolve_device
from instseg.structures import Instances
from tests.inference import BlobModel, blob_image

BLOBS = [(20, 25, 8), (40, 70, 12)]


def expected_masks(img: np.ndarray) -> np.ndarray:
    """What BlobModel must find on an RGB uint8 image, computed independently of the Predictor."""
    from scipy import ndimage

    comp, n = ndimage.label(img.astype(np.float32).mean(2) / 255.0 > 0.5)
    return (
        np.stack([comp == k for k in range(1, n + 1)]) if n else np.zeros((0, *img.shape[:2]), bool)
    )


def same_set(inst: Instances, masks: np.ndarray) -> None:
    assert inst.masks is not None
    got = sorted(m.tobytes() for m in inst.masks.numpy())
    assert got == sorted(m.tobytes() for m in masks)


def test_numpy_rgb_and_path_and_pil(tmp_path: Path) -> None:
    img = blob_image(64, 96, BLOBS)
    Image.fromarray(img).save(tmp_path / "a.png")
    pred = Predictor(BlobModel(), device="cpu")
    for x in (img, tmp_path / "a.png", str(tmp_path / "a.png"), Image.open(tmp_path / "a.png")):
        inst = pred(x)
        assert inst.image_size == (64, 96)
        assert len(inst) == 2
        same_set(inst, expected_masks(img))
        assert inst.scores is not None and bool((inst.scores[:-1] >= inst.scores[1:]).all())


def test_boxes_in_original_coordinates() -> None:
    img = blob_image(64, 96, [(20, 25, 8)])
    inst = Predictor(BlobModel())(img)
    assert inst.boxes.tolist() == [
        [17.0, 12.0, 34.0, 29.0]
    ]  # disc r=8 at (cy=20, cx=25), x2/y2 exclusive


def test_gray_rgba_uint16_inputs() -> None:
    rgb = blob_image(50, 60, [(25, 30, 10)])
    gray = rgb.mean(2).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((50, 60, 1), 7, np.uint8)], axis=2)
    g16 = gray.astype(np.uint16) * 257
    pred = Predictor(BlobModel())
    for x in (gray, rgba, g16, Image.fromarray(rgba), Image.fromarray(gray)):
        inst = pred(x)
        assert inst.image_size == (50, 60)
        assert len(inst) == 1
        assert inst.masks is not None and int(inst.masks.sum()) == int(expected_masks(rgb).sum())
    assert load_input(g16).dtype == np.uint8 and load_input(g16).shape == (50, 60, 3)
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert np.abs(load_input(t).astype(int) - rgb.astype(int)).max() <= 1


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    # stored 60 x 100; EXIF orientation 6 = rotate 90 degrees clockwise for display -> 100 x 60
    img = np.zeros((60, 100, 3), np.uint8)
    img[5:25, 10:40] = 255  # bright block near the top-left of the stored pixels
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    pil.save(path, quality=95, exif=exif.tobytes())
    rotated = np.rot90(img, k=-1)  # what a viewer shows
    want = expected_masks(rotated)
    pred = Predictor(BlobModel())
    for x in (path, Image.open(path)):
        inst = pred(x)
        assert inst.image_size == (100, 60)
        assert len(inst) == 1 and inst.masks is not None
        inter = (inst.masks[0].numpy() & want[0]).sum()
        assert inter / (inst.masks[0].numpy() | want[0]).sum() > 0.9
        x1, y1, x2, y2 = inst.boxes[0].tolist()
        assert abs(x1 - 35) <= 1 and abs(x2 - 55) <= 1 and abs(y1 - 10) <= 1 and abs(y2 - 40) <= 1


def test_batching_equals_one_by_one() -> None:
    imgs = [
        blob_image(40 + 8 * i, 50 + 5 * i, [(15 + i, 20, 6 + i), (30, 40, 5)], seed=i)
        for i in range(5)
    ]
    model = BlobModel()
    batched = Predictor(model, batch_size=3).predict_batch(imgs)
    assert model.calls == [3, 2]
    single = [Predictor(BlobModel())(im) for im in imgs]
    assert len(batched) == 5
    for a, b in zip(batched, single):
        assert a.image_size == b.image_size
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
        assert a.masks is not None and b.masks is not None and torch.equal(a.masks, b.masks)


def test_thresholds_are_applied_and_outputs_editable() -> None:
    img = blob_image(64, 96, [(15, 15, 6), (40, 40, 6), (40, 80, 6)])
    inst = Predictor(BlobModel(), max_detections=2)(img)
    assert len(inst) == 2
    scores = Predictor(BlobModel())(img).scores
    assert scores is not None
    cut = float(scores[1])
    model = BlobModel()
    inst = Predictor(model, score_threshold=cut)(img)
    assert model.score_threshold == cut  # set on the model
    assert len(inst) == 2 and inst.scores is not None and float(inst.scores.min()) >= cut
    inst.scores += 1  # not an inference-mode tensor
    assert inst.masks is not None and not inst.masks.is_inference()


def test_errors() -> None:
    with pytest.raises(DataError, match="not found"):
        Predictor("/nonexistent/model.pt")
    with pytest.raises(TypeError, match="predict"):
        Predictor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        Predictor(BlobModel(), batch_size=0)
    with pytest.raises(TypeError, match="unsupported input"):
        Predictor(BlobModel())(12)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_zoo_model_from_checkpoint(tmp_path: Path) -> None:
    zoo = pytest.importorskip("instseg.models.zoo")
    ckpt_mod = pytest.importorskip("instseg.engine.checkpoint")
    name = "maskrcnn_mnv3_fpn" if "maskrcnn_mnv3_fpn" in zoo.MODELS else zoo.list_models()[0]
    torch.manual_seed(0)
    model = zoo.build_model(name, 2, min_size=64, max_size=64)
    ckpt = {
        "model": model.state_dict(),
        "config": model.config,
        "class_names": ["cat", "dog"],
        "cat_ids": [3, 9],
    }
    ckpt_mod.save_checkpoint(ckpt, tmp_path / "run" / "best.pt")
    with pytest.raises(DataError, match="zoo models ship without"):
        Predictor(name)
    pred = Predictor(
        tmp_path / "run", device="cpu", score_threshold=0.0, max_detections=5, batch_size=2
    )
    assert pred.class_names == ["cat", "dog"] and pred.cat_ids == [3, 9]
    imgs = [blob_image(48, 64, BLOBS), blob_image(40, 56, BLOBS[:1])]
    out = pred.predict_batch(imgs)
    for inst, im in zip(out, imgs):
        assert inst.image_size == im.shape[:2]
        assert len(inst) <= 5
        assert inst.masks is not None and inst.masks.shape == (len(inst), *im.shape[:2])
        assert inst.labels.dtype == torch.int64 and bool(
            ((inst.labels >= 0) & (inst.labels < 2)).all()
        )
    tiled = predict_tiled(pred, blob_image(100, 90, BLOBS), tile_size=64, overlap=16)
    assert tiled.image_size == (100, 90) and tiled.masks is not None
