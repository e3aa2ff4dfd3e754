"""The tracker keeps identities through motion, misses and low scores, links divisions, and
recovers the ground-truth tracks of real CTC sequences from their masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.data.ctc import read_sequence
from instseg.data.synthetic_clips import ClipConfig, render_clip
from instseg.structures import Instances
from instseg.tracking import Tracker, TrackerConfig, track
from tests.conftest import data_path


def disc(cy: float, cx: float, r: float, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def frame(masks: list[np.ndarray], scores: list[float] | None = None) -> Instances:
    stack = np.stack(masks) if masks else np.zeros((0, 96, 96), bool)
    return Instances.from_masks(stack, scores=scores if scores is not None else [0.9] * len(masks))


def test_motion_prior_bridges_a_missed_frame_of_a_fast_object() -> None:
    """A disc moving 8 px a frame (radius 8) is missed for one frame: 16 px away its last mask
    no longer overlaps, its predicted mask does; a still disc keeps its own id."""
    tracker = Tracker()
    ids = []
    for x in (20, 28, None, 44, 52):
        masks = [disc(70, 70, 8)] + ([] if x is None else [disc(30, x, 8)])
        ids.append(tracker.update(frame(masks)).track_ids.tolist())
    assert ids == [[1, 2], [1, 2], [1], [1, 2], [1, 2]]


def test_short_miss_keeps_the_id_long_miss_starts_a_new_track() -> None:
    tracker = Tracker(TrackerConfig(max_lost=2))
    seen = [tracker.update(frame([disc(40, 40, 10)])).track_ids.tolist()]
    seen += [tracker.update(frame([])).track_ids.tolist() for _ in range(2)]
    seen.append(tracker.update(frame([disc(40, 40, 10)])).track_ids.tolist())
    assert seen == [[1], [], [], [1]]
    for _ in range(3):
        tracker.update(frame([]))
    assert tracker.update(frame([disc(40, 40, 10)])).track_ids.tolist() == [2]
    assert [(t.id, t.first, t.last) for t in tracker.tracks()] == [(1, 0, 3), (2, 7, 7)]


def test_low_scores_continue_tracks_but_never_start_them() -> None:
    tracker = Tracker()
    tracker.update(frame([disc(40, 40, 10)], [0.9]))
    out = tracker.update(frame([disc(40, 41, 10), disc(80, 80, 6)], [0.3, 0.3]))
    assert out.track_ids.tolist() == [1]  # the occluded object continues; the new one waits
    assert tracker.update(frame([disc(40, 42, 10)], [0.05])).track_ids.tolist() == []


def test_division_ends_the_mother_and_starts_two_daughters() -> None:
    tracker = Tracker()
    tracker.update(frame([disc(48, 48, 14)]))
    tracker.update(frame([disc(48, 48, 14)]))
    out = tracker.update(frame([disc(48, 40, 8), disc(48, 57, 8)]))
    assert sorted(out.track_ids.tolist()) == [2, 3]
    assert [(t.id, t.first, t.last, t.parent) for t in tracker.tracks()] == [
        (1, 0, 1, 0), (2, 2, 2, 1), (3, 2, 2, 1),
    ]  # fmt: skip


def test_synthetic_clip_ids_are_recovered() -> None:
    """Ten clips of moving, spinning, occluding shapes entering and leaving: no tracker id ever
    spans two objects, and of the objects visible in consecutive frames at most 5 changed id
    (4 measured with divisions off, as for objects that never divide: each under heavy
    occlusion, where the visible mask changes most)."""
    merges = switches = 0
    for seed in range(10):
        tracker = Tracker(TrackerConfig(divisions=False))
        owner: dict[int, int] = {}
        last: dict[int, tuple[int, int]] = {}  # gt id -> (frame, tracker id)
        for t, (_, gt) in enumerate(render_clip(ClipConfig(), seed=seed)):
            out = tracker.update(Instances.from_masks(gt.masks, scores=[1.0] * len(gt)))  # type: ignore[arg-type]
            assert len(out) == len(gt)
            for g, o in zip(gt.track_ids.tolist(), out.track_ids.tolist()):  # type: ignore[union-attr]
                merges += owner.setdefault(o, g) != g
                switches += g in last and last[g][0] == t - 1 and last[g][1] != o
                last[g] = (t, o)
    assert merges == 0 and switches <= 5, (merges, switches)


def test_ctc_sim_tracks_from_ground_truth_masks() -> None:
    """Fluo-N2DH-SIM+ (65 frames, 95 tracks, 59 daughters) tracked from its own masks, ids
    hidden: nearly every identity kept and most divisions linked (the division setting was
    chosen on this sequence)."""
    seq = read_sequence(data_path("ctc_tracking") / "Fluo-N2DH-SIM+" / "01")
    tracker = Tracker()
    mapping: dict[int, int] = {}
    switches = 0
    for t in range(len(seq)):
        gt = seq.instances(t)
        assert gt is not None and gt.track_ids is not None
        out = tracker.update(Instances.from_masks(gt.masks))  # type: ignore[arg-type]
        for g, o in zip(gt.track_ids.tolist(), out.track_ids.tolist()):  # type: ignore[union-attr]
            switches += int(g in mapping and mapping[g] != o)
            mapping[g] = o
    ours = {x.id: x for x in tracker.tracks()}
    linked = sum(
        ours[mapping[g]].parent == mapping[tr.parent]
        for g, tr in seq.tracks.items()
        if tr.parent and g in mapping and tr.parent in mapping
    )
    # measured: 0 switches, 50 of the 53 daughters linked, 86 tracks for the GT's 95 (its
    # one-daughter divisions and two ambiguous ones continue the mother)
    assert switches <= 3 and linked >= 48, (switches, linked)
    assert 84 <= len(ours) <= 100


def test_track_runs_a_predictor_over_frames() -> None:
    clip = render_clip(ClipConfig(), seed=1)
    lookup = {id(img): gt for img, gt in clip}

    def predictor(image: np.ndarray) -> Instances:  # an oracle detector
        gt = lookup[id(image)]
        return Instances.from_masks(gt.masks, scores=torch.ones(len(gt)))  # type: ignore[arg-type]

    outs = list(track([img for img, _ in clip], predictor))
    assert len(outs) == len(clip) and all(o.track_ids is not None for o in outs)


def test_synthetic_clips_with_events_keep_identities_through_dropped_detections() -> None:
    """Ten clips with crossings (a small shape passing under a large one), occlusions (1-3
    frames unseen) and a division, 10% of the detections dropped at random: IDF1 (TrackEval's
    definition) 0.85 measured; most losses are the small shapes coming out from under the
    large ones, whose first visible sliver overlaps too little of their last mask."""
    from instseg.data.synthetic_clips import make_clip
    from instseg.evaluation.tracking import tracking_metrics

    scores = []
    for seed in range(10):
        clip = make_clip(ClipConfig(num_frames=24, crossings=2, occlusions=2, divisions=1), seed=seed)
        rng = np.random.default_rng(100 + seed)
        tracker, gts, preds = Tracker(), [], []
        for scene in clip.frames:
            gt = scene.instances
            assert gt.masks is not None
            keep = rng.random(len(gt)) >= 0.1
            det = Instances.from_masks(gt.masks.numpy()[keep], scores=np.ones(int(keep.sum()), np.float32))
            preds.append(tracker.update(det))
            gts.append(gt)
        scores.append(tracking_metrics(gts, preds)["IDF1"])
    assert np.mean(scores) >= 0.82, scores


def test_a_low_score_fragment_of_a_confident_detection_continues_nothing() -> None:
    """ByteTrack's second stage is for missed objects: a low-score piece lying inside a
    confident detection (here two touching objects detected as one, plus one of them again
    at a low score) is a duplicate and must not continue a track."""
    a, b = disc(30, 30, 10), disc(30, 52, 10)
    tracker = Tracker()
    tracker.update(frame([a, b]))
    out = tracker.update(frame([a | b, b], scores=[0.9, 0.3]))
    assert len(out) == 1 and out.scores is not None and float(out.scores[0]) == pytest.approx(0.9)
