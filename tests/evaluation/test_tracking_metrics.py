"""Tracking measures equal TrackEval 1.3 (HOTA, CLEAR, Identity; its MOTS Challenge
preprocessing and mask / box IoU) and, for CTC folders, py-ctcmetrics 1.3, to 1e-9: random
similarity matrices, synthetic moving objects with perturbed predictions, and the shared CTC
sequences with perturbed results."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from instseg.data.ctc import read_tracks
from instseg.data.io import read_label_image
from instseg.errors import DataError
from instseg.evaluation.ctc import match_frame
from instseg.evaluation.ctc_mot import ctc_tracking_metrics, joined_labels
from instseg.evaluation.tracking import (
    TrackingData,
    clear,
    hota,
    identity,
    make_tracking_data,
    summarize_tracking,
    tracking_data,
    tracking_metrics,
)
from instseg.structures import Instances
from tests.conftest import data_path

trackeval = pytest.importorskip("trackeval", reason="TrackEval is the reference")

TOL = 1e-9
SUMMARY_KEYS = {"HOTA", "DetA", "AssA", "LocA", "MOTA", "MOTP", "IDF1", "IDP", "IDR", "IDSW",
                "Frag", "MT", "PT", "ML"}


# -- TrackEval as the reference -----------------------------------------------------------------
def trackeval_dict(data: TrackingData) -> dict[str, Any]:
    """Our data in TrackEval's per-sequence layout."""
    return {"num_timesteps": data.num_frames, "num_gt_ids": data.num_gt_ids,
            "num_tracker_ids": data.num_pred_ids, "num_gt_dets": data.num_gt_dets,
            "num_tracker_dets": data.num_pred_dets, "gt_ids": list(data.gt_ids),
            "tracker_ids": list(data.pred_ids), "similarity_scores": list(data.similarity),
            "seq": "test"}


def trackeval_metrics(data: dict[str, Any], threshold: float = 0.5) -> list[dict[str, Any]]:
    from trackeval.metrics import CLEAR, HOTA, Identity

    config = {"THRESHOLD": threshold, "PRINT_CONFIG": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [HOTA().eval_sequence(data), CLEAR(config).eval_sequence(data),
                Identity(config).eval_sequence(data)]


def assert_equal_to_trackeval(data: TrackingData, reference: dict[str, Any], threshold: float = 0.5
                              ) -> None:
    """Our three measures on ``data`` equal TrackEval's on ``reference``, field by field."""
    ours: list[dict[str, Any]] = [hota(data), clear(data, threshold), identity(data, threshold)]
    for mine, ref in zip(ours, trackeval_metrics(reference, threshold)):
        for key, value in mine.items():
            np.testing.assert_allclose(value, np.asarray(ref[key], float), rtol=0, atol=TOL,
                                       err_msg=key)
    summary = summarize_tracking(data, threshold)
    assert SUMMARY_KEYS <= set(summary)
    h = trackeval_metrics(reference, threshold)[0]
    for key in ("HOTA", "DetA", "AssA", "LocA"):
        assert abs(summary[key] - float(np.mean(h[key]))) <= TOL


def rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """The RLEs a MOTS result file would hold for bool masks (N, H, W)."""
    if len(masks) == 0:
        return []
    return list(mask_utils.encode(np.asfortranarray(masks.view(np.uint8).transpose(1, 2, 0))))


def trackeval_mots(gt: list[Instances], pred: list[Instances], boxes: bool = False) -> dict[str, Any]:
    """TrackEval's own MOTS Challenge preprocessing of the sequence: crowd instances become
    the ignore region, similarity from its ``_calculate_mask_ious`` (or box IoU)."""
    from trackeval.datasets import MOTSChallenge

    ds = MOTSChallenge.__new__(MOTSChallenge)  # no files: only the preprocessing is used
    ds.class_name_to_class_id = {"pedestrian": 2}
    raw: dict[str, Any] = {k: [] for k in ("gt_ids", "gt_classes", "gt_dets", "tracker_ids",
                                           "tracker_classes", "tracker_dets",
                                           "similarity_scores", "gt_ignore_region")}
    for g, p in zip(gt, pred):
        crowd = g.iscrowd.numpy().astype(bool)  # type: ignore[union-attr]
        g_masks, p_masks = g.masks.numpy(), p.masks.numpy()  # type: ignore[union-attr]
        g_rle, p_rle = rles(g_masks[~crowd]), rles(p_masks)
        raw["gt_ids"].append(g.track_ids.numpy()[~crowd])  # type: ignore[union-attr]
        raw["gt_classes"].append(np.full(int((~crowd).sum()), 2))
        raw["gt_dets"].append(g_rle)
        raw["tracker_ids"].append(p.track_ids.numpy())  # type: ignore[union-attr]
        raw["tracker_classes"].append(np.full(len(p), 2))
        raw["tracker_dets"].append(p_rle)
        raw["gt_ignore_region"].append(mask_utils.merge(rles(g_masks[crowd]), intersect=False))
        if boxes:
            sim = ds._calculate_box_ious(g.boxes.numpy().astype(np.float64)[~crowd],
                                         p.boxes.numpy().astype(np.float64), box_format="x0y0x1y1")
        else:
            sim = ds._calculate_mask_ious(g_rle, p_rle, is_encoded=True, do_ioa=False)
        raw["similarity_scores"].append(np.asarray(sim, np.float64).reshape(len(g_rle), len(p_rle)))
    raw["num_timesteps"], raw["seq"] = len(gt), "test"
    return ds.get_preprocessed_seq_data(raw, "pedestrian")


def check_against_trackeval(gt: list[Instances], pred: list[Instances], boxes: bool = False) -> None:
    """Our data equals TrackEval's preprocessed data (ids and similarity), and our measures
    equal TrackEval's on both our data dict and its own."""
    ours = tracking_data(gt, pred, "box" if boxes else "auto")
    theirs = trackeval_mots(gt, pred, boxes)
    assert ours.iou_type == ("box" if boxes else "mask")
    assert (ours.num_gt_ids, ours.num_pred_ids) == (theirs["num_gt_ids"], theirs["num_tracker_ids"])
    for t in range(len(gt)):
        assert ours.gt_ids[t].tolist() == list(theirs["gt_ids"][t])
        assert ours.pred_ids[t].tolist() == list(theirs["tracker_ids"][t])
        np.testing.assert_allclose(ours.similarity[t], theirs["similarity_scores"][t],
                                   rtol=0, atol=1e-12)
    assert_equal_to_trackeval(ours, trackeval_dict(ours))
    assert_equal_to_trackeval(ours, theirs)


# -- random similarity matrices -----------------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(0, 9), levels=st.sampled_from([0, 2, 4, 20]),
       threshold=st.sampled_from([0.5, 0.3, 0.75]))
def test_measures_equal_trackeval_on_random_similarities(seed: int, frames: int, levels: int,
                                                         threshold: float) -> None:
    """Ids come and go, similarities are sparse and (with ``levels``) quantised to create
    ties and values exactly at the thresholds."""
    rng = np.random.default_rng(seed)
    n_g, n_p = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    g_ids, p_ids, sims = [], [], []
    for _ in range(frames):
        g = rng.choice(3 * n_g, int(rng.integers(0, n_g + 1)), replace=False)
        p = rng.choice(3 * n_p, int(rng.integers(0, n_p + 1)), replace=False) + 50
        s = rng.random((len(g), len(p)))
        if levels:
            s = np.round(s * levels) / levels
        s[rng.random(s.shape) < 0.5] = 0
        g_ids.append(g)
        p_ids.append(p)
        sims.append(s)
    data = make_tracking_data(g_ids, p_ids, sims)
    assert_equal_to_trackeval(data, trackeval_dict(data), threshold)


def test_hundred_frames_of_hundred_objects_take_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    g_ids = [np.arange(100) for _ in range(100)]
    p_ids = [rng.permutation(130)[:100] for _ in range(100)]
    sims = [np.where(rng.random((100, 100)) < 0.05, rng.random((100, 100)), 0.0) for _ in range(100)]
    start = time.perf_counter()
    data = make_tracking_data(g_ids, p_ids, sims)
    hota(data), clear(data), identity(data)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed


# -- synthetic moving objects -------------------------------------------------------------------
def disc_masks(centres: np.ndarray, radii: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    return d2 < radii[:, None, None] ** 2


def synthetic_sequence(seed: int, frames: int = 10, size: tuple[int, int] = (28, 36)
                       ) -> tuple[list[Instances], list[Instances]]:
    """Discs moving across the image and a tracker's output: shifted masks, dropped
    detections, ids swapped from one frame on, a split and a merge, false positives, empty
    frames on either side and crowd regions in the ground truth."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 7))
    start = rng.uniform((0, 0), size, (n, 2))
    velocity = rng.normal(0, 1.5, (n, 2))
    radii = rng.uniform(2, 6, n)
    gt_ids = rng.choice(90, n, replace=False)
    pred_ids = rng.choice(np.arange(100, 200), n, replace=False)
    swap_at, event_at = int(rng.integers(1, max(frames, 2))), int(rng.integers(0, max(frames, 1)))
    gt, pred = [], []
    for t in range(frames):
        masks = disc_masks(start + velocity * t, radii, size)
        keep = masks.any((1, 2)) & (rng.random(n) > 0.1)
        g_masks, g_ids, crowd = masks[keep], gt_ids[keep], np.zeros(int(keep.sum()), bool)
        if rng.random() < 0.3:  # a crowd region
            y, x = rng.integers(0, size[0] - 6), rng.integers(0, size[1] - 6)
            region = np.zeros((1, *size), bool)
            region[0, y : y + int(rng.integers(4, 12)), x : x + int(rng.integers(4, 12))] = True
            g_masks, g_ids = np.concatenate([g_masks, region]), np.append(g_ids, 999)
            crowd = np.append(crowd, True)
        if rng.random() < 0.08:  # a frame without ground truth
            g_masks, g_ids, crowd = g_masks[:0], g_ids[:0], crowd[:0]
        gt.append(Instances.from_masks(g_masks, track_ids=g_ids, iscrowd=crowd))

        shift = rng.integers(-2, 3, (n, 2))
        p_masks = np.stack([np.roll(m, tuple(s), axis=(0, 1)) for m, s in zip(masks, shift)]) \
            if n else masks
        ids = pred_ids.copy()
        if t >= swap_at and n >= 2:
            ids[[0, 1]] = ids[[1, 0]]
        keep = p_masks.any((1, 2)) & (rng.random(n) > 0.15)
        extra_m, extra_i = [], []
        if n >= 2 and t >= event_at:  # object 0 splits: its right half gets its own id
            cols = np.flatnonzero(p_masks[0].any(0))
            if len(cols) >= 2:
                half = p_masks[0].copy()
                half[:, : cols[len(cols) // 2]] = False
                p_masks[0] &= ~half
                extra_m.append(half)
                extra_i.append(300)
        if n >= 3 and t < event_at:  # objects 1 and 2 merged under object 1's id
            p_masks[1] |= p_masks[2]
            keep[2] = False
        for k in range(int(rng.integers(0, 3))):  # false positives
            y, x = rng.integers(0, size[0] - 4), rng.integers(0, size[1] - 4)
            fp = np.zeros(size, bool)
            fp[y : y + 4, x : x + 4] = True
            extra_m.append(fp)
            extra_i.append(400 + int(rng.integers(0, 4)) * 10 + k)
        all_m = np.concatenate([p_masks[keep], np.array(extra_m, bool).reshape(-1, *size)])
        all_i = np.concatenate([ids[keep], np.array(extra_i, np.int64)])
        visible = all_m.any((1, 2))
        all_m, all_i = all_m[visible], all_i[visible]
        if rng.random() < 0.1:  # an empty frame of predictions
            all_m, all_i = all_m[:0], all_i[:0]
        pred.append(Instances.from_masks(all_m, track_ids=all_i))
    return gt, pred


@pytest.mark.parametrize("seed", range(40))
def test_synthetic_sequences_equal_trackeval_masks(seed: int) -> None:
    gt, pred = synthetic_sequence(seed, frames=int(seed % 11))
    check_against_trackeval(gt, pred)


@pytest.mark.parametrize("seed", range(10))
def test_synthetic_sequences_equal_trackeval_boxes(seed: int) -> None:
    gt, pred = synthetic_sequence(100 + seed)
    no_crowd = [g[~g.iscrowd] for g in gt]  # type: ignore[operator]
    check_against_trackeval(no_crowd, pred, boxes=True)


def test_empty_sequences_and_sides() -> None:
    check_against_trackeval([], [])
    gt, pred = synthetic_sequence(3)
    empty = [Instances.from_masks(np.zeros((0, 28, 36), bool), track_ids=[]) for _ in gt]
    check_against_trackeval(gt, empty)
    check_against_trackeval(empty, pred)
    perfect = tracking_metrics(gt, [g[~g.iscrowd] for g in gt])  # type: ignore[operator]
    assert perfect["HOTA"] == perfect["MOTA"] == perfect["IDF1"] == perfect["MOTSA"] == 1.0


# -- the shared CTC SIM+ sequence (full masks) --------------------------------------------------
def sim_frames(n: int) -> list[np.ndarray]:
    tra = data_path("ctc_tracking") / "Fluo-N2DH-SIM+" / "01_GT" / "TRA"
    return [read_label_image(tra / f"man_track{t:03d}.tif") for t in range(n)]


def label_to_instances(label: np.ndarray) -> Instances:
    """One instance per label value (track id = the value)."""
    flat = label.ravel()
    pixels = np.flatnonzero(flat)
    ids, which = np.unique(flat[pixels], return_inverse=True)
    masks = np.zeros((len(ids), flat.size), bool)
    masks[which, pixels] = True
    return Instances.from_masks(masks.reshape(len(ids), *label.shape), track_ids=ids)


def perturbed_labels(frames: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], dict[int, int]]:
    """Shifted objects, dropped objects and frames, two tracks swapping ids, a split object,
    two merged neighbours, a relabelled track and false positives; also the new tracks'
    parents (the relabelled track continues the old one for odd seeds)."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    always = sorted(set.intersection(*(set(np.unique(f).tolist()) for f in frames)) - {0})
    a, b, c = (int(i) for i in rng.choice(always, 3, replace=False))  # tracks seen throughout
    out = []
    for t, frame in enumerate(frames):
        ys, xs = np.nonzero(frame)
        values = frame[ys, xs]
        labels, which = np.unique(values, return_inverse=True)
        area = np.bincount(which)[:, None]
        centres = np.stack([np.bincount(which, ys), np.bincount(which, xs)], 1) / area
        shift = rng.integers(-2, 3, (len(labels), 2))  # each object moved a little...
        kept = rng.random(len(labels)) >= 0.05  # ...or missed
        res = np.zeros_like(frame)
        keep = kept[which]
        res[np.clip(ys + shift[which, 0], 0, frame.shape[0] - 1)[keep],
            np.clip(xs + shift[which, 1], 0, frame.shape[1] - 1)[keep]] = values[keep]
        if t >= 3 * n // 10:  # a and b swap ids
            ma, mb = res == a, res == b
            res[ma], res[mb] = b, a
        if n // 10 <= t < n // 4:  # c split: its right half is another object
            ys, xs = np.nonzero(res == c)
            right = xs > np.median(xs) if len(xs) else xs > 0
            res[ys[right], xs[right]] = 5000
        if t in (n // 4 + 1, n // 4 + 2):  # c merged with its nearest neighbour
            dist = np.linalg.norm(centres - centres[np.searchsorted(labels, c)], axis=1)
            dist[labels == c] = np.inf
            res[res == labels[np.argmin(dist)]] = c
        if t >= 6 * n // 10:  # c relabelled
            res[res == c] = 6000
        if t in (n // 5, n // 2):  # whole frames dropped
            res[:] = 0
        if t % 3 == 0:  # a false positive
            y, x = rng.integers(0, np.array(frame.shape) - 10)
            res[y : y + 6, x : x + 6] = 7000 + t
        out.append(res)
    return out, {6000: c if seed % 2 else 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_sim_sequence_equals_trackeval(seed: int) -> None:
    frames = sim_frames(20)
    gt = [label_to_instances(f) for f in frames]
    pred = [label_to_instances(f) for f in perturbed_labels(frames, seed)[0]]
    check_against_trackeval(gt, pred)
    if seed == 0:
        check_against_trackeval(gt, pred, boxes=True)
        assert tracking_metrics(gt, gt)["HOTA"] == 1.0


# -- CTC folders against py-ctcmetrics ----------------------------------------------------------
def truncated_gt(sequence: str, n: int, dst: Path) -> tuple[Path, list[np.ndarray], dict[int, int]]:
    """The first ``n`` frames of a shared sequence's ``01_GT/TRA`` as a GT folder."""
    src = data_path("ctc_tracking") / sequence / "01_GT" / "TRA"
    gt = dst / "01_GT"
    (gt / "TRA").mkdir(parents=True)
    frames = []
    for t in range(n):
        shutil.copy(src / f"man_track{t:03d}.tif", gt / "TRA" / f"man_track{t:03d}.tif")
        frames.append(read_label_image(src / f"man_track{t:03d}.tif"))
    tracks = [tr for tr in read_tracks(src / "man_track.txt").values() if tr.first < n]
    (gt / "TRA" / "man_track.txt").write_text(
        "".join(f"{tr.id} {tr.first} {min(tr.last, n - 1)} {tr.parent}\n" for tr in tracks))
    return gt, frames, {tr.id: tr.parent for tr in tracks}


def write_result(frames: list[np.ndarray], parents: dict[int, int], res: Path,
                 rng: np.random.Generator) -> None:
    """A valid CTC result folder: labels present on gaps split into new tracks (linked to
    the earlier piece or not), ``res_track.txt`` from the masks."""
    import tifffile

    stack = np.stack(frames).astype(np.int64)
    next_label = int(stack.max()) + 1
    parents = dict(parents)

    def spans() -> dict[int, np.ndarray]:
        seen: dict[int, list[int]] = {}
        for t, frame in enumerate(stack):
            for v in np.flatnonzero(np.bincount(frame.ravel()))[1:].tolist():
                seen.setdefault(v, []).append(t)
        return {v: np.array(ts) for v, ts in seen.items()}

    for label, present in spans().items():
        runs = np.split(present, np.flatnonzero(np.diff(present) > 1) + 1)
        prev = label
        for run in runs[1:]:
            piece = stack[run[0] : run[-1] + 1]
            piece[piece == label] = next_label
            parents[next_label] = prev if rng.random() < 0.5 else 0
            prev, next_label = next_label, next_label + 1
    span = spans()
    lines = []
    for label, frames_of in sorted(span.items()):
        parent = parents.get(label, 0)
        if parent not in span or span[parent][-1] >= frames_of[0]:
            parent = 0
        lines.append(f"{label} {frames_of[0]} {frames_of[-1]} {parent}\n")
    res.mkdir(parents=True)
    (res / "res_track.txt").write_text("".join(lines))
    for t, frame in enumerate(stack):
        tifffile.imwrite(res / f"mask{t:03d}.tif", frame.astype(np.uint16))


def ctc_reference(gt: Path, res: Path) -> dict[str, Any]:
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    out = evaluate_sequence(str(res), str(gt), metrics=["Valid", "HOTA", "IDF1", "MOTA"], threads=1)
    assert out["Valid"] == 1
    return out


@pytest.mark.filterwarnings("ignore:Empty frame:UserWarning")  # py-ctcmetrics: dropped frames
@pytest.mark.parametrize(("sequence", "n", "seed"),
                         [("Fluo-N2DH-SIM+", 14, 0), ("Fluo-N2DH-GOWT1", 8, 1)])
def test_ctc_adapter_equals_py_ctcmetrics(tmp_path: Path, sequence: str, n: int, seed: int,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The first ``n`` frames (py-ctcmetrics takes ~0.3 s a frame on GOWT1): the ground truth
    as the result, and a perturbed result."""
    pytest.importorskip("ctc_metrics", reason="py-ctcmetrics is a dev dependency")
    gt, frames, parents = truncated_gt(sequence, n, tmp_path)
    labels, links = perturbed_labels(frames, seed)
    results = {"gt": (frames, parents), "perturbed": (labels, {**parents, **links})}
    for name, (labels, links) in results.items():
        res = tmp_path / name / "01_RES"
        write_result(labels, links, res, np.random.default_rng(len(name)))
        got = ctc_tracking_metrics(gt, res)
        want = ctc_reference(gt, res)
        for key in ("HOTA", "IDF1", "IDP", "IDR", "IDTP", "IDFP", "IDFN", "MOTA", "TP", "FP",
                    "FN", "IDSW", "MULTI-ASSIGNMENTS", "Precision", "Recall"):
            assert abs(got[key] - float(want[key])) <= TOL, (name, key, got[key], want[key])
        if name == "gt":
            assert got["HOTA"] == got["IDF1"] == got["MOTA"] == 1.0
        else:
            assert got["HOTA"] < 0.95 and got["IDSW"] > 0 and got["MULTI-ASSIGNMENTS"] > 0
            table = res / "res_track.txt"  # some result tracks continue a parent: joined
            assert any(k != v for k, v in joined_labels(read_tracks(table), table).items())
    capsys.readouterr()


def test_match_frame_and_joined_tracks(tmp_path: Path) -> None:
    ref = np.zeros((4, 8), np.int64)
    ref[:, :4], ref[:, 4:] = 1, 2
    res = np.zeros_like(ref)
    res[:, :3] = 9  # covers 3/4 of 1
    res[:2, 4:] = 8  # covers exactly half of 2: no match
    m = match_frame(ref, res)
    assert (m.reference.tolist(), m.result.tolist(), [a.tolist() for a in m.pairs]) == \
        ([1, 2], [8, 9], [[1], [9]])
    table = tmp_path / "res_track.txt"
    table.write_text("1 0 3 0\n2 4 6 1\n3 7 9 2\n4 7 9 2\n5 10 12 4\n")
    assert joined_labels(read_tracks(table), table) == {1: 1, 2: 1, 3: 3, 4: 4, 5: 4}
    table.write_text("1 0 3 0\n2 3 6 1\n")
    with pytest.raises(DataError, match=r"res_track.txt: track 2: parent 1"):
        joined_labels(read_tracks(table), table)


# -- bad input ----------------------------------------------------------------------------------
def test_inconsistent_input_is_a_one_line_data_error(tmp_path: Path) -> None:
    gt, pred = synthetic_sequence(5, frames=4)
    with pytest.raises(DataError, match=r"^pred: has 3 frames, the ground truth 4$"):
        tracking_data(gt, pred[:3])
    untracked = [Instances.from_masks(p.masks) if len(p) else p for p in pred]  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^pred frame \d: track_ids missing"):
        tracking_data(gt, untracked)
    twice = Instances.from_masks(np.ones((2, 28, 36), bool), track_ids=[3, 3])
    with pytest.raises(DataError, match=r"^gt frame 0: a track id appears more than once$"):
        tracking_data([twice], [twice[:1]])
    with pytest.raises(DataError, match=r"frame counts differ"):
        make_tracking_data([[1]], [], [])
    with pytest.raises(DataError, match=r"^similarity frame 0: shape \(1, 1\), expected \(1, 2\)"):
        make_tracking_data([[1]], [[4, 5]], [np.full((1, 1), 0.5)])


def test_bad_ctc_folders_are_one_line_data_errors(tmp_path: Path) -> None:
    import tifffile

    gt, res = tmp_path / "01_GT", tmp_path / "01_RES"
    (gt / "TRA").mkdir(parents=True)
    res.mkdir()
    with pytest.raises(DataError, match=r"no label images"):
        ctc_tracking_metrics(gt, res)
    frame = np.zeros((8, 8), np.uint16)
    frame[2:5, 2:5] = 1
    for t in range(2):
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", frame)
    (gt / "TRA" / "man_track.txt").write_text("1 0 1 0\n")
    tifffile.imwrite(res / "mask000.tif", frame * 3)
    with pytest.raises(DataError, match=r"01_RES: 1 result masks for 2 reference frames \(mask001.tif missing\)$"):
        ctc_tracking_metrics(gt, res)
    tifffile.imwrite(res / "mask001.tif", frame * 3)
    (res / "res_track.txt").write_text("3 0 0 0\n")
    with pytest.raises(DataError, match=r"res_track.txt: frame 1 has object 3, which the track table does not list"):
        ctc_tracking_metrics(gt, res)
    (res / "res_track.txt").write_text("3 0 1 0\n")
    assert ctc_tracking_metrics(gt, res)["HOTA"] == 1.0
