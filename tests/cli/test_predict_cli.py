"""``instseg predict SOURCE ...``: files, folders with bad files, outputs, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instseg.cli.main import main
from instseg.engine.checkpoint import save_checkpoint
from instseg.models import zoo


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo.build_model("maskrcnn_mnv3_fpn", 1, min_size=64, max_size=64)
    out = tmp_path_factory.mktemp("run")
    ckpt = {"model": model.state_dict(), "config": model.config, "class_names": ["blob"], "cat_ids": [1]}
    save_checkpoint(ckpt, out / "best.pt")
    return out


def test_predict_folder_with_bad_files(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(src / name)
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(["predict", str(src), "--model", str(model_dir), "--out", str(out), "--score-threshold", "0.0"])
    err = capsys.readouterr().err
    assert code == 1  # some inputs failed, the rest was processed
    assert "3 inputs failed" in err and "empty.png" in err and "corrupt.png" in err and "notes.txt" in err
    images = json.loads((out / "images.json").read_text())["images"]
    assert sorted(Path(im["file_name"]).name for im in images) == ["a.png", "b.jpg"]
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {im["id"] for im in images}
    assert (out / "instances.csv").exists() and (out / "labels").is_dir() and (out / "overlays").is_dir()
    # outputs are not overwritten without --overwrite
    assert main(["predict", str(src / "a.png"), "--model", str(model_dir), "--out", str(out)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert main(["predict", str(src / "a.png"), "--model", str(model_dir), "--out", str(out), "--overwrite"]) == 0


def test_predict_needs_source_or_data(model_dir: Path, tmp_path: Path) -> None:
    assert main(["predict", "--model", str(model_dir), "--out", str(tmp_path)]) == 2


def test_predict_calibrate_sets_the_output_score_cut_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--calibrate DATA`` in SOURCE mode: the mask threshold and the F1-best score cut-off
    are chosen on DATA; instances.csv (and label images, overlays) keep only detections at
    or above the cut-off, results.json keeps every one (for AP); ``--score-threshold`` still
    wins, in every output."""
    from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
    from instseg.data.synthetic_nuclei import make_nuclei_sample
    from instseg.masks import encode

    samples = [make_nuclei_sample(i, size=(128, 160), n_nuclei=20) for i in range(2)]
    path = tmp_path / "calib.png"
    Image.fromarray(samples[0].image).save(path)
    assert samples[0].instances.masks is not None
    rles = encode(samples[0].instances.masks.numpy())
    anns = [make_annotation(k + 1, 1, 1, r, 128, 160) for k, r in enumerate(rles)]
    calib = InstanceDataset([ImageRecord(1, path.name, path, 128, 160, anns)], [Category(1, "nucleus")])
    gt = calib.save_coco(tmp_path / "calib.json")
    src = tmp_path / "in.png"
    Image.fromarray(samples[1].image).save(src)
    out = tmp_path / "out"
    args = ["predict", str(src), "--model", "nuclei", "--out", str(out), "--device", "cpu",
            "--no-overlays", "--no-labels", "--calibrate", str(gt)]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("calibrated score cut-off"))
    cut = float(line.split()[3])
    assert f"score cut-off {cut:g} (--calibrate)" in err
    results = json.loads((out / "results.json").read_text())
    rows = (out / "instances.csv").read_text().splitlines()[1:]
    scores = [float(r.split(",")[3]) for r in rows]
    assert scores and min(scores) >= cut and min(r["score"] for r in results) < cut
    assert main([*args, "--overwrite", "--score-threshold", "0.05"]) == 0
    loose = (out / "instances.csv").read_text().splitlines()[1:]
    assert len(loose) > len(rows)  # the explicit threshold wins over the calibrated cut-off
