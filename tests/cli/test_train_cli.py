"""``instseg train`` / ``predict`` / ``models`` and the ``eval --model`` helper, end to end.

Most tests put the tiny test model into the zoo (monkeypatch) and call the CLI in-process; one
slow test runs a real zoo model in a subprocess, one interrupts a subprocess with SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from instseg.cli.main import main
from tests.engine import REPO_ROOT, make_shapes_dataset

TINY = "tiny"


@pytest.fixture(autouse=True)
def _tiny_in_zoo(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from instseg.models import zoo
    from tests.engine import build_tiny

    def builder(num_classes: int, **overrides):  # type: ignore[no-untyped-def]
        return build_tiny(TINY, num_classes, **overrides)

    monkeypatch.setitem(
        zoo.MODELS,
        TINY,
        zoo.ModelSpec(builder, "test", "tiny test model", recipe=zoo.Recipe(lr=1e-3, batch_size=2)),
    )
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    ds = make_shapes_dataset(root / "images", n_images=6)
    return ds.save_coco(root / "train.json")


def _train(coco: Path, out: Path, *extra: str) -> int:
    return main(
        ["train", "--data", str(coco), "--model", TINY, "--out", str(out), "--workers", "0", *extra]
    )


def test_models_lists_the_zoo_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    from instseg.models.zoo import MODELS, list_models

    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert names == list_models() and TINY in names
    first = MODELS[names[0]]
    assert first.family == "maskrcnn" and first.recommended


def test_train_predict_eval(coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _train(coco, out, "--steps", "3", "--val-split", "0.34", "--eval-every", "3") == 0
    for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "train_args.json"):
        assert (out / name).is_file(), name
    capsys.readouterr()

    assert (
        main(["predict", "--data", str(coco), "--model", str(out), "--out", str(tmp_path / "pred")])
        == 0
    )
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    gt = json.loads(coco.read_text())
    assert results and {r["image_id"] for r in results} <= {im["id"] for im in gt["images"]}
    assert {r["category_id"] for r in results} <= {1, 3}
    r = results[0]
    assert (
        isinstance(r["segmentation"]["counts"], str)
        and len(r["bbox"]) == 4
        and 0 <= r["score"] <= 1
    )
    assert r["segmentation"]["size"] == [64, 80]
    from instseg.evaluation.coco_eval import evaluate

    assert evaluate(gt, results, "segm").stats.shape == (12,)  # the file is a valid results list

    assert main(["eval", "--model", str(out), "--data", str(coco), "--json", str(tmp_path / "ev.json")]) == 0  # fmt: skip
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert set(ev["segm"]) >= {"AP", "AP50", "AR100"} and "bbox" in ev
    assert "segm: AP" in capsys.readouterr().out

    # fine-tune: --model accepts a trained folder (same classes), new schedule in a new folder
    tuned = tmp_path / "tuned"
    assert main(["train", "--data", str(coco), "--model", str(out), "--out", str(tuned), "--steps", "1", "--workers", "0"]) == 0  # fmt: skip
    from instseg.engine.checkpoint import load_checkpoint

    assert load_checkpoint(tuned / "last.pt")["step"] == 1


def test_resume_continues_to_a_longer_schedule(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(coco, out, "--steps", "2") == 0
    assert _train(coco, out, "--steps", "4", "--resume") == 0
    from instseg.engine.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] == 4
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4


def test_no_silent_resume_and_no_training_over_a_run(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from instseg.engine.checkpoint import load_checkpoint

    out = tmp_path / "run"
    assert _train(coco, out, "--steps", "1", "--resume") == 1  # nothing to resume
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"looked for {out / 'last.pt'}" in err
    assert not (out / "last.pt").exists()
    assert _train(coco, out, "--steps", "2") == 0
    capsys.readouterr()
    assert _train(coco, out, "--steps", "1") == 1  # a run is there: say what to do
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "--overwrite" in err
    assert load_checkpoint(out / "last.pt")["step"] == 2  # untouched
    assert _train(coco, out, "--steps", "3", "--resume", "--overwrite") == 1
    assert "exclude each other" in capsys.readouterr().err
    assert _train(coco, out, "--steps", "3", "--resume", "--model", "maskrcnn_r18_fpn") == 1
    assert "this run trains tiny, not maskrcnn_r18_fpn" in capsys.readouterr().err
    other = make_shapes_dataset(tmp_path / "other", n_images=4).save_coco(tmp_path / "other.json")
    assert _train(other, out, "--steps", "3", "--resume") == 1  # other data
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained on other data (images 6 -> 4" in err
    assert _train(other, out, "--steps", "1", "--overwrite") == 0  # replaced: a new run
    assert load_checkpoint(out / "last.pt")["step"] == 1
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]
    assert _train(other, out, "--steps", "1", "--save-every", "0") == 2


def test_usage_and_data_errors(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(coco, tmp_path / "a") == 2  # no --time-budget / --epochs / --steps
    assert "--time-budget" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _train(coco, tmp_path / "a", "--steps", "2", "--epochs", "1")
    assert e.value.code == 2
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "missing.json"),
                "--model",
                TINY,
                "--out",
                str(tmp_path),
                "--steps",
                "1",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "missing.json" in err and len(err.strip().splitlines()) == 1
    assert (
        main(
            [
                "train",
                "--data",
                str(coco),
                "--model",
                "nope",
                "--out",
                str(tmp_path),
                "--steps",
                "1",
            ]
        )
        == 1
    )
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--data",
                str(coco),
                "--model",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "checkpoint not found" in capsys.readouterr().err


_SCRIPT = """
import sys
from instseg.models import zoo
from tests.engine import build_tiny
zoo.MODELS["tiny"] = zoo.ModelSpec(lambda k, **o: build_tiny("tiny", k, **o), "test", "tiny")
from instseg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_saves_last_and_exits_130(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", _SCRIPT, "train", "--data", str(coco), "--model", TINY, "--out", str(out),
           "--steps", "100000", "--workers", "0", "--warmup", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout and "Traceback" not in stderr
    from instseg.engine.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("family", ["maskrcnn", "solov2"])
def test_real_zoo_model_one_step(coco: Path, tmp_path: Path, family: str) -> None:
    """The family's first zoo entry (its recommended CPU default) trains one step via the CLI."""
    from instseg.models.zoo import MODELS, list_models

    names = [n for n in list_models() if MODELS[n].family == family]
    if not names:
        pytest.skip(f"no {family} model in the zoo")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "instseg", "train", "--data", str(coco), "--model", names[0],
           "--out", str(out), "--steps", "1", "--workers", "0", "--batch-size", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from instseg.inference.loading import load_model

    model, meta = load_model(out)  # rebuilt through zoo.build_model(**config)
    assert meta["config"]["name"] == names[0] and meta["cat_ids"] == [1, 3]
    assert meta["config"]["num_classes"] == 2 and len(meta["config"]) > 2  # autoconfig overrides


def test_augmentation_takes_the_crop_from_the_flag_or_the_model_scale() -> None:
    from pathlib import Path

    from instseg.cli.train import _augmentation
    from instseg.data.dataset import Category, ImageRecord, InstanceDataset

    ds = InstanceDataset([ImageRecord(1, "a.png", Path("a.png"), 900, 700)], [Category(1, "x")])
    ns = lambda crop: argparse.Namespace(augment="microscopy", crop=crop)  # noqa: E731
    aug = _augmentation(ns(None), {"input_scale": 2.0}, ds)
    assert aug.crop_size == (256, 256) and aug.vflip  # 512 input px at x2; preset kept
    assert _augmentation(ns(0), {"input_scale": 2.0}, ds).crop_size is None
    assert _augmentation(ns(None), {"min_size": 512}, ds).crop_size is None
    assert _augmentation(ns(300), {"min_size": 512}, ds).crop_size == (300, 300)


def test_model_args_parse_json_values_and_reject_malformed_items() -> None:
    from instseg.cli.train import _model_args
    from instseg.errors import DataError

    got = _model_args(["input_scale=1.0", "anchor_sizes=[[8],[16]]", "backbone=resnet34"])
    assert got == {"input_scale": 1.0, "anchor_sizes": [[8], [16]], "backbone": "resnet34"}
    assert _model_args(None) == {}
    for bad in ("input_scale", "=1", "not a key=1"):
        with pytest.raises(DataError, match="--model-arg"):
            _model_args([bad])


def test_pretrained_model_starts_from_imagenet_and_the_flag_is_checked(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zoo model with ImageNet weights starts from them with no flag (and says so); the
    checkpoint rebuilds without them; --pretrained on a from-scratch model is one line."""
    from instseg.inference.loading import load_model
    from instseg.models.common.imagenet import weights_file

    out = tmp_path / "mnv2"
    args = ["train", "--data", str(coco), "--model", "maskrcnn_mnv2_fpn", "--out", str(out),
            "--steps", "1", "--workers", "0", "--batch-size", "1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "backbone: ImageNet mobilenet_v2 weights" in printed
    # every data-adaptive choice and the recipe are printed with their reasons
    assert "input: " in printed and "median object" in printed and "detections: up to" in printed
    assert "batch 1, adamw" in printed and "cpu training recipe, --batch-size given" in printed
    want = torch.load(weights_file("mobilenet_v2"), map_location="cpu", weights_only=True)
    model, meta = load_model(out / "last.pt")
    assert "pretrained" not in meta["config"]
    body = model.backbone.body.state_dict()  # type: ignore[union-attr]
    # frozen BatchNorm: the ImageNet statistics are still the backbone's after a step
    key = "3.conv.0.1.running_mean"
    torch.testing.assert_close(body[key], want[f"features.{key}"], rtol=0, atol=0)
    scratch = [*args, "--pretrained", "none"]
    scratch[scratch.index("--out") + 1] = str(tmp_path / "scratch")
    assert main(scratch) == 0
    assert "backbone: from scratch" in capsys.readouterr().out
    bad = ["train", "--data", str(coco), "--model", "maskrcnn_r18_fpn", "--out",
           str(tmp_path / "bad"), "--steps", "1", "--pretrained", "imagenet"]  # fmt: skip
    assert main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pretrained" in err and "maskrcnn_mnv2_fpn" in err


def test_init_from_the_shipped_model_with_another_class_set(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--init nuclei on a 2-class set: the nuclei architecture, every weight that fits kept,
    the class-dependent head layers fresh; a torchvision state dict works the same way."""
    from instseg.engine.checkpoint import load_checkpoint, shipped_path
    from instseg.inference.loading import init_model

    out = tmp_path / "init"
    args = ["train", "--data", str(coco), "--init", "nuclei", "--out", str(out), "--steps", "1",
            "--workers", "0", "--batch-size", "1", "--lr", "0"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "init maskrcnn_mnv3_fpn from" in printed and "re-initialised 6" in printed
    shipped, tuned = load_checkpoint(shipped_path("nuclei")), load_checkpoint(out / "last.pt")
    # the input is refitted to this data by the rule that gave the shipped model x1.7 on
    # nuclei; the architecture is the shipped one
    from instseg.data.formats import load_dataset
    from instseg.models.autoconfig import INPUT_KEYS, suggest_for_model

    fit = suggest_for_model("maskrcnn_mnv3_fpn", load_dataset(coco), cpu=True)
    assert tuned["config"]["num_classes"] == 2 and shipped["config"]["input_scale"] == 1.7
    assert tuned["config"]["input_scale"] == fit["input_scale"] != 1.7
    assert f"input refitted to this data: input_scale 1.7 -> {fit['input_scale']}" in printed
    def architecture(config: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in config.items() if k not in INPUT_KEYS and k != "num_classes"}

    assert architecture(tuned["config"]) == architecture(shipped["config"])
    pinned = [*args, "--model-arg", "input_scale=1.7", "--out", str(tmp_path / "pinned")]
    assert main(pinned) == 0  # --model-arg wins
    assert load_checkpoint(tmp_path / "pinned" / "last.pt")["config"]["input_scale"] == 1.7
    key = "backbone.body.0.0.weight"  # lr 0: the kept weights are the shipped ones
    torch.testing.assert_close(tuned["model"][key], shipped["model"][key].float())
    head = "roi_heads.box_predictor.cls_score.weight"
    assert tuned["model"][head].shape[0] == 3 and shipped["model"][head].shape[0] == 2
    assert main([*args[:3], "--model", "maskrcnn_r18_fpn", *args[3:]]) == 2  # one of them
    assert "--model NAME or --init CHECKPOINT" in capsys.readouterr().err

    from instseg.models.zoo import build_model

    tv = build_model("maskrcnn_r50_fpn_torchvision", 4, min_size=64, max_size=96)
    torch.save({"model": tv.state_dict()}, tmp_path / "tv.pth")  # a reference-script checkpoint
    model, report = init_model(tmp_path / "tv.pth", 2)
    assert report.name == "maskrcnn_r50_fpn_torchvision" and len(report.fresh) == 6
    assert model.training and model.num_classes == 2  # type: ignore[union-attr]
    (tmp_path / "junk.pt").write_bytes(b"junk")
    junk = [*args[:3], "--init", str(tmp_path / "junk.pt"), *args[5:], "--out", str(tmp_path / "j")]
    assert main(junk) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "junk.pt" in err
