"""What a checkpoint stores besides its weights: ``object_size`` and ``score_cutoff``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.engine.checkpoint import export_model, load_checkpoint
from instseg.engine.learnt import (
    SCORE_CANDIDATES,
    best_candidate,
    choose_score_cutoff,
    learnt_object_size,
    median_diameter,
)
from instseg.engine.train import TrainConfig, train
from instseg.masks import encode
from tests.engine import build_tiny, make_shapes_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_images=6)


def _diameters(ds) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([math.sqrt(4 * a.area / math.pi) for r in ds.images for a in r.annotations])


def test_object_size_is_the_median_diameter_at_the_inference_scale(shapes) -> None:  # type: ignore[no-untyped-def]
    d = float(np.median(_diameters(shapes)))
    assert median_diameter(shapes) == pytest.approx(d)
    assert learnt_object_size({}, shapes) == pytest.approx(d, abs=0.005)  # short-side model
    assert learnt_object_size({"input_scale": 1.7}, shapes) == pytest.approx(d, abs=0.005)
    # trained at x1.0, run at x2.0: the user's objects must be half as large to look learnt
    cfg = {"input_scale": 2.0, "train_input_scale": 1.0}
    assert learnt_object_size(cfg, shapes) == pytest.approx(d / 2, abs=0.005)
    assert learnt_object_size({}, shapes.subset([])) is None


def test_score_cutoff_is_the_f1_best_candidate(shapes) -> None:  # type: ignore[no-untyped-def]
    gt = shapes.to_coco()
    anns = gt["annotations"]
    # every GT object found at 0.8, plus false positives (empty boxes far away) at 0.3
    results = [{"image_id": a["image_id"], "category_id": a["category_id"],
                "segmentation": a["segmentation"], "score": 0.8} for a in anns]  # fmt: skip
    m = np.zeros((64, 80), bool)
    m[:3, :3] = True
    fp = encode(m)[0]
    results += [{"image_id": a["image_id"], "category_id": a["category_id"],
                 "segmentation": fp, "score": 0.3} for a in anns]  # fmt: skip
    best, f1 = choose_score_cutoff(gt, results)
    assert set(f1) == set(SCORE_CANDIDATES)
    assert f1[0.3] < 1.0 and f1[0.35] == pytest.approx(1.0) and f1[0.7] == pytest.approx(1.0)
    assert best == 0.5  # ties (0.35 .. 0.7 all give F1 1) go to the candidate nearest 0.5
    assert best_candidate({0.1: 0.5, 0.2: 0.6}) == 0.2


def test_training_stores_object_size_and_score_cutoff(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cfg = TrainConfig(out_dir=tmp_path, steps=2, batch_size=2, num_workers=0, progress=False,
                          lr=1e-3, warmup_steps=1, eval_every=2)  # fmt: skip
        train(build_tiny(num_classes=2, max_detections=5), shapes.subset([0, 1, 2, 3]), cfg,
              shapes.subset([4, 5]))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    size = float(np.median(_diameters(shapes.subset([0, 1, 2, 3]))))
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(tmp_path / name)
        assert ck["object_size"] == pytest.approx(size, abs=0.005), name
        assert ck["score_cutoff"] in SCORE_CANDIDATES, name
        assert ck["score_cutoff"] == ck["last_eval"]["score_cutoff"]
    slim = load_checkpoint(export_model(tmp_path / "best.pt", tmp_path / "slim.pt"))
    assert slim["object_size"] == ck["object_size"] and slim["score_cutoff"] == ck["score_cutoff"]


def test_no_validation_set_stores_no_cutoff(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = TrainConfig(out_dir=tmp_path, steps=1, batch_size=2, num_workers=0, progress=False,
                      lr=1e-3, warmup_steps=1)  # fmt: skip
    train(build_tiny(num_classes=2, max_detections=5), shapes, cfg)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert "score_cutoff" not in ck and ck["object_size"] > 0
