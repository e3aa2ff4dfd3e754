"""Synthetic clips' staged events: crossings (one object passing under another), short
disappearances and divisions really happen in the ground truth, the track table matches the
frames, and all of it is deterministic per seed; a clip without events is what it always was."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_clips import Clip, ClipConfig, generate_clip, make_clip

EVENTS = ClipConfig(num_frames=16, crossings=1, occlusions=1, divisions=1)


def masks_by_id(clip: Clip, t: int) -> dict[int, np.ndarray]:
    inst = clip.frames[t].instances
    assert inst.masks is not None and inst.track_ids is not None
    return dict(zip(inst.track_ids.tolist(), inst.masks.numpy()))


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_staged_events_happen(seed: int) -> None:
    clip = make_clip(EVENTS, seed)
    kinds = sorted(e.kind for e in clip.events)
    assert kinds == ["crossing", "division", "occlusion"]
    tracks = {t.id: t for t in clip.tracks}
    for ev in clip.events:
        if ev.kind == "crossing":  # the small one is seen, hidden under the big one, seen again
            top, under = ev.ids
            scene = clip.frames[ev.first]
            ids = scene.instances.track_ids.tolist()  # type: ignore[union-attr]
            assert top in ids
            assert under not in ids or scene.occlusion[ids.index(under)] >= 0.5
            assert tracks[under].first < ev.first < tracks[under].last
        elif ev.kind == "occlusion":  # gone for 1-3 frames, back with its id
            (oid,) = ev.ids
            assert 1 <= ev.last - ev.first + 1 <= 3
            assert all(oid not in masks_by_id(clip, t) for t in range(ev.first, ev.last + 1))
            assert oid in masks_by_id(clip, ev.first - 1) and oid in masks_by_id(clip, ev.last + 1)
        else:  # the mother ends; two daughters start inside her and move apart
            mother, d1, d2 = ev.ids
            assert tracks[mother].last == ev.first - 1
            assert (tracks[d1].first, tracks[d1].parent) == (ev.first, mother)
            assert (tracks[d2].first, tracks[d2].parent) == (ev.first, mother)
            before, at, later = (masks_by_id(clip, ev.first + k) for k in (-1, 0, 3))
            for d in (d1, d2):
                assert (at[d] & before[mother]).sum() >= 0.4 * at[d].sum()  # the tracker wants 0.3
            gap = np.linalg.norm(centroid(at[d1]) - centroid(at[d2]))
            assert np.linalg.norm(centroid(later[d1]) - centroid(later[d2])) > gap + 5


def test_track_table_matches_the_frames() -> None:
    clip = make_clip(EVENTS, 3)
    tracks = {t.id: t for t in clip.tracks}
    seen: set[int] = set()
    for t in range(len(clip.frames)):
        for tid in masks_by_id(clip, t):
            assert tracks[tid].first <= t <= tracks[tid].last
            seen.add(tid)
    assert seen == set(tracks)
    assert sum(t.parent > 0 for t in clip.tracks) == 2


def test_deterministic_per_seed() -> None:
    a, b, c = make_clip(EVENTS, 5), make_clip(EVENTS, 5), make_clip(EVENTS, 6)
    assert a.tracks == b.tracks and a.events == b.events
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.instances.masks.numpy(), fb.instances.masks.numpy())  # type: ignore[union-attr]
    assert not np.array_equal(a.frames[8].image, c.frames[8].image)


def test_no_events_is_the_plain_clip() -> None:
    cfg = ClipConfig(scene=SceneConfig(height=96, width=96, num_objects=(2, 3), scale=(16, 32)), num_frames=5)
    clip = make_clip(cfg, 4)
    assert clip.events == [] and all(t.parent == 0 for t in clip.tracks)
    for f, g in zip(clip.frames, generate_clip(cfg, 4)):
        np.testing.assert_array_equal(f.image, g.image)
    with pytest.raises(ValueError, match="num_frames >= 6"):
        ClipConfig(num_frames=4, divisions=1)
