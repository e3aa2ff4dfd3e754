"""``instseg demo`` writes a dataset, a clip and overlays, and prints where they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instseg.cli.main import main
from instseg.data.coco import load_coco


def test_demo_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "3", "--frames", "4"]) == 0
    printed = capsys.readouterr().out
    # the headline: the shipped nuclei model segments the generated sample (CPU, offline)
    nuclei = out / "nuclei"
    summary = json.loads((nuclei / "summary.json").read_text())
    assert summary["f1"] >= 0.8 and summary["gt_instances"] >= 30, summary  # measured 0.971
    assert abs(summary["instances"] - summary["gt_instances"]) <= 0.2 * summary["gt_instances"]
    assert "F1 @ IoU 0.5" in printed and f"{summary['f1']:.3f}" in printed
    for name in ("sample.png", "overlay.png", "labels.png", "ground_truth_labels.png"):
        assert str(nuclei / name) in printed and (nuclei / name).stat().st_size > 0
    results = json.loads((nuclei / "results.json").read_text())
    assert len(results) == summary["instances"] and all(r["score"] >= 0.5 for r in results)
    gt = load_coco(nuclei / "ground_truth.json", check_images=True)
    assert gt.num_instances == summary["gt_instances"]
    from PIL import Image

    labels = np.asarray(Image.open(nuclei / "labels.png"))
    assert labels.shape == (320, 320) and int(labels.max()) == len(results)
    assert "images      3" in printed and "per class:" in printed
    assert str(out / "overview.png") in printed
    scenes = load_coco(out / "scenes" / "annotations.json", check_images=True)
    clip = load_coco(out / "clip" / "annotations.json", check_images=True)
    assert len(scenes) == 3 and scenes.num_instances > 0
    assert len(clip) == 4 and all(a.track_id for r in clip.images for a in r.annotations)
    overlays = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert len(overlays) == 3 + 4 and overlays[0] == "clip_000_0000.png"
    assert (out / "overview.png").stat().st_size > 0 and (out / "clip.gif").stat().st_size > 0
    # the overlay is the image with ground truth drawn on it, not a copy
    from PIL import Image

    img = np.asarray(Image.open(out / "scenes" / "images" / "000000.png"))
    ov = np.asarray(Image.open(out / "overlays" / "scene_000000.png"))
    assert img.shape == ov.shape and (img != ov).any()


def test_demo_seed_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert (
            main(
                [
                    "demo",
                    "--out",
                    str(tmp_path / name),
                    "--images",
                    "1",
                    "--frames",
                    "1",
                    "--seed",
                    "4",
                    "--no-model",
                ]
            )
            == 0
        )
    a = (tmp_path / "a" / "scenes" / "annotations.json").read_text()
    b = (tmp_path / "b" / "scenes" / "annotations.json").read_text()
    assert a == b
    assert not (tmp_path / "a" / "nuclei").exists()


def test_demo_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--model", "nucleii"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nucleii" in err and "shipped model" in err


def test_demo_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path), "--images", "0"])
    assert exc.value.code == 2


def test_demo_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["demo", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(target) in err and "not a folder" in err and len(err.splitlines()) == 1


def test_run_demo_with_predictor(tmp_path: Path) -> None:
    from instseg.cli.demo import run_demo
    from instseg.structures import Instances

    seen: list[tuple[int, ...]] = []

    def predictor(image: np.ndarray) -> Instances:
        seen.append(image.shape)
        masks = np.zeros((1, *image.shape[:2]), bool)
        masks[0, 8:40, 8:40] = True
        return Instances.from_masks(masks, labels=[0], scores=[0.42])

    lines: list[str] = []
    paths = run_demo(
        tmp_path, n_images=2, n_frames=2, predictor=predictor, log=lines.append, model=None
    )
    assert seen == [(256, 256, 3)] * 4  # every scene and every frame
    assert any("overlays (predictions)" in line for line in lines)
    assert paths["overview"].is_file()
