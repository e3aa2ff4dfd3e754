"""DET, TRA (AOGM counts) and SEG equal py-ctcmetrics' on truncated copies of both shared CTC
sequences for results with detection errors (cut, merged, dropped and false objects, a dropped
frame) and linking errors (swapped track ids, a track relabelled midway as a daughter, a
daughter keeping its mother's label, lost and wrong parent links); the ground truth itself on
both whole sequences against py-ctcmetrics' figures; a small case counted by hand; DataError
for incomplete folders."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from instseg.data.ctc import Track, read_tracks
from instseg.errors import DataError
from instseg.evaluation.ctc_folders import ctc_measures
from instseg.evaluation.ctc_tracking import aogm_counts, det_measure, match_frame, tra_measure
from tests.conftest import data_path

# frames [start, stop) kept, digits of the written file names, SEG kept on every n-th frame
WINDOWS = {"Fluo-N2DH-SIM+": (6, 16, 3, 4), "Fluo-N2DH-GOWT1": (15, 22, 4, 3)}
COUNTS = ("NS", "FN", "FP", "ED", "EA", "EC")


@dataclass
class Truncated:
    gt: Path
    frames: list[np.ndarray]  # the base result: values = track ids
    tracks: dict[int, Track]


def _write_window(name: str, dst: Path) -> Truncated:
    """A copy of ``name``'s 01_GT with frames [start, stop) renumbered from 0, the track table
    clipped to them and SEG on some frames only."""
    start, stop, digits, seg_every = WINDOWS[name]
    src = data_path("ctc_tracking") / name / "01_GT"
    (dst / "TRA").mkdir(parents=True)
    (dst / "SEG").mkdir()
    frames = []
    for new, t in enumerate(range(start, stop)):
        label = tifffile.imread(src / "TRA" / f"man_track{t:03d}.tif")
        tifffile.imwrite(dst / "TRA" / f"man_track{new:0{digits}d}.tif", label)
        frames.append(label)
        seg = src / "SEG" / f"man_seg{t:03d}.tif"
        if seg.exists() and new % seg_every == 0:
            tifffile.imwrite(dst / "SEG" / f"man_seg{new:0{digits}d}.tif", tifffile.imread(seg))
    full = read_tracks(src / "TRA" / "man_track.txt")
    tracks = {}
    for tr in full.values():
        if tr.last >= start and tr.first < stop:
            parent = tr.parent if tr.parent and full[tr.parent].last >= start else 0
            tracks[tr.id] = Track(
                tr.id, max(tr.first, start) - start, min(tr.last, stop - 1) - start, parent
            )
    _write_table(dst / "TRA" / "man_track.txt", tracks)
    if name == "Fluo-N2DH-GOWT1":  # markers, not masks: grow them into the background a bit
        frames = [np.where(f == 0, ndimage.grey_dilation(f, size=(5, 5)), f) for f in frames]
    return Truncated(dst, frames, tracks)


def _write_table(path: Path, tracks: dict[int, Track]) -> None:
    path.write_text("".join(f"{t.id} {t.first} {t.last} {t.parent}\n" for t in tracks.values()))


def _write_result(folder: Path, frames: list[np.ndarray], parents: dict[int, int]) -> None:
    """Masks and a valid res_track.txt: a label with gaps becomes one track per run of frames,
    each later run a daughter of the one before; a parent link is kept when some run of the
    parent label ends before the daughter starts."""
    folder.mkdir()
    frames = [f.copy() for f in frames]
    present: dict[int, list[int]] = {}
    for t, f in enumerate(frames):
        for i in np.unique(f[f != 0]).tolist():
            present.setdefault(i, []).append(t)
    fresh = itertools.count(max(present, default=0) + max(parents, default=0) + 1)
    runs: dict[int, list[Track]] = {}
    for label, ts in present.items():
        cuts = np.flatnonzero(np.diff(ts) > 1) + 1
        for k, run in enumerate(np.split(np.array(ts), cuts)):
            new = label if k == 0 else next(fresh)
            for t in run.tolist():
                frames[t][frames[t] == label] = new
            parent = runs[label][-1].id if k else 0
            runs.setdefault(label, []).append(Track(new, int(run[0]), int(run[-1]), parent))
    table = {}
    for label, segments in runs.items():
        first = segments[0]
        ends = [s for s in runs.get(parents.get(label, 0), []) if s.last < first.first]
        table[first.id] = Track(first.id, first.first, first.last, ends[-1].id if ends else 0)
        table.update({s.id: s for s in segments[1:]})
    for t, f in enumerate(frames):
        tifffile.imwrite(folder / f"mask{t:03d}.tif", f.astype(np.uint16))
    _write_table(folder / "res_track.txt", table)


def _alive(frames: list[np.ndarray], ts: range) -> list[int]:
    return sorted(set.intersection(*(set(np.unique(frames[t]).tolist()) - {0} for t in ts)))


def _detection_errors(
    frames: list[np.ndarray], rng: np.random.Generator, fresh: itertools.count
) -> None:
    """Cut objects in two, merge pairs, drop objects and a whole frame, add false objects."""
    n = len(frames)
    for _ in range(4):  # one object cut into two labels (the smaller part a new one)
        t = int(rng.integers(n))
        i = rng.choice(np.unique(frames[t][frames[t] != 0]))
        rows, cols = np.nonzero(frames[t] == i)
        cut = cols > np.quantile(cols, rng.choice([0.4, 0.6]))
        frames[t][rows[cut], cols[cut]] = next(fresh)
    for t in (1, 2, n - 2):  # two objects merged into one label
        a, b = rng.choice(np.unique(frames[t][frames[t] != 0]), 2, replace=False)
        frames[t][frames[t] == b] = a
    for _ in range(6):  # dropped objects
        t = int(rng.integers(n))
        ids = np.unique(frames[t][frames[t] != 0])
        frames[t][frames[t] == rng.choice(ids)] = 0
    frames[n // 2][:] = 0  # a dropped frame
    for _ in range(4):  # false objects, some living for a few frames
        label, t0, length = next(fresh), int(rng.integers(n - 3)), int(rng.integers(1, 4))
        y, x = rng.integers(0, np.array(frames[0].shape) - 8)
        for t in range(t0, t0 + length):
            patch = frames[t][y : y + 7, x : x + 7]
            patch[patch == 0] = label


def _linking_errors(
    truncated: Truncated, frames: list[np.ndarray], parents: dict[int, int], fresh: itertools.count
) -> None:
    """Swap two tracks' ids midway, relabel a track midway as a daughter, let one daughter keep
    its mother's label, drop one parent link and point another at a wrong parent."""
    n, tracks = len(frames), truncated.tracks
    mid = n // 2 + 1
    a, b, c = _alive(frames, range(mid - 1, n))[-3:]
    relabelled = next(fresh)
    for t in range(mid, n):
        fa, fb = frames[t] == a, frames[t] == b
        frames[t][fa], frames[t][fb] = b, a
        frames[t][frames[t] == c] = relabelled
    parents[relabelled] = c
    daughters = sorted((tr for tr in tracks.values() if tr.parent), key=lambda tr: tr.first)
    keeps = daughters[0]  # takes its mother's label
    for t in range(keeps.first, keeps.last + 1):
        frames[t][frames[t] == keeps.id] = keeps.parent
    parents.update({k: keeps.parent for k, v in parents.items() if v == keeps.id})
    parents[daughters[-1].id] = 0
    others = [
        tr.id
        for tr in tracks.values()
        if tr.last < daughters[1].first and tr.id != daughters[1].parent
    ]
    parents[daughters[1].id] = others[0] if others else 0


def _result(truncated: Truncated, variant: str, folder: Path) -> None:
    frames = [f.copy() for f in truncated.frames]
    parents = {tr.id: tr.parent for tr in truncated.tracks.values()}
    rng = np.random.default_rng(len(variant))
    fresh = itertools.count(1000)
    if variant in ("linking", "mixed"):
        _linking_errors(truncated, frames, parents, fresh)
    if variant in ("detection", "mixed"):
        _detection_errors(frames, rng, fresh)
    _write_result(folder, frames, parents)


@pytest.fixture(scope="module", params=list(WINDOWS))
def truncated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Truncated:
    return _write_window(request.param, tmp_path_factory.mktemp("ctc") / "01_GT")


@pytest.mark.parametrize("variant", ["detection", "linking", "mixed"])
def test_det_tra_equal_py_ctcmetrics(truncated: Truncated, variant: str, tmp_path: Path) -> None:
    pytest.importorskip("ctc_metrics", reason="py-ctcmetrics is a dev dependency")
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    res = tmp_path / "01_RES"
    _result(truncated, variant, res)
    ours = ctc_measures(truncated.gt, res)
    want = evaluate_sequence(str(res), str(truncated.gt), metrics=["DET", "SEG", "TRA"], threads=1)
    for key in ("DET", "SEG", "TRA"):
        assert abs(ours[key] - want[key]) <= 1e-9, (key, ours, want)
    for key in (*COUNTS, "AOGM", "AOGM_0"):
        assert ours[key] == want[key if key.startswith("AOGM") else f"AOGM_{key}"], (
            key,
            ours,
            want,
        )
    if variant in ("detection", "mixed"):
        assert min(ours["NS"], ours["FN"], ours["FP"]) > 0, ours
    if variant in ("linking", "mixed"):
        assert min(ours["ED"], ours["EA"], ours["EC"]) > 0, ours


# py-ctcmetrics 1.3.3 on the whole sequences, their TRA markers as the result (19 s and 60 s)
WHOLE = {"Fluo-N2DH-SIM+": (29926.5, 1.0), "Fluo-N2DH-GOWT1": (23563.5, 0.48363235358291196)}


@pytest.mark.parametrize("name", list(WHOLE))
def test_whole_ground_truth(name: str, tmp_path: Path) -> None:
    """The ground truth itself, both whole sequences (in seconds): DET = TRA = 1, AOGM_0 (the
    reference graph's size) and SEG as py-ctcmetrics computed them."""
    gt = data_path("ctc_tracking") / name / "01_GT"
    for f in (gt / "TRA").glob("man_track*.tif"):
        (tmp_path / f.name.replace("man_track", "mask")).symlink_to(f)
    (tmp_path / "res_track.txt").symlink_to(gt / "TRA" / "man_track.txt")
    got = ctc_measures(gt, tmp_path)
    assert got["DET"] == got["TRA"] == 1.0
    assert got["AOGM"] == sum(got[k] for k in COUNTS) == 0
    assert got["AOGM_0"] == WHOLE[name][0] and abs(got["SEG"] - WHOLE[name][1]) <= 1e-9


def _hand_case() -> tuple[list[np.ndarray], list[np.ndarray], dict[int, Track], dict[int, Track]]:
    """Reference: track 1 (frames 0-1) divides into 3 (frames 2-3), track 2 (frames 0-3) beside.
    Result: 7 follows 1 and 3 and covers 2 too in frame 3 (a split), 8 covers only half of 2 in
    frame 0 (no match) and all of it in frames 1-2, 9 is a false object in frame 3."""
    ref = [np.zeros((2, 13), np.uint16) for _ in range(4)]
    res = [np.zeros((2, 13), np.uint16) for _ in range(4)]
    for t in range(4):
        ref[t][:, 0:4], ref[t][:, 6:10] = (1 if t < 2 else 3), 2
        res[t][:, 0:4] = 7
    res[0][:, 6:8] = 8
    res[1][:, 6:10] = res[2][:, 6:10] = 8
    res[3][:, 0:10], res[3][:, 10:12] = 7, 9  # background left: see test_hand_counted_case
    ref_tracks = {1: Track(1, 0, 1, 0), 2: Track(2, 0, 3, 0), 3: Track(3, 2, 3, 1)}
    res_tracks = {7: Track(7, 0, 3, 0), 8: Track(8, 0, 2, 0), 9: Track(9, 3, 3, 0)}
    return ref, res, ref_tracks, res_tracks


def test_hand_counted_case(tmp_path: Path) -> None:
    ref, res, ref_tracks, res_tracks = _hand_case()
    counts = aogm_counts([match_frame(a, b) for a, b in zip(ref, res)], ref_tracks, res_tracks)
    # 7@3 matches two markers (NS); 2@0 unmatched (FN); 8@0, 9@3 match none (FP); 7's link 1->2
    # maps onto the parent link 1 -> 3 (EC); 3@2->3@3, 2@0->2@1, 2@2->2@3 are missing (EA)
    assert counts.as_dict() == {
        "NS": 1,
        "FN": 1,
        "FP": 2,
        "ED": 0,
        "EA": 3,
        "EC": 1,
        "AOGM": 22.5,
        "AOGM_0": 89.0,
    }
    assert det_measure(zip(ref, res)) == 1 - 17 / 80
    assert tra_measure(zip(ref, res), ref_tracks, res_tracks) == 1 - 22.5 / 89
    assert match_frame(ref[0], res[0]).matched.tolist() == [7, 0]  # exactly half is no match
    # py-ctcmetrics 1.3.3 ignores the lowest result label of a frame without background pixels
    full = np.full_like(ref[0], 7)
    full[:, 6:10] = 9
    assert match_frame(ref[0], full).matched.tolist() == [7, 9]  # we don't
    pytest.importorskip("ctc_metrics", reason="py-ctcmetrics is a dev dependency")
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    gt, out = tmp_path / "01_GT", tmp_path / "01_RES"
    (gt / "TRA").mkdir(parents=True)
    out.mkdir()
    for t in range(4):
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", ref[t])
        tifffile.imwrite(out / f"mask{t:03d}.tif", res[t])
    _write_table(gt / "TRA" / "man_track.txt", ref_tracks)
    _write_table(out / "res_track.txt", res_tracks)
    want = evaluate_sequence(str(out), str(gt), metrics=["DET", "TRA"], threads=1)
    assert (want["DET"], want["TRA"]) == (1 - 17 / 80, 1 - 22.5 / 89)
    assert [want[f"AOGM_{k}"] for k in COUNTS] == [1, 1, 2, 0, 3, 1]


def test_incomplete_folders_raise_data_error(tmp_path: Path) -> None:
    ref, res, ref_tracks, res_tracks = _hand_case()
    gt, out = tmp_path / "01_GT", tmp_path / "01_RES"
    with pytest.raises(DataError, match="01_GT: ground-truth folder not found"):
        ctc_measures(gt, tmp_path)
    (gt / "TRA").mkdir(parents=True)
    out.mkdir()
    with pytest.raises(DataError, match="TRA: no reference markers"):
        ctc_measures(gt, out)
    for t in range(4):
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", ref[t])
    for t in range(3):
        tifffile.imwrite(out / f"mask{t:03d}.tif", res[t])
    with pytest.raises(
        DataError, match=r"01_RES: 3 result masks for 4 reference frames \(mask003.tif missing\)"
    ):
        ctc_measures(gt, out)
    tifffile.imwrite(out / "mask003.tif", res[3])
    with pytest.raises(DataError, match=r"man_track.txt: track file not found"):
        ctc_measures(gt, out)
    _write_table(gt / "TRA" / "man_track.txt", ref_tracks)
    with pytest.raises(DataError, match=r"res_track.txt: track file not found"):
        ctc_measures(gt, out)
    _write_table(out / "res_track.txt", {**res_tracks, 9: Track(9, 2, 3, 0)})
    with pytest.raises(DataError, match=r"res_track.txt: track 9 has no object in frame 2"):
        ctc_measures(gt, out)
    _write_table(out / "res_track.txt", {**res_tracks, 9: Track(9, 3, 3, 8)})
    assert ctc_measures(gt, out)["FP"] == 2  # parent link 8 -> 9 across a gap: fine
    _write_table(out / "res_track.txt", {**res_tracks, 9: Track(9, 3, 3, 7)})
    with pytest.raises(DataError, match=r"track 9 starts in frame 3, before its parent 7 ends"):
        ctc_measures(gt, out)
    tifffile.imwrite(out / "mask003.tif", res[3][:, :6])
    with pytest.raises(DataError, match=r"mask003.tif: size \(2, 6\) differs"):
        ctc_measures(gt, out)
