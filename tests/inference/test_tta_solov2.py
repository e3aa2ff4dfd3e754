"""SOLOv2 flip TTA (``inference.tta_solov2`` through ``FlipTTA``): cell mirroring, the view
average, equivariance, and mask-threshold calibration on the same network outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instseg.data.loader import TrainingDataset
from instseg.inference.calibrate import (
    MASK_CANDIDATES,
    choose_score_threshold,
    choose_thresholds,
)
from instseg.inference.tta import FlipTTA
from instseg.inference.tta_solov2 import augmented_raw, mirror_cells
from instseg.models.solov2.post import postprocess_batch
from tests.engine import check_calibration_against_predictions, make_shapes_dataset
from tests.models.solov2.test_model import VARIANTS, tiny_model

#: every cell a candidate, nothing dropped by the final score threshold
LOOSE: dict[str, object] = {"score_threshold": 0.0, "update_threshold": 0.0, "max_detections": 30}

H = ((False, False), (True, False))
NONE = ((False, False),)


def detect_flipped(model: torch.nn.Module, images: list[torch.Tensor], flips: str) -> list:
    """Per image ``(masks, boxes, labels, scores)`` with flip TTA."""
    tta = FlipTTA(model, flips)
    return postprocess_batch(tta.forward_raw(images), model.post_config())  # type: ignore[operator]


def test_mirror_cells_maps_each_cell_to_its_mirror() -> None:
    shapes, cpu = [(2, 3), (1, 2)], torch.device("cpu")
    assert mirror_cells(shapes, True, False, cpu).tolist() == [2, 1, 0, 5, 4, 3, 7, 6]
    assert mirror_cells(shapes, False, True, cpu).tolist() == [3, 4, 5, 0, 1, 2, 6, 7]
    assert mirror_cells(shapes, True, True, cpu).tolist() == [5, 4, 3, 2, 1, 0, 7, 6]
    for fx, fy in ((True, False), (False, True), (True, True)):
        perm = mirror_cells(shapes, fx, fy, cpu)
        assert torch.equal(perm[perm], torch.arange(8))  # its own inverse


@pytest.mark.parametrize("name", list(VARIANTS))
def test_no_flip_is_detect(name: str) -> None:
    model = tiny_model(**LOOSE, **VARIANTS[name]).eval()
    images = [torch.rand(3, 50, 70), torch.rand(3, 90, 40)]  # padded, different sizes
    with torch.no_grad():
        plain, same = model.detect(images), detect_flipped(model, images, "none")
    for a, b in zip(plain, same):
        assert len(a[3]) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_views_are_mirrored_back_and_averaged(name: str) -> None:
    """The 'h' view of an image is the model run on the mirrored image, mirrored back: cell
    probabilities averaged with the image's own, kernels re-indexed, features flipped."""
    model = tiny_model(point_nms=False, **LOOSE, **VARIANTS[name]).eval()
    img = torch.rand(3, 64, 96)  # scale 1, a multiple of 32: no padding
    both = augmented_raw(model, [img], H)
    own = augmented_raw(model, [img], NONE)
    mirror = augmented_raw(model, [img.flip(-1)], NONE)
    shapes = model.grid_shapes((64, 96))
    perm = mirror_cells(shapes, True, False, img.device)
    assert sum(r * c for r, c in shapes) == both.scores.shape[1] == len(perm)
    expected = (own.scores + mirror.scores[:, perm]) / 2
    torch.testing.assert_close(both.scores, expected)
    torch.testing.assert_close(both.kernels[1], mirror.kernels[0][:, perm])
    torch.testing.assert_close(both.feats[1], mirror.feats[0].flip(-1))
    torch.testing.assert_close(both.kernels[0], own.kernels[0])
    assert not torch.allclose(both.scores, own.scores)  # the view did change the scores


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("flips", ["h", "hv"])
def test_flip_tta_is_mirror_equivariant(name: str, flips: str) -> None:
    """A view set closed under the horizontal flip sees the same views of an image and of its
    mirror image (no padding), so the detections are mirror images of each other."""
    model = tiny_model(point_nms=False, **LOOSE, **VARIANTS[name]).eval()
    img = torch.rand(3, 64, 96)
    with torch.no_grad():
        a = detect_flipped(model, [img], flips)[0]
        b = detect_flipped(model, [img.flip(-1)], flips)[0]
    assert len(a[3]) == len(b[3]) > 5
    assert torch.equal(a[2], b[2])
    torch.testing.assert_close(a[3], b[3])
    assert (b[0] == a[0].flip(-1)).float().mean() > 0.999


def test_predict_with_tta_keeps_the_contract() -> None:
    model = FlipTTA(tiny_model(**LOOSE), "hv").eval()
    preds = model.predict([torch.rand(3, 50, 70), torch.rand(3, 90, 40)])
    assert [p.image_size for p in preds] == [(50, 70), (90, 40)]
    for p in preds:
        assert 0 < len(p) <= 30 and p.masks is not None and p.masks.shape[1:] == p.image_size
        assert p.scores is not None and (p.scores[:-1] >= p.scores[1:]).all()
    with pytest.raises(ValueError, match="unknown view set 'x'"):
        FlipTTA(tiny_model(), "x")
    with pytest.raises(ValueError, match="Mask R-CNN models only"):
        FlipTTA(tiny_model(), "h", box_refine=1)


def test_calibrated_mask_threshold_equals_full_predictions(tmp_path: Path) -> None:
    """Re-post-processing one network pass per image gives the AP that predicting at each
    threshold gives (flip TTA on); the model's own threshold is left alone."""
    ds = make_shapes_dataset(tmp_path, n_images=3)
    data = TrainingDataset(ds)
    model = tiny_model(num_classes=2, score_threshold=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(30):
        img, target = data[step % len(data)]
        loss = sum(model.losses([img], [target]).values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    model.eval()
    flipped = FlipTTA(model, "h")
    ap = check_calibration_against_predictions(flipped, ds)
    assert ap[0.3] != ap[0.7]
    # one pass for both choices: the cut-off is the one chosen at the chosen threshold
    best2, ap2, cut, f1, power, by_power = choose_thresholds(flipped, ds)
    assert tuple(ap2) == MASK_CANDIDATES["solov2"] and best2 == max(ap2, key=lambda c: ap2[c])
    assert (power, list(by_power)) == (0.0, [0.0])  # no scale TTA: the power is moot
    model.mask_threshold = best2
    assert (cut, f1) == choose_score_threshold(flipped, ds)
    with pytest.raises(ValueError, match="mask threshold candidates"):
        choose_thresholds(flipped, ds, mask_candidates=(0.0, 0.5))
