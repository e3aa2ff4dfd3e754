"""``instseg eval --tracking GT RES``: a CTC pair (a short copy of SIM+ and a perturbed result)
equals the Python functions and py-ctcmetrics; label-image folders and MOTS files equal
``tracking_metrics`` and TrackEval; SEG is null without SEG/; bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from pycocotools import mask as mask_utils

from instseg.cli.main import main
from instseg.evaluation import ctc_measures, ctc_tracking_metrics, evaluate_tracking
from instseg.evaluation.tracking import tracking_metrics
from instseg.evaluation.tracking_eval import CTC_KEYS, MOT_KEYS
from instseg.structures import Instances
from tests.conftest import data_path
from tests.evaluation.test_tracking_metrics import (
    label_to_instances,
    perturbed_labels,
    sim_frames,
    synthetic_sequence,
    trackeval_metrics,
    trackeval_mots,
    truncated_gt,
    write_result,
)

COUNTS = ("NS", "FN", "FP", "ED", "EA", "EC")


def run_json(gt: Path, res: Path, out: Path) -> dict[str, Any]:
    """``instseg eval --tracking GT RES --json OUT`` -> the JSON (strict: NaN is refused)."""
    assert main(["eval", "--tracking", str(gt), str(res), "--json", str(out)]) == 0
    return json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


@pytest.fixture(scope="module")
def ctc_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first 10 frames of SIM+ with SEG on three of them, and a perturbed result."""
    root = tmp_path_factory.mktemp("ctc")
    gt, frames, parents = truncated_gt("Fluo-N2DH-SIM+", 10, root)
    (gt / "SEG").mkdir()
    for t in (0, 4, 9):
        name = f"man_seg{t:03d}.tif"
        shutil.copy(data_path("ctc_tracking") / "Fluo-N2DH-SIM+" / "01_GT" / "SEG" / name, gt / "SEG" / name)
    labels, links = perturbed_labels(frames, 1)
    write_result(labels, {**parents, **links}, root / "01_RES", np.random.default_rng(0))
    return gt, root / "01_RES"


@pytest.mark.filterwarnings("ignore:Empty frame:UserWarning")  # py-ctcmetrics: dropped frames
def test_ctc_pair_equals_python_and_py_ctcmetrics(ctc_pair: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    gt, res = ctc_pair
    data = run_json(gt, res, tmp_path / "t.json")
    assert data["input"] == "ctc" and set(CTC_KEYS) <= set(data)
    python = {**ctc_tracking_metrics(gt, res), **ctc_measures(gt, res)}
    assert {k: data[k] for k in CTC_KEYS} == {k: python[k] for k in CTC_KEYS} == evaluate_tracking(gt, res)
    assert 0.5 < data["TRA"] < 1 and 0.3 < data["SEG"] < 1 and 0.3 < data["HOTA"] < 1
    assert min(data[k] for k in ("NS", "FN", "FP", "ED", "EA")) > 0
    pytest.importorskip("ctc_metrics", reason="py-ctcmetrics is a dev dependency")
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    want = evaluate_sequence(str(res), str(gt), threads=1,
                             metrics=["Valid", "DET", "SEG", "TRA", "HOTA", "IDF1", "MOTA"])  # fmt: skip
    assert want["Valid"] == 1
    for key in ("DET", "SEG", "TRA", "HOTA", "IDF1", "MOTA"):
        assert abs(data[key] - float(want[key])) <= 1e-9, (key, data[key], want[key])
    for key in COUNTS:
        assert data[key] == want[f"AOGM_{key}"], key
    assert (data["AOGM"], data["AOGM_0"]) == (want["AOGM"], want["AOGM_0"])
    text = capsys.readouterr().out
    assert "tracking measures (ctc)" in text and "  TRA " in text and "AOGM_0" in text


def test_ctc_without_seg_writes_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, frames, parents = truncated_gt("Fluo-N2DH-SIM+", 3, tmp_path)
    write_result(frames, parents, tmp_path / "01_RES", np.random.default_rng(0))
    data = run_json(gt, tmp_path / "01_RES", tmp_path / "t.json")
    assert data["SEG"] is None and data["TRA"] == data["DET"] == data["HOTA"] == 1.0
    assert "SEG     n/a (no SEG/ in the ground truth)" in capsys.readouterr().out


def trackeval_summary(gt: list[Instances], pred: list[Instances]) -> dict[str, float]:
    """TrackEval's own values of the :data:`MOT_KEYS` for a mask sequence."""
    h, c, i = trackeval_metrics(trackeval_mots(gt, pred))
    means = {k: float(np.mean(h[k])) for k in ("HOTA", "DetA", "AssA")}
    return {**means, "MOTA": c["MOTA"], "MOTSA": c["MOTA"], "sMOTSA": c["sMOTA"],
            "IDF1": i["IDF1"], "IDSW": c["IDSW"]}  # fmt: skip


def check_mot(data: dict[str, Any], gt: list[Instances], pred: list[Instances]) -> None:
    ours, theirs = tracking_metrics(gt, pred), trackeval_summary(gt, pred)
    for key in MOT_KEYS:
        assert abs(data[key] - ours[key]) <= 1e-12, (key, data[key], ours[key])
        assert abs(data[key] - theirs[key]) <= 1e-9, (key, data[key], theirs[key])


def test_label_folders(tmp_path: Path) -> None:
    frames = sim_frames(6)
    labels, _ = perturbed_labels(frames, 0)
    gt, res = tmp_path / "gt", tmp_path / "res"
    gt.mkdir()
    res.mkdir()
    for t, (a, b) in enumerate(zip(frames, labels)):  # paired by sorted name, not by name
        tifffile.imwrite(gt / f"man_track{t:03d}.tif", a.astype(np.uint16))
        tifffile.imwrite(res / f"mask{t:03d}.tif", b.astype(np.uint16))
    (res / "res_track.txt").write_text("not an image: ignored\n")
    data = run_json(gt, res, tmp_path / "t.json")
    assert data["input"] == "labels" and 0.3 < data["HOTA"] < 0.95 and data["IDSW"] > 0
    check_mot(data, [label_to_instances(f) for f in frames], [label_to_instances(f) for f in labels])


def write_mots(path: Path, frames: list[Instances]) -> Path:
    """MOTS Challenge lines (frames from 1) with pycocotools' RLEs; crowd = class 10."""
    lines = []
    for t, inst in enumerate(frames):
        h, w = inst.image_size
        crowd = inst.iscrowd.tolist()  # type: ignore[union-attr]
        for m, tid, c in zip(inst.masks.numpy(), inst.track_ids.tolist(), crowd):  # type: ignore[union-attr]
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            cls, tid = (10, 10000) if c else (2, tid)
            lines.append(f"{t + 1} {tid} {cls} {h} {w} {rle['counts'].decode('ascii')}\n")
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("seed", [3, 7])  # 7: the ground truth's last frame is empty
def test_mots_files(tmp_path: Path, seed: int) -> None:
    gt, pred = synthetic_sequence(seed, frames=8)
    data = run_json(write_mots(tmp_path / "gt.txt", gt), write_mots(tmp_path / "res.txt", pred),
                    tmp_path / "t.json")  # fmt: skip
    assert data["input"] == "mots" and 0.1 < data["HOTA"] < 0.95
    check_mot(data, gt, pred)


def test_bad_input_is_one_line(ctc_pair: tuple[Path, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    gt, res = ctc_pair
    labels, other = tmp_path / "labels", tmp_path / "other"
    labels.mkdir()
    other.mkdir()
    for t in range(3):
        tifffile.imwrite(labels / f"{t}.tif", np.ones((4, 4), np.uint16))
    for t in range(2):
        shutil.copy(labels / f"{t}.tif", other / f"{t}.tif")
    mots, small, big = tmp_path / "res.txt", tmp_path / "small.txt", tmp_path / "big.txt"
    mots.write_text("1 2001 2 4 4 4\n")
    for path, side in ((small, 4), (big, 5)):
        write_mots(path, [Instances.from_masks(np.ones((1, side, side), bool), track_ids=[1])])
    cases = [
        ([tmp_path / "nope", res], "nope: ground truth not found"),
        ([gt, tmp_path / "none"], "none: result not found"),
        ([gt, mots], "res.txt: expected a CTC result folder"),
        ([labels, mots], "res.txt: expected a folder of label images, as the ground truth"),
        ([labels, other], f"other: 2 label images, the ground truth {labels} has 3"),
        ([mots, mots], "res.txt: line 1: RLE covers 4 pixels, not 4x4"),
        ([small, big], "big.txt: frame 1: image size (5, 5), the ground truth's (4, 4)"),
    ]
    broken = tmp_path / "broken"
    shutil.copytree(labels, broken)
    (broken / "2.tif").write_bytes(b"not a TIFF")
    cases.append(([labels, broken], "2.tif: cannot read label image"))
    short = tmp_path / "short"
    short.mkdir()
    shutil.copy(res / "mask000.tif", short)
    cases.append(([gt, short], "short: 1 result masks for 10 reference frames (mask001.tif missing)"))
    for paths, message in cases:
        assert main(["eval", "--tracking", *map(str, paths)]) == 1, message
        err = capsys.readouterr().err
        assert err.startswith("instseg eval: error: ") and err.count("\n") == 1, err
        assert message in err, (message, err)
    assert main(["eval", "--tracking", str(gt)]) == 2
    assert "--tracking needs GT and RES" in capsys.readouterr().err
