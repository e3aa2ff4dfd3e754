"""``instseg demo`` writes a dataset, a clip and overlays, and prints where they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instseg.cli.main import main
from instseg.data.coco import load_coco


def test_demo_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "3", "--frames", "4"]) == 0
    printed = capsys.readouterr().out
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
                ]
            )
            == 0
        )
    a = (tmp_path / "a" / "scenes" / "annotations.json").read_text()
    b = (tmp_path / "b" / "scenes" / "annotations.json").read_text()
    assert a == b


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
    paths = run_demo(tmp_path, n_images=2, n_frames=2, predictor=predictor, log=lines.append)
    assert seen == [(256, 256, 3)] * 4  # every scene and every frame
    assert any("overlays (predictions)" in line for line in lines)
    assert paths["overview"].is_file()
