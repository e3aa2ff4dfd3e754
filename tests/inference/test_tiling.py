"""Tiled inference: objects across tile borders come out once, equal to an untiled run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from instseg.inference import Predictor, predict_tiled, predict_tiled_sparse, tile_grid
from instseg.inference.tile_merge import Piece, merge_pieces
from instseg.inference.tiling import crop_to_rle
from instseg.masks import decode, encode
from instseg.structures import Instances
from tests.inference import BlobModel, blob_image

LINES = (384, 512, 896)  # inner tile edges of a 1024 image with tile 512, overlap 128


def scene(size: int = 1024, seed: int = 0) -> tuple[np.ndarray, int]:
    """Discs (some centred on inner tile edges, two almost touching across one), a long bar
    and a big disc (both larger than the overlap); returns the image and the object count."""
    rng = np.random.default_rng(seed)
    blobs: list[tuple[int, int, int]] = [
        (200, 505, 20),
        (200, 547, 20),
    ]  # 1-px gap across x=512..527
    blobs += [(LINES[i % 3], LINES[(i + 1) % 3], 25) for i in range(3)]  # on line crossings
    big = [(150, 150, 170, 870)]  # bar y 150..170, x 150..870 (crosses every vertical line)
    disc = (700, 650, 110)  # radius 110 > overlap / 2

    def free(cy: int, cx: int, r: int) -> bool:
        if not (r + 2 <= cy < size - r - 2 and r + 2 <= cx < size - r - 2):
            return False
        if any((cy - y) ** 2 + (cx - x) ** 2 < (r + q + 4) ** 2 for y, x, q in [*blobs, disc]):
            return False
        return not (150 - r - 4 <= cy <= 170 + r + 4)

    while len(blobs) < 40:
        r = int(rng.integers(6, 40))
        if rng.random() < 0.5:  # straddle a line
            cy, cx = int(rng.integers(0, size)), int(rng.choice(LINES) + rng.integers(-r, r + 1))
            if rng.random() < 0.5:
                cy, cx = cx, cy
        else:
            cy, cx = (int(v) for v in rng.integers(0, size, 2))
        if free(cy, cx, r):
            blobs.append((cy, cx, r))
    img = blob_image(size, size, [*blobs, disc], seed=seed)
    y0, x0, y1, x1 = big[0]
    img[y0:y1, x0:x1] = (250, 150, 150)
    return img, len(blobs) + 2


def iou_matrix(a: Instances, b: Instances) -> np.ndarray:
    assert a.masks is not None and b.masks is not None
    fa = a.masks.flatten(1).float()
    fb = b.masks.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return (inter / union.clamp(min=1)).numpy()


def assert_same_instances(
    tiled: Instances, whole: Instances, min_iou: float = 0.9, min_score_match: float = 1.0
) -> None:
    assert len(tiled) == len(whole)
    iou = iou_matrix(whole, tiled)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    assert (iou[rows, cols] >= min_iou).all(), np.sort(iou[rows, cols])[:5]
    assert torch.equal(whole.labels[rows], tiled.labels[cols])
    assert whole.scores is not None and tiled.scores is not None
    same = (whole.scores[rows] - tiled.scores[cols]).abs() <= 1e-3
    # a union of cut pieces takes the best piece's score; every other instance keeps its own
    assert float(same.float().mean()) >= min_score_match


def test_tile_grid() -> None:
    tiles = tile_grid(1024, 1000, 512, 128)
    assert sorted({t[0] for t in tiles}) == [0, 384, 512]
    assert sorted({t[1] for t in tiles}) == [0, 384, 488]
    assert all(t[2] - t[0] == 512 and t[3] - t[1] == 512 for t in tiles)
    cover = np.zeros((1024, 1000), bool)
    for y0, x0, y1, x1 in tiles:
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert tile_grid(100, 80, 512, 128) == [(0, 0, 100, 80)]
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, 64)


def test_tiled_equals_untiled_across_borders() -> None:
    img, n = scene()
    pred = Predictor(BlobModel(), batch_size=4)
    whole = pred(img)
    assert len(whole) == n
    tiled = predict_tiled(pred, img, tile_size=512, overlap=128)
    assert tiled.image_size == (1024, 1024)
    assert_same_instances(tiled, whole, min_iou=0.9)
    # thresholding is local, so the merged masks are exact
    assert_same_instances(tiled, whole, min_iou=1.0)
    assert tiled.scores is not None and bool((tiled.scores[:-1] >= tiled.scores[1:]).all())


def test_small_overlap_unions_cut_pieces() -> None:
    img, n = scene(seed=1)
    whole = Predictor(BlobModel())(img)
    fn = BlobModel()
    tiled = predict_tiled(
        lambda t: fn.predict([torch.from_numpy(t).permute(2, 0, 1).float() / 255])[0], img, 256, 32
    )
    assert_same_instances(tiled, whole, min_iou=1.0)


def test_missing_sliver_in_one_tile_is_harmless() -> None:
    """A model that drops small pieces (slivers at tile edges) still gives whole objects."""
    img, n = scene(seed=2)
    model = BlobModel()

    def fn(tile: np.ndarray) -> Instances:
        inst = model.predict([torch.from_numpy(tile).permute(2, 0, 1).float() / 255])[0]
        return inst.filter(min_area=60)

    whole = fn(img)
    tiled = predict_tiled(fn, img, 512, 128)
    assert_same_instances(tiled, whole, min_iou=0.9)


def test_sparse_outputs_agree() -> None:
    img, _ = scene(seed=3)
    sparse = predict_tiled_sparse(Predictor(BlobModel()), img, 512, 128)
    inst = sparse.to_instances()
    assert inst.masks is not None
    for crop, (y0, x0), box in zip(sparse.crops, sparse.offsets.tolist(), sparse.boxes.tolist()):
        assert crop.shape == (box[3] - box[1], box[2] - box[0]) and (y0, x0) == (box[1], box[0])
        assert crop.shape[0] < 1024 and crop.any(0).all() and crop.any(1).all()  # tight crops
    assert np.array_equal(decode(sparse.to_rles(), 1024, 1024), inst.masks.numpy())
    lab = sparse.to_label_image()
    assert lab.dtype == np.uint16
    for i, m in enumerate(inst.masks.numpy()):
        assert (lab[m] == i + 1).all()  # disjoint blobs: every pixel shows its own instance
    assert set(np.unique(lab)) == set(range(len(inst) + 1))


@pytest.mark.parametrize("seed", range(6))
def test_crop_to_rle_matches_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    if seed == 0:
        y0, x0, ch, cw = 0, 0, h, w
    crop = rng.random((ch, cw)) < (0.5 if seed != 1 else 1.0)
    full = np.zeros((h, w), bool)
    full[y0 : y0 + ch, x0 : x0 + cw] = crop
    assert crop_to_rle(crop, y0, x0, h, w) == encode(full)[0]


def test_real_microscopy_image_tiled_equals_untiled() -> None:
    import tifffile
    from scipy import ndimage

    from tests.conftest import data_path

    raw = tifffile.imread(data_path("stardist_nuclei_2d") / "img2d.tif")  # 512x512 uint16 nuclei
    img = ndimage.gaussian_filter(raw.astype(np.float32), 2)  # float image: stretched to uint8
    pred = Predictor(BlobModel(threshold=0.2))
    whole = pred(img)
    assert 60 <= len(whole) <= 120
    tiled = predict_tiled(pred, img, tile_size=160, overlap=48)  # some clumps exceed the overlap
    assert_same_instances(tiled, whole, min_iou=1.0, min_score_match=0.9)


def _piece(
    tile: int,
    y0: int,
    x0: int,
    h: int,
    w: int,
    label: int = 0,
    score: float = 0.9,
    cut: bool = False,
) -> Piece:
    return Piece(tile, label, score, y0, x0, np.ones((h, w), bool), cut, frozenset({tile}))


def test_merge_rules_on_hand_made_pieces() -> None:
    tiles = tile_grid(40, 100, 60, 20)  # (0, 0, 40, 60) and (0, 40, 40, 100): shared x 40..60
    assert tiles == [(0, 0, 40, 60), (0, 40, 40, 100)]
    whole_b = _piece(1, 10, 50, 10, 20, score=0.8)  # x 50..70, complete in tile 1
    cut_a = _piece(0, 10, 50, 10, 10, score=0.95, cut=True)  # x 50..60, touches tile 0's right edge
    out = merge_pieces([cut_a, whole_b], tiles)
    assert len(out) == 1 and out[0] is whole_b  # the tile that saw it whole wins

    other_label = _piece(0, 10, 50, 10, 10, label=1, cut=True)
    assert len(merge_pieces([other_label, whole_b], tiles)) == 1  # a fragment inside: rule 4
    far = _piece(0, 10, 45, 10, 15, label=1, cut=True)  # x 45..60: 1/3 outside whole_b
    assert len(merge_pieces([far, whole_b], tiles)) == 2  # different label: kept
    assert len(merge_pieces([far, whole_b], tiles, class_agnostic=True)) == 1

    # an object larger than the overlap: cut in both tiles -> one union
    left = _piece(0, 5, 10, 10, 50, cut=True, score=0.7)  # x 10..60
    right = _piece(1, 5, 40, 10, 50, cut=True, score=0.6)  # x 40..90 (left edge 40 is inner)
    (u,) = merge_pieces([left, right], tiles)
    assert u.box == (5, 10, 15, 90) and u.mask.all() and u.score == 0.7

    # pieces of one tile are never merged, however much they overlap
    a1, a2 = _piece(1, 0, 70, 10, 10), _piece(1, 2, 72, 10, 10, score=0.5)
    assert len(merge_pieces([a1, a2], tiles)) == 2
