"""Matching metrics: hand-made cases with known answers, label-image vs Instances paths, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.cli.eval_matching import add_matching_arguments, run_matching
from instseg.errors import DataError
from instseg.evaluation.matching import (
    DEFAULT_THRESHOLDS,
    MatchingStats,
    label_image_iou,
    match_instances,
    match_iou,
    match_label_images,
    matching_stats,
    sum_stats,
)
from instseg.evaluation.matching_dataset import evaluate_matching
from instseg.masks import encode
from instseg.structures import Instances
from tests.conftest import data_path


def strip(*spans: tuple[int, int], n: int = 30) -> np.ndarray:
    """A 1 x n label image: span k (start, stop) gets id k + 1."""
    out = np.zeros((1, n), dtype=np.int64)
    for k, (a, b) in enumerate(spans):
        out[0, a:b] = k + 1
    return out


def at(stats: list[MatchingStats], t: float) -> MatchingStats:
    return next(s for s in stats if abs(s.threshold - t) < 1e-9)


def scene(rng: np.random.Generator, h: int = 48, w: int = 64, n: int = 8) -> np.ndarray:
    lab = np.zeros((h, w), dtype=np.int64)
    for k in range(n):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        lab[y : y + rng.integers(4, 14), x : x + rng.integers(4, 14)] = 3 * k + 7  # non-consecutive ids
    return lab


def test_label_image_iou_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    g, p = scene(rng), scene(rng)
    iou, gi, pi = label_image_iou(g, p)
    assert list(gi) == sorted(set(np.unique(g)) - {0}) and list(pi) == sorted(set(np.unique(p)) - {0})
    for a, ga in enumerate(gi):
        for b, pb in enumerate(pi):
            inter = np.sum((g == ga) & (p == pb))
            union = np.sum((g == ga) | (p == pb))
            assert iou[a, b] == pytest.approx(inter / union)


def test_perfect_prediction_with_permuted_ids() -> None:
    g = strip((0, 5), (7, 12), (20, 28))
    p = np.where(g > 0, 10 - g, 0)
    for s in match_label_images(g, p):
        assert (s.tp, s.fp, s.fn) == (3, 0, 0)
        assert s.precision == s.recall == s.f1 == s.accuracy == s.panoptic_quality == 1.0


def test_one_missed_and_one_extra() -> None:
    g = strip((0, 5), (7, 12), (20, 28))
    missed = match_label_images(g, strip((0, 5), (7, 12)))
    assert {(s.tp, s.fp, s.fn) for s in missed} == {(2, 0, 1)}
    assert at(missed, 0.5).recall == pytest.approx(2 / 3) and at(missed, 0.5).precision == 1.0
    extra = match_label_images(g, strip((0, 5), (7, 12), (20, 28), (29, 30)))
    assert {(s.tp, s.fp, s.fn) for s in extra} == {(3, 1, 0)}
    assert at(extra, 0.5).accuracy == pytest.approx(3 / 4)


def test_split_and_merged_objects() -> None:
    g = strip((0, 10))
    split = strip((0, 5), (5, 10))  # each half has IoU 0.5 with the GT
    s = match_label_images(g, split, [0.3, 0.5, 0.6])
    assert [(x.tp, x.fp, x.fn) for x in s] == [(1, 1, 0), (1, 1, 0), (0, 2, 1)]
    assert s[1].mean_matched_iou == pytest.approx(0.5)
    merged = match_label_images(split, g, [0.3, 0.5, 0.6])  # two GT, one prediction
    assert [(x.tp, x.fp, x.fn) for x in merged] == [(1, 0, 1), (1, 0, 1), (0, 1, 2)]


def test_threshold_tie_counts_as_match() -> None:
    g, p = strip((0, 4)), strip((0, 2))  # IoU exactly 0.5
    s = match_label_images(g, p, [0.5, 0.5 + 1e-9])
    assert (s[0].tp, s[1].tp) == (1, 0)


def test_optimal_matching_beats_greedy_at_low_threshold() -> None:
    # g1=[0,10) g2=[10,20); p1=[3,13) has IoU 7/13 with g1 and 3/17 with g2; p2=[0,2) IoU 0.2 with g1.
    g = strip((0, 10), (10, 20))
    p = strip((3, 13), (0, 2))
    iou, _, _ = label_image_iou(g, p)
    assert iou[0, 0] == pytest.approx(7 / 13) and iou[1, 0] == pytest.approx(3 / 17)
    assert iou[0, 1] == pytest.approx(0.2) and iou[1, 1] == 0
    # greedy (best pair first: g1-p1) would leave g2 and p2 unmatched: 1 match
    r, c = match_iou(iou, 0.1)
    assert sorted(zip(r.tolist(), c.tolist())) == [(0, 1), (1, 0)]
    s01, s05 = matching_stats(iou, [0.1, 0.5])
    assert (s01.tp, s01.fp, s01.fn) == (2, 0, 0)
    assert s01.sum_matched_iou == pytest.approx(0.2 + 3 / 17)
    assert (s05.tp, s05.fp, s05.fn) == (1, 1, 1)


def test_equal_match_counts_are_broken_by_iou_sum() -> None:
    iou = np.array([[0.3, 0.8], [0.2, 0.3]])  # both assignments give 2 matches at 0.1
    r, c = match_iou(iou, 0.1)
    assert sorted(zip(r.tolist(), c.tolist())) == [(0, 1), (1, 0)]  # sum 1.0, not 0.6
    r, c = match_iou(iou, 0.25)  # (1,0) no longer qualifies; 2 matches need (0,0) and (1,1)
    assert sorted(zip(r.tolist(), c.tolist())) == [(0, 0), (1, 1)]  # (0,1) alone would be 1 match


def test_pq_formula() -> None:
    s = MatchingStats(0.5, tp=3, fp=1, fn=2, sum_matched_iou=2.4)
    sq, rq = 2.4 / 3, 3 / (3 + 0.5 * 1 + 0.5 * 2)
    assert s.mean_matched_iou == pytest.approx(sq)
    assert s.f1 == pytest.approx(rq)
    assert s.panoptic_quality == pytest.approx(sq * rq)
    assert s.panoptic_quality == pytest.approx(2.4 / 4.5)
    assert (s.precision, s.recall, s.accuracy) == (pytest.approx(0.75), pytest.approx(0.6), pytest.approx(0.5))
    assert MatchingStats(0.5).precision == 0.0  # 0/0 -> 0


def test_sum_over_images_adds_counts() -> None:
    a = match_label_images(strip((0, 10)), strip((0, 10)))
    b = match_label_images(strip((0, 10)), strip((20, 25)))
    total = at(sum_stats([a, b]), 0.5)
    assert (total.tp, total.fp, total.fn) == (1, 1, 1)
    assert total.f1 == pytest.approx(0.5)


def label_to_instances(lab: np.ndarray, scores: np.ndarray | None = None) -> Instances:
    ids = [i for i in np.unique(lab) if i != 0]
    masks = np.stack([lab == i for i in ids]) if ids else np.zeros((0, *lab.shape), bool)
    return Instances.from_masks(masks, scores=scores)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_label_image_and_instances_paths_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g, p = scene(rng), scene(rng)
    a = match_label_images(g, p)
    b = match_instances(label_to_instances(g), label_to_instances(p))
    for x, y in zip(a, b):
        assert (x.tp, x.fp, x.fn) == (y.tp, y.fp, y.fn)
        assert x.sum_matched_iou == pytest.approx(y.sum_matched_iou)


def test_instances_score_threshold_class_aware_and_crowd() -> None:
    m = np.zeros((3, 10, 10), bool)
    m[0, :5], m[1, 5:], m[2, :, :2] = True, True, True
    gt = Instances.from_masks(m, labels=[0, 1, 0], iscrowd=[False, False, True])
    pred = Instances.from_masks(m[:2], labels=[0, 0], scores=[0.9, 0.3])
    s = at(match_instances(gt, pred), 0.5)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)  # crowd GT left out
    s = at(match_instances(gt, pred, score_threshold=0.5), 0.5)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    s = at(match_instances(gt, pred, class_aware=True), 0.5)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)  # second prediction has the wrong label


def test_stardist_label_image_shifted() -> None:
    import tifffile

    lab = tifffile.imread(data_path("stardist_nuclei_2d") / "mask2d.tif").astype(np.int64)
    shifted = np.roll(lab, 2, axis=1)
    a = match_label_images(lab, shifted)
    assert at(a, 0.1).tp == 125  # every nucleus still overlaps its shifted self
    assert at(a, 0.9).tp < at(a, 0.5).tp <= 125
    b = match_instances(label_to_instances(lab), label_to_instances(shifted))
    assert [(x.tp, x.fp, x.fn) for x in a] == [(x.tp, x.fp, x.fn) for x in b]


# -- dataset level and CLI ----------------------------------------------------------------------
def write_labels(folder: Path, images: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lab in images.items():
        if name.endswith(".tif"):
            import tifffile

            tifffile.imwrite(folder / name, lab.astype(np.uint16))
        else:
            Image.fromarray(lab.astype(np.uint16)).save(folder / name)
    return folder


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("gt")
    p.add_argument("pred")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--json", default=None)
    add_matching_arguments(p)
    return p.parse_args(argv)


def test_cli_label_folders_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(5)
    gts = {"a": scene(rng), "b": scene(rng)}
    preds = {"a": gts["a"].copy(), "b": scene(rng)}
    gdir = write_labels(tmp_path / "gt", {"a.png": gts["a"], "b.tif": gts["b"]})
    pdir = write_labels(tmp_path / "pred", {"a.tif": preds["a"], "b.png": preds["b"]})
    out = tmp_path / "out.json"
    assert run_matching(parse([str(gdir), str(pdir), "--iou", "0.65", "--json", str(out)])) == 0
    data = json.loads(out.read_text())
    for key in ("precision", "recall", "f1", "tp", "fp", "fn", "accuracy", "panoptic_quality", "thresholds"):
        assert key in data
    expect = at(sum_stats([match_label_images(gts[k], preds[k], [0.65]) for k in "ab"]), 0.65)
    assert (data["tp"], data["fp"], data["fn"]) == (expect.tp, expect.fp, expect.fn)
    assert data["iou_threshold"] == 0.65 and data["n_images"] == 2
    assert data["per_image"]["a"] == {"tp": 8, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "panoptic_quality": 1.0}
    assert [t["threshold"] for t in data["thresholds"]] == sorted([*DEFAULT_THRESHOLDS, 0.65])
    text = capsys.readouterr().out
    assert "0.65*" in text and "0.10" in text and "0.90" in text


def test_label_folders_missing_prediction_and_size(tmp_path: Path) -> None:
    gdir = write_labels(tmp_path / "gt", {"a.png": strip((0, 3)), "b.png": strip((0, 3))})
    pdir = write_labels(tmp_path / "pred", {"a.png": strip((0, 3))})
    with pytest.raises(DataError, match="pred.*b.*no prediction"):
        evaluate_matching(gdir, pdir)
    write_labels(pdir, {"b.png": np.zeros((2, 30))})
    with pytest.raises(DataError, match="b.png.*differs from GT"):
        evaluate_matching(gdir, pdir)


def coco_pair(tmp_path: Path) -> tuple[Path, Path]:
    h, w = 20, 30
    m = np.zeros((4, h, w), bool)
    m[0, 2:10, 2:10] = True  # cat 1
    m[1, 2:10, 15:25] = True  # cat 2
    m[2, 12:18, 2:12] = True  # cat 1, missed
    m[3, 12:20, 20:30] = True  # crowd, cat 1
    rles = encode(m)
    gt = {
        "images": [{"id": 1, "file_name": "x.png", "height": h, "width": w}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": c, "segmentation": rles[i], "iscrowd": int(i == 3)}
            for i, c in enumerate([1, 2, 1, 1])
        ],
    }
    p = np.zeros((4, h, w), bool)
    p[0, 2:10, 2:10] = True  # exact, cat 1
    p[1, 2:10, 15:25] = True  # exact geometry, but labelled cat 1
    p[2, 14:19, 22:29] = True  # inside the crowd region: dropped, not a false positive
    p[3, 0:2, 0:30] = True  # low score: dropped
    prles = encode(p)
    res = [
        {"image_id": 1, "category_id": 1, "segmentation": prles[0], "score": 0.9},
        {"image_id": 1, "category_id": 1, "segmentation": prles[1], "score": 0.8},
        {"image_id": 1, "category_id": 1, "segmentation": prles[2], "score": 0.7},
        {"image_id": 1, "category_id": 2, "segmentation": prles[3], "score": 0.2},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return tmp_path / "gt.json", tmp_path / "res.json"


def test_coco_matching_class_aware_crowd_and_semantic(tmp_path: Path) -> None:
    g, p = coco_pair(tmp_path)
    rep = evaluate_matching(g, p, 0.5)
    s = rep.at(0.5)
    assert (s.tp, s.fp, s.fn) == (1, 1, 2)
    s = evaluate_matching(g, p, 0.5, class_aware=False).at(0.5)
    assert (s.tp, s.fp, s.fn) == (2, 0, 1)
    s = evaluate_matching(g, p, 0.5, score_threshold=0.0, class_aware=False).at(0.5)
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    sem = rep.semantic
    assert sem is not None
    # class a: GT 64 + 60 px, prediction 64 + 80 px (cat-2 object painted as a), overlap 64
    assert sem["class_iou"]["a"] == pytest.approx(64 / (124 + 144 - 64))
    assert sem["class_iou"]["b"] == 0.0
    assert sem["mIoU"] == pytest.approx((64 / 204 + 0.0) / 2)


def test_cli_coco_json_has_miou(tmp_path: Path) -> None:
    g, p = coco_pair(tmp_path)
    out = tmp_path / "m.json"
    assert run_matching(parse([str(g), str(p), "--json", str(out), "--class-agnostic"])) == 0
    data = json.loads(out.read_text())
    assert (data["tp"], data["fp"], data["fn"]) == (2, 0, 1)
    assert "mIoU" in data and set(data["semantic"]["class_iou"]) == {"background", "a", "b"}
    assert data["settings"] == {"input": "coco", "score_threshold": 0.5, "class_aware": False}


def test_coco_bad_prediction_names_item(tmp_path: Path) -> None:
    g, _ = coco_pair(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 7, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]], "score": 1}]))
    with pytest.raises(DataError, match=r"bad.json: result 0: image_id 7 is not in the GT file"):
        evaluate_matching(g, bad)
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1}]))
    with pytest.raises(DataError, match="result 0: has no 'segmentation'"):
        evaluate_matching(g, bad)


def brute_force(iou: np.ndarray, t: float) -> tuple[int, float]:
    """Best (number of matches, IoU sum) over every one-to-one assignment (small matrices)."""
    import itertools

    g, p = iou.shape
    best = (0, 0.0)
    cols: list[int | None] = [*range(p), *([None] * g)]
    for perm in itertools.permutations(cols, g):
        pairs = [(i, j) for i, j in enumerate(perm) if j is not None and iou[i, j] >= t and iou[i, j] > 0]
        cand = (len(pairs), round(sum(iou[i, j] for i, j in pairs), 9))
        best = max(best, cand)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_matching_is_optimal_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g, p = rng.integers(1, 5), rng.integers(1, 5)
    iou = rng.random((g, p)) * (rng.random((g, p)) < 0.6)
    for t in (0.1, 0.3, 0.5):
        r, c = match_iou(iou, t)
        assert len(set(r.tolist())) == len(r) and len(set(c.tolist())) == len(c)
        assert (len(r), round(float(iou[r, c].sum()), 9)) == brute_force(iou, t)


def test_pennfudan_masks_against_themselves_and_eroded(tmp_path: Path) -> None:
    """Real 8-bit label PNGs (331 pedestrians); eroded masks have IoU |eroded| / |mask|."""
    from scipy import ndimage

    src = data_path("PennFudanPed") / "PedMasks"
    rep = evaluate_matching(src, src, 0.5)
    s = rep.at(0.5)
    assert (s.tp, s.fp, s.fn) == (331, 0, 0) and s.panoptic_quality == 1.0
    gdir, pdir = tmp_path / "g", tmp_path / "p"
    gdir.mkdir()
    pdir.mkdir()
    ratios = []
    for f in sorted(src.iterdir())[:10]:
        lab = np.asarray(Image.open(f))
        Image.fromarray(lab).save(gdir / f.name)
        eroded = np.where(ndimage.grey_erosion(lab, size=7) == lab, lab, 0).astype(np.uint8)
        Image.fromarray(eroded).save(pdir / f.name)
        ratios += [np.sum(eroded == k) / np.sum(lab == k) for k in np.unique(lab) if k]
    r = np.array(ratios)
    rep = evaluate_matching(gdir, pdir, 0.5)
    for st in rep.stats:
        tp = int(np.sum(r >= st.threshold))
        assert (st.tp, st.fp, st.fn) == (tp, int(np.sum(r > 0)) - tp, len(r) - tp)
        assert st.sum_matched_iou == pytest.approx(r[r >= st.threshold].sum())


def test_coco_val_subset_against_itself() -> None:
    gt = data_path("coco_val2017_subset10") / "annotations" / "instances_val2017_subset.json"
    rep = evaluate_matching(gt, gt, 0.5)  # an instances file as predictions (score 1.0)
    for s in rep.stats:
        assert (s.tp, s.fp, s.fn) == (76, 0, 0)  # the crowd region is neither GT nor FP
    assert rep.semantic is not None and rep.semantic["mIoU"] == 1.0
    used = [v for v in rep.semantic["class_iou"].values() if v is not None]
    assert len(used) == 18 + 1  # 18 categories used, plus background


def test_instseg_eval_matching_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from instseg.cli.main import main

    g, p = coco_pair(tmp_path)
    out = tmp_path / "o.json"
    assert main(["eval", "--matching", str(g), str(p), "--iou", "0.5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"precision", "recall", "f1", "tp", "fp", "fn", "mIoU"} <= set(data)
    assert (data["tp"], data["fp"], data["fn"]) == (1, 1, 2)
    assert main(["eval", "--matching", str(g), str(tmp_path / "missing.json")]) == 1
    assert "missing.json: no such file or folder" in capsys.readouterr().err
    assert main(["eval", "--matching", str(g)]) == 2
    assert main(["eval", "--matching", str(g), str(p), "--iou", "1.5"]) == 2


def test_single_label_image_pair_and_mixed_inputs(tmp_path: Path) -> None:
    write_labels(tmp_path, {"g.tif": strip((0, 10), (12, 20)), "p.png": strip((0, 10))})
    s = evaluate_matching(tmp_path / "g.tif", tmp_path / "p.png", 0.5).at(0.5)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    with pytest.raises(DataError, match="both be folders"):
        evaluate_matching(tmp_path, tmp_path / "p.png")


def test_sparse_matching_equals_one_global_assignment() -> None:
    """Components, stars and direct matches together give the global optimum."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(7)
    for _ in range(20):
        g, p = rng.integers(20, 80, size=2)
        iou = rng.random((g, p)) * (rng.random((g, p)) < rng.choice([0.01, 0.03, 0.1]))
        for t in (0.1, 0.3, 0.5):
            valid = iou >= t
            weight = np.where(valid & (iou > 0), min(g, p) + 1 + iou, 0.0)
            x, y = linear_sum_assignment(weight, maximize=True)
            keep = weight[x, y] > 0
            r, c = match_iou(iou, t)
            assert len(r) == keep.sum()
            assert iou[r, c].sum() == pytest.approx(iou[x[keep], y[keep]].sum())
