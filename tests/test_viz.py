"""Overlays: shape/dtype, masked pixels take the instance colour, text and boxes drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instseg.structures import Instances
from instseg.viz import overlay, palette, save_overlay


def _two_squares(track_ids: list[int] | None = None) -> tuple[np.ndarray, Instances]:
    image = np.full((64, 80, 3), 100, np.uint8)
    masks = np.zeros((2, 64, 80), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 35:60, 40:75] = True
    return image, Instances.from_masks(masks, labels=[0, 1], scores=[0.9, 0.5], track_ids=track_ids)


def test_palette_distinct() -> None:
    p = palette(12)
    assert p.shape == (12, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 12


def test_overlay_colours_masked_pixels_only() -> None:
    image, inst = _two_squares()
    out = overlay(image, inst, show_boxes=False, show_labels=False, show_scores=False, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert inst.masks is not None
    union = inst.masks.numpy().any(axis=0)
    changed = (out != image).any(axis=2)
    np.testing.assert_array_equal(changed, union)  # only masked pixels change
    colors = palette(2)
    inner0 = out[20, 20].astype(int)  # interior: 50 % blend of grey and colour 0
    np.testing.assert_allclose(inner0, (100 + colors[0].astype(int)) / 2, atol=1)
    np.testing.assert_array_equal(out[10, 20], colors[0])  # outline: the pure colour
    assert not np.array_equal(out[20, 20], out[45, 50])  # the two instances differ


def test_overlay_boxes_and_text() -> None:
    image = np.full((64, 80, 3), 100, np.uint8)
    yy, xx = np.mgrid[:64, :80]
    tri = (xx >= 20) & (yy >= 20) & (yy < 50) & (xx - 20 <= yy - 20)  # box corner (49, 20) is empty
    inst = Instances.from_masks(tri[None], labels=[1], scores=[0.75])
    quiet = {"show_labels": False, "show_scores": False}
    bare = overlay(image, inst, show_boxes=False, **quiet)  # type: ignore[arg-type]
    boxed = overlay(image, inst, **quiet)  # type: ignore[arg-type]
    assert (bare[20, 49] == 100).all() and (boxed[20, 49] == palette(1)[0]).all()
    text = overlay(image, inst, class_names=["cat", "dog"], show_boxes=False)
    above = slice(0, 20)  # the tag sits above the box
    assert (bare[above] == 100).all() and (text[above] != 100).any()
    assert (
        overlay(image, inst, class_names=["cat", "dog"], show_boxes=False, show_scores=False)[above]
        != text[above]
    ).any()


def test_overlay_box_only_and_empty() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    inst = Instances(
        image_size=(32, 32), boxes=torch.tensor([[4.0, 4.0, 20.0, 20.0]]), labels=torch.tensor([0])
    )
    out = overlay(image, inst, show_labels=False, show_scores=False)
    assert out[4, 10].any() and not out[10, 10].any()  # box edge drawn, interior untouched
    empty = Instances(image_size=(32, 32))
    np.testing.assert_array_equal(overlay(image, empty), image)


def test_overlay_colour_follows_track_id() -> None:
    image, a = _two_squares(track_ids=[5, 9])
    _, b = _two_squares(track_ids=[9, 5])  # same squares, ids swapped
    kw = {"show_boxes": False, "show_labels": False, "show_scores": False}
    oa, ob = overlay(image, a, **kw), overlay(image, b, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(oa[20, 20], ob[45, 50])
    np.testing.assert_array_equal(oa[45, 50], ob[20, 20])


def test_overlay_rejects_bad_image() -> None:
    _, inst = _two_squares()
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.zeros((64, 80), np.uint8), inst)


def test_save_overlay(tmp_path: Path) -> None:
    image, inst = _two_squares()
    path = save_overlay(tmp_path / "sub" / "o.png", image, inst, ["cat", "dog"])
    saved = np.asarray(Image.open(path))
    np.testing.assert_array_equal(saved, overlay(image, inst, ["cat", "dog"]))
