"""SOLOv2's data-adaptive defaults (``suggest_solov2_config``, ``assignment_coverage``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
from instseg.models.autoconfig import DatasetSizeStats
from instseg.models.solov2.config import assignment_coverage, suggest_solov2_config
from instseg.structures import Instances
from tests.models.solov2.test_model import tiny_model


# -- data-adaptive defaults ---------------------------------------------------------------------
def _stats(size: tuple[int, int], per_image: int, obj: float, images: int = 10) -> DatasetSizeStats:
    rng = np.random.default_rng(0)
    objects = [
        [(float(s * s), float(s), float(s)) for s in obj * rng.uniform(0.5, 1.5, per_image)]
        for _ in range(images)
    ]
    return DatasetSizeStats.from_arrays([size] * images, objects)


def test_suggest_solov2_config_paper_and_nuclei() -> None:
    assert suggest_solov2_config(_stats((64, 64), 0, 10)) == {}
    # COCO-like: 800x1333 images, median object ~48 px -> the paper's grids and ranges
    coco = suggest_solov2_config(_stats((800, 1333), 5, 48))
    assert coco["num_grids"] == [40, 36, 24, 16, 12]
    assert coco["scale_ranges"][:4] == [[1.0, 96.0], [48.0, 192.0], [96.0, 384.0], [192.0, 768.0]]
    # crowded small nuclei: upsampled, smaller ranges, cells no larger than the objects
    nuc = suggest_solov2_config(_stats((256, 256), 150, 10))
    scale = nuc.get("input_scale") or nuc["min_size"] / 256
    assert scale > 1.5
    assert nuc["scale_ranges"][0][1] < 96
    assert 256 * scale / nuc["num_grids"][0] <= 10 * scale
    assert nuc["max_detections"] >= 150 and nuc["nms_pre"] >= nuc["max_detections"]
    # training on a CPU: Mask R-CNN's cheaper CPU input scale
    nuc_cpu = suggest_solov2_config(_stats((256, 256), 150, 10), cpu=True)
    assert nuc_cpu["input_scale"] == scale and 1.0 < nuc_cpu["train_input_scale"] < scale
    # small objects at a fixed scale: fixed-size cells on the typical training input side +
    # the prior (laid out at the training scale) and center votes
    side = 32 * int(np.ceil(256 * nuc_cpu["train_input_scale"] / 32))
    assert nuc_cpu["grid_canvas"] == side and nuc_cpu["position_prior"] is True
    assert nuc_cpu["center_votes"] is True
    assert nuc_cpu["point_nms"] is False
    # min-area filter scaled with the level-0 object size (paper: 8 px at 1/4 scale for b = 96)
    base = nuc_cpu["scale_ranges"][0][1]
    assert base < 96 and nuc_cpu["strides"] == [
        max(1, round(s * (base / 96) ** 2)) for s in (8, 8, 16, 32, 32)
    ]
    assert "strides" not in coco
    assert coco["grid_canvas"] == 1056 and coco["position_prior"]  # 48 px objects, ~1033 px side
    big = suggest_solov2_config(_stats((400, 600), 3, 150), cpu=True)  # pedestrian-like
    assert not {"position_prior", "center_votes", "point_nms"} & set(big)
    # the suggestions build a working model
    model = tiny_model(1, **nuc)
    out = model.losses([torch.rand(3, 32, 32)], [Instances((32, 32), masks=torch.zeros(0, 32, 32))])
    assert torch.isfinite(out["loss_cate"])


def _crowded_dataset() -> InstanceDataset:
    """4 images 128x128 crowded with 80 overlapping squares of 6-14 px each."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(4):
        anns = []
        for k in range(80):
            s = int(rng.integers(6, 15))
            y, x = (int(v) for v in rng.integers(0, 128 - s, 2))
            poly = [[x, y, x + s, y, x + s, y + s, x, y + s]]
            anns.append(make_annotation(k + 1, i + 1, 1, poly, 128, 128))
        images.append(ImageRecord(i + 1, f"{i}.png", Path(f"{i}.png"), 128, 128, anns))
    return InstanceDataset(images, [Category(1, "nucleus")])


def test_suggest_solov2_config_refines_grids_for_coverage() -> None:
    ds = _crowded_dataset()
    stats = DatasetSizeStats.from_dataset(ds)
    coarse = suggest_solov2_config(stats)
    fine = suggest_solov2_config(stats, ds)
    assert assignment_coverage(ds, coarse) < 0.97 <= assignment_coverage(ds, fine)
    assert fine["num_grids"][0] > coarse["num_grids"][0]
    assert fine["scale_ranges"] == coarse["scale_ranges"]
    # the paper's grids at the same input lose objects here too
    paper = {k: v for k, v in fine.items() if k not in ("num_grids", "scale_ranges")}
    assert assignment_coverage(ds, paper) < 0.97
