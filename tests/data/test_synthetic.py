"""Synthetic scenes and clips: determinism, exact visible-part ground truth, controls, disk round trip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from instseg.data.coco import load_coco
from instseg.data.synthetic import SHAPES, SceneConfig, generate_scene, make_dataset, render_scene
from instseg.data.synthetic_clips import ClipConfig, generate_clip, make_clip_dataset, render_clip
from instseg.masks import masks_to_boxes


def _masks(inst) -> np.ndarray:  # type: ignore[no-untyped-def]
    assert inst.masks is not None
    return inst.masks.numpy()


def test_same_seed_same_scene_different_seed_differs() -> None:
    cfg = SceneConfig(classes=SHAPES)
    a_img, a = render_scene(cfg, 7)
    b_img, b = render_scene(cfg, 7)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(_masks(a), _masks(b))
    np.testing.assert_array_equal(a.labels.numpy(), b.labels.numpy())
    c_img, _ = render_scene(cfg, 8)
    assert not np.array_equal(a_img, c_img)
    # a Generator works too and does not touch numpy's global RNG
    state = np.random.get_state()[1].copy()  # type: ignore[index]
    g_img, _ = render_scene(cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(g_img, a_img)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # type: ignore[index]


@pytest.mark.parametrize("seed", range(6))
def test_masks_disjoint_nonempty_boxes_tight(seed: int) -> None:
    cfg = SceneConfig(height=160, width=200, num_objects=(4, 12), overlap=0.8, classes=SHAPES)
    img, inst = render_scene(cfg, seed)
    assert img.shape == (160, 200, 3) and img.dtype == np.uint8
    m = _masks(inst)
    assert m.shape[1:] == (160, 200)
    assert (m.sum(axis=(1, 2)) >= cfg.min_visible_area).all()
    assert m.sum(axis=0).max() <= 1  # visible parts never overlap
    np.testing.assert_array_equal(inst.boxes.numpy(), masks_to_boxes(m))
    assert ((inst.labels >= 0) & (inst.labels < len(cfg.classes))).all()
    assert inst.scores is not None and (inst.scores == 1).all()


def test_object_pixels_carry_object_colours() -> None:
    # without sensor noise, a mask's pixels are painted by that object: the background
    # under a mask (re-rendered with no objects) differs from the image somewhere inside it
    cfg = SceneConfig(noise_std=0.0, num_objects=(5, 5), textures=("solid",))
    img, inst = render_scene(cfg, 3)
    bg, empty = render_scene(SceneConfig(noise_std=0.0, num_objects=(0, 0), textures=("solid",)), 3)
    assert len(empty) == 0
    for m in _masks(inst):
        assert np.abs(img[m].astype(int) - bg[m].astype(int)).max() > 20
    # pixels more than one pixel away from every mask are background (only the anti-aliased
    # edge may blend into its neighbours; no object was dropped here)
    near = binary_dilation(_masks(inst).any(axis=0), np.ones((3, 3), bool))
    changed = np.abs(img.astype(int) - bg.astype(int)).max(axis=2) > 0
    assert not (changed & ~near).any()
    assert (changed & ~_masks(inst).any(axis=0)).any()  # edges are anti-aliased


def test_counts_and_scale_range() -> None:
    cfg = SceneConfig(num_objects=(2, 5), scale=(20, 40), max_occlusion=0.0)
    counts = []
    for seed in range(20):
        scene = generate_scene(cfg, seed)
        n = len(scene.instances)
        counts.append(n)
        assert 2 <= n <= 5
        sides = (scene.instances.boxes[:, 2:] - scene.instances.boxes[:, :2]).max(dim=1).values
        # unoccluded, untruncated objects: the visible part is the whole shape
        assert (scene.occlusion == 0).all() and (scene.truncation == 0).all()
        assert (sides >= 20 - 2.5).all() and (sides <= 40 + 1.5).all(), sides
    assert set(counts) == {2, 3, 4, 5}


def test_occlusion_controlled_by_overlap() -> None:
    none = [generate_scene(SceneConfig(max_occlusion=0.0, overlap=1.0), s) for s in range(10)]
    assert all((s.occlusion == 0).all() for s in none)
    for s in none:  # full shapes never touch: the union of masks equals the sum of areas
        assert _masks(s.instances).sum(axis=0).max() <= 1
    many = [generate_scene(SceneConfig(max_occlusion=0.7, overlap=1.0), s) for s in range(10)]
    occl = np.concatenate([s.occlusion for s in many])
    assert (occl > 0.05).mean() > 0.3
    assert occl.max() <= 0.7 + 1e-6


def test_all_classes_appear_over_a_dataset() -> None:
    cfg = SceneConfig(classes=SHAPES)
    seen: Counter[int] = Counter()
    for seed in range(15):
        seen.update(render_scene(cfg, seed)[1].labels.tolist())
    assert set(seen) == set(range(len(SHAPES)))


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="hexagon"):
        SceneConfig(classes=("hexagon",))
    with pytest.raises(ValueError, match="scale"):
        SceneConfig(scale=(30, 10))
    with pytest.raises(ValueError, match="textures"):
        SceneConfig(textures=("plaid",))


# -- clips ----------------------------------------------------------------------------------
def _clip_events(frames: list) -> tuple[bool, bool, bool]:  # type: ignore[type-arg]
    """Check per-frame track invariants; return (an object entered, one left, one was
    substantially occluded mid-clip and seen with the same id before and after)."""
    label_of: dict[int, int] = {}
    present: dict[int, list[int]] = {}
    occluded_at: dict[int, list[int]] = {}
    for t, f in enumerate(frames):
        inst = f.instances
        assert inst.track_ids is not None
        ids = inst.track_ids.tolist()
        assert len(ids) == len(set(ids))  # one instance per track per frame
        assert _masks(inst).sum(axis=0).max() <= 1
        for tid, lab, occ in zip(ids, inst.labels.tolist(), f.occlusion.tolist()):
            assert label_of.setdefault(tid, lab) == lab  # a track keeps its class
            present.setdefault(tid, []).append(t)
            if occ > 0.2:
                occluded_at.setdefault(tid, []).append(t)
    last = len(frames) - 1
    entered = any(ts[0] > 0 for ts in present.values())
    left = any(ts[-1] < last for ts in present.values())
    occluded = any(
        min(present[tid]) < min(ts) and max(present[tid]) > min(ts)
        for tid, ts in occluded_at.items()
    )
    return entered, left, occluded


def test_clip_tracks_consistent_enter_leave_occlusion() -> None:
    cfg = ClipConfig(num_frames=24, enter_rate=0.3, speed=(3.0, 8.0))
    frames = generate_clip(cfg, 0)
    assert len(frames) == 24
    again = render_clip(cfg, 0)
    np.testing.assert_array_equal(frames[5].image, again[5][0])
    events = np.array([_clip_events(generate_clip(cfg, seed)) for seed in range(3)])
    entered, left, occluded = events.any(axis=0)
    assert entered, "no object entered"
    assert left, "no object left"
    assert occluded, "no track was occluded mid-clip"


def test_clip_entering_objects_are_truncated_at_first() -> None:
    frames = generate_clip(ClipConfig(num_frames=30, enter_rate=0.5), 1)
    first_seen: dict[int, tuple[int, float]] = {}
    for t, f in enumerate(frames):
        assert f.instances.track_ids is not None
        for tid, tr in zip(f.instances.track_ids.tolist(), f.truncation.tolist()):
            first_seen.setdefault(tid, (t, tr))
    entering = [tr for t, tr in first_seen.values() if t > 0]
    assert entering and all(tr > 0 for tr in entering)


# -- on disk --------------------------------------------------------------------------------
def test_make_dataset_coco_round_trip(tmp_path: Path) -> None:
    cfg = SceneConfig(height=96, width=128, num_objects=(2, 6), scale=(16, 40), classes=SHAPES)
    ds = make_dataset(4, cfg, seed=3, out_dir=tmp_path)
    assert (tmp_path / "annotations.json").is_file()
    assert [c.name for c in ds.categories] == list(SHAPES)
    loaded = load_coco(tmp_path / "annotations.json", check_images=True)
    assert len(loaded) == 4 and loaded.num_instances == ds.num_instances
    seeds = np.random.SeedSequence(3).spawn(4)
    for i in range(4):
        img, inst = render_scene(cfg, seeds[i])
        limg, linst = loaded[i]
        np.testing.assert_array_equal(limg, img)
        np.testing.assert_array_equal(_masks(linst), _masks(inst))
        np.testing.assert_array_equal(linst.labels.numpy(), inst.labels.numpy())
        np.testing.assert_array_equal(linst.boxes.numpy(), inst.boxes.numpy())
    # image i does not depend on how many images are made
    ds2 = make_dataset(2, cfg, seed=3, out_dir=tmp_path / "two")
    np.testing.assert_array_equal(ds2.load_image(1), loaded.load_image(1))


def test_make_clip_dataset_track_ids(tmp_path: Path) -> None:
    cfg = ClipConfig(
        scene=SceneConfig(height=96, width=96, num_objects=(2, 4), scale=(16, 32)), num_frames=5
    )
    ds = make_clip_dataset(cfg, seed=0, out_dir=tmp_path, n_clips=2)
    loaded = load_coco(tmp_path / "annotations.json")
    assert len(loaded) == 10
    ids = [{a.track_id for a in rec.annotations} for rec in loaded.images]
    clip_a: set[int | None] = set().union(*ids[:5])
    clip_b: set[int | None] = set().union(*ids[5:])
    assert None not in clip_a | clip_b
    assert clip_a and clip_b and not clip_a & clip_b  # unique across clips
    raw = ds.to_coco()
    assert all("track_id" in a for a in raw["annotations"])
