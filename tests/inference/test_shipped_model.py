"""The shipped ``nuclei`` model: name resolution, file size, and real predictions offline.

Floors were measured on the generated samples (seeds 0-9: F1@0.5 0.935-0.981 at score >= 0.5,
seed 0: 0.971) and set with a wide margin; a broken, untrained or mis-scaled model gets ~0.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from instseg.cli.main import main
from instseg.data.synthetic_nuclei import NucleiSample, make_nuclei_sample
from instseg.engine.checkpoint import SHIPPED, load_checkpoint, resolve_checkpoint, shipped_path
from instseg.errors import DataError
from instseg.evaluation.matching import match_instances
from instseg.inference.loading import resolve_model_path

F1_FLOOR = 0.85


@pytest.fixture(scope="module")
def sample() -> NucleiSample:
    return make_nuclei_sample(0)


@pytest.fixture(scope="module")
def sample_png(tmp_path_factory: pytest.TempPathFactory, sample: NucleiSample) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("nuclei") / "sample.png"
    Image.fromarray(sample.image).save(path)
    return path


def test_shipped_file_is_small_and_has_a_card() -> None:
    path = shipped_path("nuclei")
    assert path.is_file() and path.parent.name == "weights"
    assert path.stat().st_size <= 25 * 2**20
    ck = load_checkpoint(path)
    assert ck["config"]["name"] == "maskrcnn_mnv3_fpn" and ck["class_names"] == ["nucleus"]
    card = ck["card"]
    assert "dsb2018" in card["data"] and "command" in card
    assert 0 < card["val"]["AP"] < 1 and 0 < card["val"]["F1"] < 1


def test_resolve_names_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(SHIPPED) == {"nuclei"}
    assert resolve_model_path("nuclei") == shipped_path("nuclei")
    assert resolve_checkpoint("nuclei") == shipped_path("nuclei")
    # an existing path wins over a shipped name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nuclei").mkdir()
    assert resolve_model_path("nuclei") == Path("nuclei")
    with pytest.raises(DataError, match="no best.pt or last.pt"):
        resolve_checkpoint("nuclei")


def test_unknown_and_zoo_names_are_clear_errors() -> None:
    with pytest.raises(DataError, match="not a shipped model \\(nuclei\\)") as exc:
        resolve_model_path("nucleii")
    assert str(exc.value).startswith("nucleii:") and "\n" not in str(exc.value)
    with pytest.raises(DataError, match="zoo models ship without trained weights"):
        resolve_model_path("maskrcnn_r18_fpn")
    with pytest.raises(DataError, match="checkpoint not found"):
        resolve_checkpoint("nucleii")


def test_predictor_segments_generated_nuclei(sample: NucleiSample) -> None:
    from instseg.inference import Predictor

    pred = Predictor("nuclei", device="cpu", score_threshold=0.5)
    assert pred.class_names == ["nucleus"] and pred.meta["path"] == str(shipped_path("nuclei"))
    found = pred(sample.image)
    stats = match_instances(sample.instances, found, thresholds=[0.5])[0]
    assert stats.f1 >= F1_FLOOR, stats
    assert stats.mean_matched_iou >= 0.7, stats


def test_cli_predict_with_shipped_name(
    tmp_path: Path, sample: NucleiSample, sample_png: Path
) -> None:
    out = tmp_path / "pred"
    args = ["predict", str(sample_png), "--model", "nuclei", "--out", str(out)]
    assert main([*args, "--device", "cpu", "--score-threshold", "0.5"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.8 * len(sample.instances) <= len(results) <= 1.2 * len(sample.instances)
    assert {r["category_id"] for r in results} == {1}
    assert list((out / "labels").glob("sample*")) and list((out / "overlays").glob("sample*"))


def test_cli_unknown_model_is_one_line(
    tmp_path: Path, sample_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["predict", str(sample_png), "--model", "nucleii", "--out", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nucleii" in err and "nuclei)" in err
    assert not (tmp_path / "o").exists()


def test_cli_eval_with_shipped_name(tmp_path: Path, sample: NucleiSample, sample_png: Path) -> None:
    from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
    from instseg.masks import encode

    assert sample.instances.masks is not None
    h, w = sample.labels.shape
    anns = [
        make_annotation(k + 1, 1, 1, rle, h, w)
        for k, rle in enumerate(encode(sample.instances.masks.numpy()))
    ]
    rec = ImageRecord(1, sample_png.name, sample_png, h, w, anns)
    gt = InstanceDataset([rec], [Category(1, "nucleus")]).save_coco(sample_png.parent / "gt.json")
    out = tmp_path / "stats.json"
    args = ["eval", "--model", "nuclei", "--data", str(gt), "--json", str(out), "--device", "cpu"]
    assert main(args) == 0
    stats = json.loads(out.read_text())
    assert stats["model"] == str(shipped_path("nuclei")) and stats["AP50"] >= 0.8


def test_train_fine_tunes_from_shipped_name(tmp_path: Path) -> None:
    from instseg.cli.train import build_for_training
    from instseg.data.dataset import Category

    args = SimpleNamespace(
        model="nuclei", init=None, out=str(tmp_path / "run"), resume=False, device="cpu"
    )
    one = SimpleNamespace(categories=[Category(1, "nucleus")])
    model, recipe = build_for_training(args, one)  # type: ignore[arg-type]
    assert model.training and model.config["name"] == "maskrcnn_mnv3_fpn"
    assert recipe.batch_size == 1  # the architecture's CPU recipe
    two = SimpleNamespace(categories=[Category(1, "a"), Category(2, "b")])
    with pytest.raises(DataError, match="num_classes"):
        build_for_training(args, two)  # type: ignore[arg-type]


def test_models_lists_zoo_by_default_and_shipped_on_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from instseg.models.zoo import list_models

    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines() == list_models()
    assert main(["models", "--shipped"]) == 0
    printed = capsys.readouterr().out
    val = load_checkpoint(shipped_path("nuclei"))["card"]["val"]
    assert printed.startswith("nuclei ") and f"F1 {val['F1']:.3f}" in printed
    assert f"AP {val['AP']:.3f}" in printed
