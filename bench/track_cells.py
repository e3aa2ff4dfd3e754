"""Cell tracking on the shared Cell Tracking Challenge sequences: instseg's Tracker beside
laptrack and a plain IoU-Hungarian baseline, on the same masks, scored by the challenge's
measures (TRA, DET, SEG) and HOTA / IDF1.

Two settings per sequence:

* ``gt``: tracking alone, from the ground-truth masks of every frame (``01_GT/TRA``: full
  masks on Fluo-N2DH-SIM+, the challenge's track markers on Fluo-N2DH-GOWT1);
* ``e2e``: end to end, the shipped ``nuclei`` model (trained on DSB 2018, never on these
  frames) segments every frame with ``--object-size auto`` and its stored score cut-off;
  predictions are cached under ``--out`` so a rerun only tracks and scores.

Peers, on the same masks (for ``e2e``: the label image of the detections at or above the
model's cut-off; instseg's Tracker also gets the low-score ones, which its second stage uses):

* ``laptrack``: ``OverLapTrack`` with the settings of laptrack's own overlap-tracking example
  (cutoff 0.9 on 1 - overlap, gap closing over 1 frame, splitting cutoff 0.9 on 1 - ratio_2);
* ``iou-hungarian``: each frame's objects assigned to the previous frame's by the Hungarian
  method on mask IoU (pairs under 0.2, the Tracker's own threshold, refused), nothing else.

Also reports divisions found / true (a true division is found when the result has a division
whose two daughters cover the true daughters' markers within one frame of it), frames per
second of each tracker alone (masks already in memory, no I/O), and the Tracker's cost per
frame with 100 objects on 1024x1024 frames (synthetic discs).

    python bench/track_cells.py [--settings gt e2e] [--sequences Fluo-N2DH-SIM+ Fluo-N2DH-GOWT1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from bench.common import data_root  # noqa: E402
from instseg.data.ctc import Track, label_instances, read_sequence  # noqa: E402
from instseg.data.io import read_label_image  # noqa: E402
from instseg.structures import Instances  # noqa: E402
from instseg.tracking.crops import crops_from, iou  # noqa: E402
from instseg.tracking.sequence import ctc_segments  # noqa: E402
from instseg.tracking.tracker import Tracker, TrackerConfig  # noqa: E402

SEQUENCES = ("Fluo-N2DH-SIM+", "Fluo-N2DH-GOWT1")
#: detections kept for instseg's second association stage (TrackerConfig.low_score)
LOW_SCORE = 0.1
#: one tracked sequence: label images (value = track id) and the track table
Result = tuple[list[np.ndarray], list[Track]]


# -- trackers ----------------------------------------------------------------------------------
def run_ours(frames: list[Instances], high_score: float) -> Result:
    tracker = Tracker(TrackerConfig(high_score=high_score))
    labels = [_paint(tracker.update(f)) for f in frames]
    return labels, tracker.tracks()


def _paint(inst: Instances) -> np.ndarray:
    out = np.zeros(inst.image_size, np.uint16)
    assert inst.masks is not None and inst.track_ids is not None
    for m, tid in zip(inst.masks.numpy(), inst.track_ids.tolist()):
        out[m & (out == 0)] = tid
    return out


def run_iou_hungarian(labels: list[np.ndarray], least: float = 0.2) -> Result:
    """Frame-to-frame Hungarian on mask IoU: a match continues the track, the rest start new
    ones; no motion, no lost buffer, no divisions."""
    out: list[np.ndarray] = []
    table: dict[int, list[int]] = {}
    prev_crops: list[Any] = []
    prev_ids: list[int] = []
    next_id = 1
    for t, label in enumerate(labels):
        inst = label_instances(label)
        crops = crops_from(inst.masks, inst.boxes) if inst.masks is not None else []
        ids = [0] * len(crops)
        if prev_crops and crops:
            sim, _ = iou(prev_crops, crops)
            for r, c in zip(*linear_sum_assignment(-sim)):
                if sim[r, c] >= least:
                    ids[c] = prev_ids[r]
        for k in range(len(ids)):
            if ids[k] == 0:
                ids[k], next_id = next_id, next_id + 1
                table[ids[k]] = [t, t, 0]
            table[ids[k]][1] = t
        relabel = np.zeros(int(label.max()) + 1, np.uint16)
        values = inst.track_ids.numpy() if inst.track_ids is not None else np.zeros(0, int)
        relabel[values] = ids
        out.append(relabel[label])
        prev_crops, prev_ids = crops, ids
    return out, [Track(i, f, last, p) for i, (f, last, p) in sorted(table.items())]


def run_laptrack(labels: list[np.ndarray]) -> Result:
    """laptrack's OverLapTrack with its overlap-tracking example's settings."""
    from laptrack import OverLapTrack

    olt = OverLapTrack(
        cutoff=0.9,
        metric_coefs=(1.0, -1.0, 0.0, 0.0, 0.0),
        gap_closing_metric_coefs=(1.0, -1.0, 0.0, 0.0, 0.0),
        gap_closing_max_frame_count=1,
        splitting_cutoff=0.9,
        splitting_metric_coefs=(1.0, 0.0, 0.0, 0.0, -1.0),
    )
    track_df, split_df, _ = olt.predict_overlap_dataframe(np.stack(labels))
    out = [np.zeros_like(label, dtype=np.uint16) for label in labels]
    frames: dict[int, list[int]] = {}
    for (frame, lab), row in track_df.iterrows():
        tid = int(row["track_id"]) + 1
        out[int(frame)][labels[int(frame)] == lab] = tid
        frames.setdefault(tid, []).append(int(frame))
    parent = {int(r.child_track_id) + 1: int(r.parent_track_id) + 1 for r in split_df.itertuples()}
    tracks = [Track(i, min(f), max(f), parent.get(i, 0)) for i, f in sorted(frames.items())]
    return out, tracks


# -- data ----------------------------------------------------------------------------------------
def gt_frames(seq_dir: Path) -> list[np.ndarray]:
    seq = read_sequence(seq_dir)
    return [read_label_image(seq.tra[t]).astype(np.uint16) for t in range(len(seq))]


def predicted(seq_dir: Path, cache: Path) -> tuple[list[Instances], float]:
    """The nuclei model's instances of every frame (cached as RLE + scores) and its cut-off."""
    from instseg.inference import Predictor

    if cache.exists():
        data = json.loads(cache.read_text())
        frames = [Instances.from_rles(f["rles"], tuple(f["size"]), scores=np.array(f["scores"], np.float32))
                  for f in data["frames"]]  # fmt: skip
        return frames, float(data["cutoff"])
    predictor = Predictor("nuclei", object_size="auto", log=lambda m: print(m, file=sys.stderr))
    cutoff = float(predictor.score_cutoff or 0.5)
    seq = read_sequence(seq_dir)
    frames, saved = [], []
    for t in range(len(seq)):
        inst = predictor.predict_arrays([seq.image(t)], apply_cutoff=False)[0]
        inst = inst[inst.scores >= LOW_SCORE] if inst.scores is not None else inst
        frames.append(inst)
        saved.append({"rles": inst.to_rles(), "size": list(inst.image_size), "scores": inst.scores.tolist()})
        print(f"  {seq_dir.parent.name} frame {t}: {len(inst)} detections", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"frames": saved, "cutoff": cutoff}))
    return frames, cutoff


# -- scoring -------------------------------------------------------------------------------------
def write_ctc(folder: Path, result: Result) -> None:
    labels, tracks = [x.copy() for x in result[0]], result[1]
    segments = ctc_segments(labels, tracks)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("mask*.tif"):
        old.unlink()
    for t, label in enumerate(labels):
        tifffile.imwrite(folder / f"mask{t:03d}.tif", label.astype(np.uint16))
    (folder / "res_track.txt").write_text("".join(f"{s.id} {s.first} {s.last} {s.parent}\n" for s in segments))


def divisions_found(gt_dir: Path, res_dir: Path) -> tuple[int, int]:
    """(true divisions whose daughters the result splits off one mother within one frame,
    true divisions)."""
    from instseg.data.ctc import read_tracks

    gt = read_tracks(gt_dir / "TRA" / "man_track.txt")
    res = read_tracks(res_dir / "res_track.txt")
    kids: dict[int, list[int]] = {}
    for t in gt.values():
        if t.parent:
            kids.setdefault(t.parent, []).append(t.id)
    masks = {p.name: p for p in (gt_dir / "TRA").glob("man_track*.tif")}
    found = 0
    for daughters in kids.values():
        if len(daughters) != 2:
            continue
        first = gt[daughters[0]].first
        marker = read_label_image(masks[f"man_track{first:03d}.tif"])
        result = tifffile.imread(res_dir / f"mask{first:03d}.tif")
        covering = []
        for d in daughters:
            values, counts = np.unique(result[marker == d], return_counts=True)
            best = values[np.argmax(counts)] if len(values) else 0
            covering.append(int(best) if best and counts.max() * 2 > (marker == d).sum() else 0)
        parents = {res[c].parent for c in covering if c in res}
        if all(covering) and covering[0] != covering[1] and len(parents) == 1 and 0 not in parents:
            p = res.get(next(iter(parents)))
            found += int(p is not None and abs(p.last - (first - 1)) <= 1)
    return found, sum(len(d) == 2 for d in kids.values())


def score(gt_dir: Path, res_dir: Path) -> dict[str, float]:
    from instseg.evaluation import evaluate_tracking

    return dict(evaluate_tracking(gt_dir, res_dir))


# -- runs ----------------------------------------------------------------------------------------
class TookTooLong(Exception):
    pass


def _job(fn: Callable[[], Result], frames: int, folder: Path) -> None:
    """In a child process: run a tracker, write its CTC folder and its frames per second."""
    t0 = time.perf_counter()
    result = fn()
    fps = frames / (time.perf_counter() - t0)
    write_ctc(folder, result)
    (folder / "fps.txt").write_text(f"{fps}")


def timed(fn: Callable[[], Result], frames: int, folder: Path, limit: int) -> float:
    """Run ``fn`` in a forked child that writes ``folder``; its frames per second.
    TookTooLong (the child killed) after ``limit`` seconds."""
    (folder / "fps.txt").unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    child = multiprocessing.get_context("fork").Process(target=_job, args=(fn, frames, folder))
    child.start()
    child.join(limit or None)
    if child.is_alive():
        child.kill()
        child.join()
        raise TookTooLong
    if child.exitcode != 0 or not (folder / "fps.txt").exists():
        raise RuntimeError(f"{folder.name} failed (exit code {child.exitcode})")
    return float((folder / "fps.txt").read_text())


def run_setting(seq: str, setting: str, root: Path, out: Path, limit: int) -> list[dict[str, Any]]:
    seq_dir, gt_dir = root / seq / "01", root / seq / "01_GT"
    if setting == "gt":
        labels = gt_frames(seq_dir)
        frames = [label_instances(x) for x in labels]
        high = 0.5
    else:
        frames, high = predicted(seq_dir, out / seq / "predictions.json")
        labels = [_paint_detections(f, high) for f in frames]
    for f in frames:
        f.track_ids = None
    rows: list[dict[str, Any]] = []
    runners: dict[str, Callable[[], Result]] = {
        "instseg": lambda: run_ours(frames, high),
        "laptrack": lambda: run_laptrack(labels),
        "iou-hungarian": lambda: run_iou_hungarian(labels),
    }
    for name, fn in runners.items():
        res_dir = out / seq / setting / name
        try:
            fps = timed(fn, len(labels), res_dir, limit)
        except TookTooLong:
            rows.append({"sequence": seq, "setting": setting, "tracker": name, "skipped": f"over {limit} s"})
            print(json.dumps(rows[-1]), file=sys.stderr)
            continue
        found, true = divisions_found(gt_dir, res_dir)
        rows.append({"sequence": seq, "setting": setting, "tracker": name, **score(gt_dir, res_dir),
                     "divisions": f"{found}/{true}", "fps": fps})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _paint_detections(inst: Instances, cutoff: float) -> np.ndarray:
    """Label image of the detections at or above ``cutoff`` (higher scores painted on top)."""
    out = np.zeros(inst.image_size, np.uint16)
    assert inst.masks is not None and inst.scores is not None
    order = np.argsort(inst.scores.numpy())  # low first: the confident ones overwrite
    k = 0
    for i in order:
        if inst.scores[i] >= cutoff:
            k += 1
            out[inst.masks[i].numpy()] = k
    return out


def tracker_cost(objects: int = 100, size: int = 1024, frames: int = 30) -> float:
    """Median ms of ``Tracker.update`` per frame: ``objects`` discs of radius 20 moving 3
    pixels a frame in random directions on ``size`` x ``size`` frames (model excluded)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(40, size - 40, (objects, 2))
    steps = rng.normal(0, 3, (objects, 2))
    yy, xx = np.ogrid[:size, :size]
    tracker, times = Tracker(), []
    for _ in range(frames):
        centres = np.clip(centres + steps, 25, size - 25)
        masks = np.stack([(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= 400 for c in centres])
        inst = Instances.from_masks(masks, scores=np.ones(objects, np.float32))
        t0 = time.perf_counter()
        tracker.update(inst)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times[1:]))


COLUMNS = ("TRA", "DET", "SEG", "HOTA", "IDF1", "divisions", "fps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", nargs="+", default=list(SEQUENCES))
    ap.add_argument("--settings", nargs="+", default=["gt", "e2e"], choices=["gt", "e2e"])
    ap.add_argument("--data", default=None, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--out", default="runs/track_cells", help="result folders and the prediction cache")
    ap.add_argument("--limit", type=int, default=600, help="seconds a tracker may take on a sequence (600)")
    args = ap.parse_args()
    root = (Path(args.data) if args.data else data_root()) / "ctc_tracking"
    rows = [r for s in args.settings for q in args.sequences for r in run_setting(q, s, root, Path(args.out), args.limit)]
    print("| sequence | setting | tracker | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for r in rows:
        if "skipped" in r:
            print(f"| {r['sequence']} | {r['setting']} | {r['tracker']} | did not finish in {args.limit} s |")
            continue
        cells = [f"{r[c]:.4f}" if isinstance(r[c], float) and c != "fps" else str(r[c]) if c != "fps"
                 else f"{r[c]:.1f}" for c in COLUMNS]  # fmt: skip
        print(f"| {r['sequence']} | {r['setting']} | {r['tracker']} | " + " | ".join(cells) + " |")
    print(f"\nTracker.update, 100 objects on 1024x1024 frames: {tracker_cost():.2f} ms per frame (median)")


if __name__ == "__main__":
    main()
