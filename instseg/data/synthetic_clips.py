"""Synthetic clips: objects move, spin, enter, leave and occlude each other, with track ids.

Built on the scene machinery of :mod:`instseg.data.synthetic` (same shapes, textures and
ground-truth rule); deterministic from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from instseg.data.dataset import ImageRecord, InstanceDataset
from instseg.data.synthetic import (
    Scene,
    SceneConfig,
    Seed,
    _background,
    _categories,
    _compose,
    _new_object,
    _Object,
    _record,
)
from instseg.structures import Instances


@dataclass
class ClipConfig:
    """A short clip: objects drift at ``speed`` px/frame, spin, enter and leave the frame.

    ``scene`` gives the frame size, the objects at frame 0, their look and the ground-truth
    rule (its ``max_occlusion``/``overlap`` are not used: moving objects occlude freely).
    ``enter_rate``: expected number of new objects entering from an edge per frame. Objects
    are removed once wholly outside the frame and never come back; track ids are never reused.
    """

    scene: SceneConfig = field(default_factory=lambda: SceneConfig(num_objects=(3, 6)))
    num_frames: int = 16
    speed: tuple[float, float] = (1.0, 6.0)
    spin: float = 0.05
    enter_rate: float = 0.2


def _moving_object(
    cfg: ClipConfig, rng: np.random.Generator, bg_mean: np.ndarray, entering: bool
) -> _Object:
    h, w = cfg.scene.height, cfg.scene.width
    obj = _new_object(cfg.scene, rng, bg_mean)
    radius = obj.scale_px * float(np.linalg.norm(obj.poly, axis=1).max())
    if entering:  # just outside a random edge, heading to a random point inside
        edge = int(rng.integers(4))
        t = rng.uniform(0.1, 0.9)
        obj.center = np.array(
            [[t * w, -radius], [w + radius, t * h], [t * w, h + radius], [-radius, t * h]][edge]
        )
        target = rng.uniform(0.25, 0.75, 2) * [w, h]
    else:
        obj.center = rng.uniform(0, 1, 2) * [w, h]
        target = obj.center + rng.normal(0, 1, 2)
    direction = (target - obj.center) / max(float(np.linalg.norm(target - obj.center)), 1e-6)
    obj.velocity = direction * rng.uniform(cfg.speed[0], cfg.speed[1])
    obj.spin = float(rng.uniform(-cfg.spin, cfg.spin))
    return obj


def generate_clip(config: ClipConfig, seed: Seed = 0) -> list[Scene]:
    """Render the frames of a clip; ``Scene.instances.track_ids`` are consistent across frames.

    Depth order is fixed per object (a random depth drawn when it appears), so an object can
    pass behind another, vanish from the ground truth while hidden and come back with its id.
    """
    rng = np.random.default_rng(seed)
    cfg = config.scene
    h, w = cfg.height, cfg.width
    background = _background(cfg, rng)
    bg_mean = background.reshape(-1, 3).mean(axis=0)
    objs: list[tuple[float, _Object]] = []  # (depth, object)
    next_id = 1

    def add(entering: bool) -> None:
        nonlocal next_id
        obj = _moving_object(config, rng, bg_mean, entering)
        obj.track_id = next_id
        next_id += 1
        objs.append((float(rng.uniform()), obj))

    for _ in range(int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))):
        add(entering=False)
    frames = []
    for t in range(config.num_frames):
        if t > 0:
            for _, obj in objs:
                obj.center = obj.center + obj.velocity
                obj.angle += obj.spin
            for _ in range(int(rng.poisson(config.enter_rate))):
                add(entering=True)
        ordered = [o for _, o in sorted(objs, key=lambda d: d[0])]
        frames.append(_compose(ordered, background, cfg, rng, tracks=True))
        # forget objects that have left for good (wholly outside and moving away)
        objs = [(d, o) for d, o in objs if not _gone(o, h, w)]
    return frames


def _gone(obj: _Object, h: int, w: int) -> bool:
    r = obj.scale_px * float(np.linalg.norm(obj.poly, axis=1).max())
    (x, y), (vx, vy) = obj.center, obj.velocity
    return bool(
        (x + r < 0 and vx <= 0)
        or (x - r > w and vx >= 0)
        or (y + r < 0 and vy <= 0)
        or (y - r > h and vy >= 0)
    )


def render_clip(config: ClipConfig, seed: Seed = 0) -> list[tuple[np.ndarray, Instances]]:
    """``[(image uint8 (H, W, 3), Instances with track_ids), ...]`` one per frame."""
    return [(s.image, s.instances) for s in generate_clip(config, seed)]


def make_clip_dataset(
    config: ClipConfig | None = None,
    seed: int = 0,
    out_dir: str | Path = "synthetic-clip",
    n_clips: int = 1,
    annotations: str | None = "annotations.json",
) -> InstanceDataset:
    """Render ``n_clips`` clips to ``out_dir/frames/CCC_TTTT.png``; annotations carry ``track_id``.

    Track ids are unique across the whole dataset (clip ``c`` continues after clip ``c-1``).
    """
    cfg = config or ClipConfig()
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    records: list[ImageRecord] = []
    ann_id, id_offset = 1, 0
    for c, ss in enumerate(np.random.SeedSequence(seed).spawn(n_clips)):
        frames = render_clip(cfg, ss)
        max_id = 0
        for t, (image, inst) in enumerate(frames):
            if inst.track_ids is not None and len(inst):
                max_id = max(max_id, int(inst.track_ids.max()))
                inst = replace(inst, track_ids=inst.track_ids + id_offset)
            path = out / "frames" / f"{c:03d}_{t:04d}.png"
            rec = _record(len(records) + 1, path, image, inst, ann_id)
            ann_id += len(rec.annotations)
            records.append(rec)
        id_offset += max_id
    ds = InstanceDataset(records, _categories(cfg.scene), source=f"synthetic clips (seed {seed})")
    if annotations is not None:
        ds.save_coco(out / annotations)
    return ds
