"""Flip TTA, box refinement and mask-threshold calibration of Mask R-CNN, on the shipped
nuclei model and generated nuclei images (real detections, offline)."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from instseg.cli.common import inference_from_args
from instseg.cli.main import main
from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
from instseg.data.synthetic_nuclei import make_nuclei_sample
from instseg.engine.checkpoint import shipped_path
from instseg.errors import InstsegError
from instseg.inference.loading import load_model
from instseg.inference.tta import FlipTTA, ScaleTTA, with_tta
from instseg.inference.tta_mask_rcnn import mirror_boxes, mirror_deltas
from instseg.masks import encode
from instseg.models.mask_rcnn import MaskRCNN
from instseg.structures import Instances
from tests.engine import check_calibration_against_predictions


@pytest.fixture(scope="module")
def model() -> MaskRCNN:
    m, _ = load_model(shipped_path("nuclei"))
    assert isinstance(m, MaskRCNN)
    return m


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory) -> InstanceDataset:
    """Two generated 128 x 160 nuclei images (25 nuclei each) as a labelled dataset."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("tta")
    records = []
    for i in range(2):
        s = make_nuclei_sample(i, size=(128, 160), n_nuclei=25)
        path = folder / f"n{i}.png"
        Image.fromarray(s.image).save(path)
        assert s.instances.masks is not None
        rles = encode(s.instances.masks.numpy())
        anns = [make_annotation(100 * i + k, i + 1, 1, r, 128, 160) for k, r in enumerate(rles)]
        records.append(ImageRecord(i + 1, path.name, path, 128, 160, anns))
    return InstanceDataset(records, [Category(1, "nucleus")])


def _image(ds: InstanceDataset, i: int = 0) -> torch.Tensor:
    return torch.from_numpy(ds.load_image(i).copy()).permute(2, 0, 1).float() / 255


def predict_augmented(
    model: MaskRCNN, images: list[torch.Tensor], flips: str = "hv", box_refine: int = 1
) -> list[Instances]:
    return FlipTTA(model, flips, box_refine).predict(images)


def test_mirror_boxes_matches_flipped_masks() -> None:
    mask = torch.zeros(30, 40, dtype=torch.bool)
    mask[3:11, 5:19] = True
    box = torch.tensor([[5.0, 3.0, 19.0, 11.0]])  # xyxy, exclusive max (pixel edges)
    for fx, fy in ((True, False), (False, True), (True, True)):
        dims = ([-1] if fx else []) + ([-2] if fy else [])
        ys, xs = torch.nonzero(mask.flip(dims), as_tuple=True)
        expected = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]).float()
        assert torch.equal(mirror_boxes(box, (30, 40), fx, fy), expected)
        assert torch.equal(mirror_boxes(expected, (30, 40), fx, fy), box)


def test_mirrored_deltas_decode_to_mirrored_boxes(model: MaskRCNN) -> None:
    """Deltas predicted in a mirrored view, mirrored back, decode (on the unmirrored RoI) to
    the mirror image of the box they decode to in the view."""
    torch.manual_seed(0)
    coder = model.roi_heads.box_coder
    xy = torch.rand(6, 2) * 50
    rois = torch.cat([xy, xy + 5 + torch.rand(6, 2) * 20], 1)
    deltas = torch.randn(6, 2, 4) * 0.3  # (R, classes, 4) in the view
    size = (80, 90)
    for fx, fy in ((True, False), (False, True), (True, True)):
        in_view = coder.decode(deltas.reshape(6, -1), [mirror_boxes(rois, size, fx, fy)])
        back = coder.decode(mirror_deltas(deltas, fx, fy).reshape(6, -1), [rois])
        for c in range(2):
            expected = mirror_boxes(in_view[:, c], size, fx, fy)
            assert torch.allclose(back[:, c], expected, atol=1e-4)


def test_no_views_no_refinement_reproduces_predict(model: MaskRCNN, nuclei: InstanceDataset) -> None:
    img = _image(nuclei)
    plain = model.predict([img])[0]
    same = predict_augmented(model, [img], flips="none", box_refine=0)[0]
    assert len(plain) > 15
    assert torch.allclose(plain.boxes, same.boxes, atol=1e-4)
    assert torch.allclose(plain.scores, same.scores, atol=1e-5)
    assert plain.masks is not None and same.masks is not None
    assert torch.equal(plain.masks, same.masks)


def test_tta_predicts_valid_instances_and_keeps_modes(model: MaskRCNN, nuclei: InstanceDataset) -> None:
    img = _image(nuclei)
    plain = model.predict([img])[0]
    model.train()
    try:
        out = FlipTTA(model, "hv", 1).predict([img, img[:, :100, :120]])
        assert model.training  # the wrapper ran the model in eval mode and restored its mode
    finally:
        model.eval()
    model.eval()
    first, crop = out
    assert first.image_size == (128, 160) and crop.image_size == (100, 120)
    assert first.masks is not None and first.masks.shape == (len(first), 128, 160)
    assert first.scores is not None and torch.all(first.scores[:-1] >= first.scores[1:])
    assert abs(len(first) - len(plain)) <= 0.3 * len(plain)  # the same nuclei, re-scored
    assert first.boxes[:, 2].max() <= 160 and first.boxes[:, 3].max() <= 128
    assert not torch.allclose(first.scores[:10], plain.scores[:10])  # views did change them


def test_bad_tta_names(model: MaskRCNN) -> None:
    with pytest.raises(ValueError, match="unknown view set 'x'"):
        predict_augmented(model, [torch.zeros(3, 32, 32)], flips="x")
    with pytest.raises(InstsegError, match="--box-refine"):
        inference_from_args(model, Namespace(box_refine=-1))
    with pytest.raises(InstsegError, match="--mask-threshold"):
        inference_from_args(model, Namespace(mask_threshold=1.5))
    from instseg.models.zoo import build_model

    solo = build_model("solov2_light_r18", 1)
    with pytest.raises(InstsegError, match="--tta-scales: scale TTA needs a fixed-scale model"):
        inference_from_args(solo, Namespace(tta_scales=(1.0, 1.2)))
    with pytest.raises(ValueError, match="scale TTA needs a fixed-scale model"):
        ScaleTTA(solo, (1.0, 1.2))
    with pytest.raises(ValueError, match="scale factors must be > 0"):
        with_tta(model, scales=(1.0, -1.0))
    with pytest.raises(InstsegError, match="--box-refine: Mask R-CNN models only"):
        inference_from_args(solo, Namespace(box_refine=1))
    runner, found = inference_from_args(solo, Namespace(tta="h"))  # SOLOv2 has flip TTA
    assert isinstance(runner, FlipTTA) and runner.flips == "h" and found is None
    assert inference_from_args(solo, Namespace())[0] is solo  # nothing asked: no wrapper


def test_calibration_scores_equal_full_predictions(model: MaskRCNN, nuclei: InstanceDataset) -> None:
    """Re-thresholding one pass of soft masks gives the AP that predicting at each threshold
    gives; the best candidate is returned and the model's own threshold is untouched."""
    ap = check_calibration_against_predictions(model, nuclei)
    assert ap[0.3] != ap[0.7]


def test_scale_tta_calibration_equals_full_predictions(
    model: MaskRCNN, nuclei: InstanceDataset
) -> None:
    """With ``tta_scales`` (and flips) calibration fuses the same views that ``predict``
    fuses: each candidate's AP equals a full prediction pass at that threshold; the scale
    TTA keeps the nuclei that one scale finds."""
    img = _image(nuclei)
    plain = model.predict([img])[0]
    scaled = with_tta(model, "h", (1.0, 1.25))
    assert isinstance(scaled, ScaleTTA) and scaled.scales == (1.0, 1.25)
    fused = scaled.predict([img])[0]
    ap = check_calibration_against_predictions(scaled, nuclei)
    assert model.transform.input_scale == 1.7  # the model itself is never changed
    assert ap[0.3] != ap[0.7]
    # fused keeps what any view found (single-view objects at a share of their score)
    assert fused.image_size == plain.image_size and len(fused) >= 0.7 * len(plain)


def test_cli_eval_with_tta_and_calibration(
    nuclei: InstanceDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = nuclei.subset([0]).save_coco(tmp_path / "gt.json")
    out = tmp_path / "stats.json"
    args = ["eval", "--model", "nuclei", "--data", str(gt), "--json", str(out), "--device", "cpu",
            "--tta", "hv", "--box-refine", "1", "--calibrate", str(gt)]  # fmt: skip
    assert main(args) == 0
    assert "calibrated mask threshold" in capsys.readouterr().err
    assert json.loads(out.read_text())["AP50"] >= 0.8
    assert main([*args[:-2], "--tta-scales", "1,1.2"]) == 0
    assert json.loads(out.read_text())["AP50"] >= 0.8
    # the scales' calibration reports the agreement power it chose
    assert main([*args, "--tta-scales", "1,1.2"]) == 0
    assert "calibrated scale-TTA agreement power" in capsys.readouterr().err
    assert main([*args[:-2], "--tta-scales", "1,1.2", "--tta-agreement", "-1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tta-agreement must be >= 0" in err
    with pytest.raises(SystemExit):
        main([*args[:-2], "--tta-scales", "1,x"])
    assert "--tta-scales: expected numbers" in capsys.readouterr().err
    bad = ["eval", "--model", "nuclei", "--data", str(gt), "--box-refine", "-2"]
    assert main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--box-refine" in err
    two = InstanceDataset(nuclei.subset([0]).images, [Category(1, "a"), Category(2, "b")])
    other = two.save_coco(tmp_path / "two.json")
    assert main(["eval", "--model", "nuclei", "--data", str(gt), "--calibrate", str(other)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "two.json" in err and "2 classes" in err


def test_tta_on_blank_and_tiny_images(model: MaskRCNN) -> None:
    """No nuclei, and an image smaller than a cell: valid (possibly empty) Instances."""
    out = predict_augmented(model, [torch.zeros(3, 64, 48), torch.rand(3, 9, 7)], "hv", 2)
    for inst, size in zip(out, [(64, 48), (9, 7)]):
        assert inst.image_size == size and inst.masks is not None
        assert inst.masks.shape == (len(inst), *size) and inst.boxes.shape == (len(inst), 4)
