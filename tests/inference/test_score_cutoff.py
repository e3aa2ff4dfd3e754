"""The stored score cut-off: applied to what people look at (label images, overlays, CSV, the
Predictor's results), not to COCO results; ``--score-threshold`` overrides it everywhere; a
checkpoint without the stored keys predicts as before."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instseg.cli.main import main
from instseg.data.io import read_label_image
from instseg.data.synthetic_nuclei import make_nuclei_sample
from instseg.engine.checkpoint import save_checkpoint, shipped_path
from instseg.inference import Predictor, run_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "nuclei.png"
    Image.fromarray(make_nuclei_sample(1, size=(160, 192)).image).save(path)
    return path


def _outputs(out: Path) -> tuple[list[float], int, list[float]]:
    """(results.json scores, label image's highest id, instances.csv scores)."""
    results = [r["score"] for r in json.loads((out / "results.json").read_text())]
    labels = int(read_label_image(out / "labels" / "nuclei.png").max())
    with open(out / "instances.csv") as f:
        rows = [float(r["score"]) for r in csv.DictReader(f)]
    return results, labels, rows


def test_cutoff_applies_to_labels_csv_and_calls_not_to_coco_results(png: Path, tmp_path: Path) -> None:
    predictor = Predictor("nuclei", device="cpu")
    cut = predictor.score_cutoff
    assert cut == 0.4 and predictor.score_threshold is None  # stored in nuclei.pt
    shown = predictor(png)
    every = predictor.predict_arrays([np.asarray(Image.open(png).convert("RGB"))], apply_cutoff=False)[0]
    assert shown.scores is not None and every.scores is not None
    assert bool((shown.scores >= cut).all()) and bool((every.scores < cut).any())
    assert len(shown) == int((every.scores >= cut).sum())
    run_batch(predictor, png, tmp_path / "out", progress=False)
    results, labels, rows = _outputs(tmp_path / "out")
    assert len(results) == len(every) and min(results) < cut  # COCO results keep every score
    assert labels == len(shown) == len(rows) and min(rows) >= cut


def test_score_threshold_overrides_the_stored_cutoff_everywhere(png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(png), "--model", "nuclei", "--out", str(out), "--device", "cpu",
                 "--score-threshold", "0.7", "--no-overlays"]) == 0  # fmt: skip
    results, labels, rows = _outputs(out)
    assert min(results) >= 0.7 and min(rows) >= 0.7 and labels == len(results) == len(rows)


def test_old_checkpoint_without_the_keys_predicts_as_before(
    png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = torch.load(shipped_path("nuclei"), map_location="cpu", weights_only=True)
    for key in ("object_size", "score_cutoff"):
        ck.pop(key)
    old = save_checkpoint(ck, tmp_path / "old.pt")
    predictor = Predictor(old, device="cpu")
    assert predictor.score_cutoff is None and predictor.learnt_size is None
    a, b = predictor(png), Predictor("nuclei", device="cpu").predict_arrays(
        [np.asarray(Image.open(png).convert("RGB"))], apply_cutoff=False
    )[0]
    assert torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores)  # type: ignore[arg-type]
    out = tmp_path / "out"
    assert main(["predict", str(png), "--model", str(old), "--out", str(out), "--device", "cpu",
                 "--no-overlays"]) == 0  # fmt: skip
    assert "score cut-off: none" in capsys.readouterr().err
    results, labels, rows = _outputs(out)
    assert labels == len(results) == len(rows) == len(a)
