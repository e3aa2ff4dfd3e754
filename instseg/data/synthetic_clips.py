"""Synthetic clips: objects move, spin, enter, leave and occlude each other, with track ids;
on request also crossings, short disappearances and divisions (:class:`ClipConfig`).

Built on the scene machinery of :mod:`instseg.data.synthetic` (same shapes, textures and
ground-truth rule); deterministic from a seed. :func:`make_clip` gives the frames with the
track table (``Track`` rows as in a Cell Tracking Challenge ``man_track.txt``, daughters naming
their mother as parent) and the list of staged events; :func:`generate_clip` and
:func:`render_clip` give the frames only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from instseg.data.ctc import Track
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
    _rot,
)
from instseg.structures import Instances


@dataclass
class ClipConfig:
    """A short clip: objects drift at ``speed`` px/frame, spin, enter and leave the frame.

    ``scene`` gives the frame size, the objects at frame 0, their look and the ground-truth
    rule (its ``max_occlusion``/``overlap`` are not used: moving objects occlude freely).
    ``enter_rate``: expected number of new objects entering from an edge per frame. Objects
    are removed once wholly outside the frame and never come back; track ids are never reused.

    Staged events (extra objects near the centre, each recorded as a :class:`ClipEvent`;
    they need ``num_frames >= 6``): ``crossings`` pairs of objects whose paths cross mid-clip,
    a small one passing under a large one without holes (hidden for a few frames);
    ``occlusions`` objects not drawn for 1-3 frames mid-clip (a missed detection) that come
    back with their id; ``divisions`` objects that split mid-clip into two daughters, each
    0.72 of the mother's size, which move apart (the mother's track ends the frame before).
    """

    scene: SceneConfig = field(default_factory=lambda: SceneConfig(num_objects=(3, 6)))
    num_frames: int = 16
    speed: tuple[float, float] = (1.0, 6.0)
    spin: float = 0.05
    enter_rate: float = 0.2
    crossings: int = 0
    occlusions: int = 0
    divisions: int = 0

    def __post_init__(self) -> None:
        if min(self.crossings, self.occlusions, self.divisions) < 0:
            raise ValueError("crossings, occlusions and divisions must be >= 0")
        if self.crossings + self.occlusions + self.divisions and self.num_frames < 6:
            raise ValueError(f"staged events need num_frames >= 6, got {self.num_frames}")


@dataclass(frozen=True)
class ClipEvent:
    """A staged event: ``kind`` ``"crossing"`` (``ids`` = (top, under); ``first`` = ``last``
    = the frame their centres meet), ``"occlusion"`` (``ids`` = (object,); hidden in frames
    ``first..last``) or ``"division"`` (``ids`` = (mother, daughter, daughter); the daughters'
    first frame ``first`` = ``last``)."""

    kind: str
    first: int
    last: int
    ids: tuple[int, ...]


@dataclass
class Clip:
    """A rendered clip: ``frames``, the track table (one :class:`~instseg.data.ctc.Track` per
    object seen: first and last frame in the ground truth, parent 0 or the mother's id; an
    object hidden for a while misses frames in between) and the staged ``events``."""

    frames: list[Scene]
    tracks: list[Track]
    events: list[ClipEvent]


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
    return make_clip(config, seed).frames


def make_clip(config: ClipConfig, seed: Seed = 0) -> Clip:
    """Render a clip with its track table and staged events (see :class:`ClipConfig`); the
    frames equal :func:`generate_clip`'s for the same seed."""
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
    stage = _Stage(config, rng, bg_mean, next_id)
    objs += stage.objects
    next_id = stage.next_id
    frames = []
    for t in range(config.num_frames):
        if t > 0:
            for _, obj in objs:
                obj.center = obj.center + obj.velocity
                obj.angle += obj.spin
            for _ in range(int(rng.poisson(config.enter_rate))):
                add(entering=True)
        objs = stage.divide(objs, t)
        hidden = stage.hidden(t)
        ordered = [o for _, o in sorted(objs, key=lambda d: d[0]) if o.track_id not in hidden]
        frames.append(_compose(ordered, background, cfg, rng, tracks=True))
        # forget objects that have left for good (wholly outside and moving away)
        objs = [(d, o) for d, o in objs if not _gone(o, h, w)]
    return Clip(frames, _track_table(frames, stage.parents), stage.events)


def _track_table(frames: list[Scene], parents: dict[int, int]) -> list[Track]:
    """One row per track id seen in the ground truth of ``frames``."""
    seen: dict[int, list[int]] = {}
    for t, scene in enumerate(frames):
        assert scene.instances.track_ids is not None
        for tid in scene.instances.track_ids.tolist():
            seen.setdefault(int(tid), []).append(t)
    return [Track(tid, ts[0], ts[-1], parents.get(tid, 0)) for tid, ts in sorted(seen.items())]


class _Stage:
    """The staged events' objects (drawn above the others), hidden frames and divisions.
    Every random draw happens here, before the first frame, and only when events are asked
    for (a clip without them draws exactly what it always did)."""

    def __init__(self, config: ClipConfig, rng: np.random.Generator, bg_mean: np.ndarray, next_id: int) -> None:
        self.config, self.rng, self.bg_mean, self.next_id = config, rng, bg_mean, next_id
        self.objects: list[tuple[float, _Object]] = []
        self.events: list[ClipEvent] = []
        self.parents: dict[int, int] = {}
        self._hide: dict[int, set[int]] = {}  # frame -> hidden ids
        self._split: dict[int, list[tuple[int, float, float, int, int]]] = {}  # frame -> divisions
        self._centres: list[np.ndarray] = []
        for k in range(config.crossings):
            self._crossing(2.0 + 0.01 * k)
        for k in range(config.divisions):
            self._division(3.0 + 0.01 * k)
        for k in range(config.occlusions):
            self._occlusion(4.0 + 0.01 * k)

    def _object(self, size: float, center: np.ndarray, velocity: np.ndarray, solid: bool = False) -> _Object:
        """A new object of ``size`` px; ``solid``: without holes and filling at least 40% of
        its box (so it hides what passes under it), when one turns up in 20 draws."""
        for _ in range(20):
            obj = _new_object(self.config.scene, self.rng, self.bg_mean)
            if not solid or (not obj.holes and _fill(obj.poly) >= 0.4):
                break
        obj.scale_px = size / float(np.ptp(_rot(obj.poly, obj.angle), axis=0).max())
        obj.center, obj.velocity = np.asarray(center, np.float64), np.asarray(velocity, np.float64)
        obj.track_id, self.next_id = self.next_id, self.next_id + 1
        return obj

    def _middle(self) -> int:
        n = self.config.num_frames
        return int(self.rng.integers(n // 3, max(n // 3 + 1, 2 * n // 3)))

    def _centre(self) -> np.ndarray:
        """A point in the middle 60% of the frame, away from the other events' (up to 30 draws)."""
        cfg = self.config.scene
        for _ in range(30):
            c = self.rng.uniform(0.2, 0.8, 2) * [cfg.width, cfg.height]
            if all(np.linalg.norm(c - o) >= 1.1 * cfg.scale[1] for o in self._centres):
                break
        self._centres.append(c)
        return c

    def _heading(self, speed: tuple[float, float]) -> np.ndarray:
        a = self.rng.uniform(0, 2 * np.pi)
        return np.array([np.cos(a), np.sin(a)]) * self.rng.uniform(*speed)

    def _crossing(self, depth: float) -> None:
        """A large solid object drifting slowly and a small one (0.45 of its size) passing
        under it fast enough to be clear of it at the first and last frames (if the clip is
        short) but at least 6 px/frame, so hidden for a few frames."""
        n, big = self.config.num_frames, self.config.scene.scale[1]
        meet, point = n // 2, self._centre()
        top = self._object(big, point, self._heading((0.5, 1.5)), solid=True)
        top.spin = 0.0
        reach = 0.5 * (big + 0.45 * big)
        a = self.rng.uniform(0, 2 * np.pi)
        vel = np.array([np.cos(a), np.sin(a)]) * max(6.0, 1.2 * reach / max(1, min(meet, n - 1 - meet)))
        under = self._object(0.45 * big, point - (top.velocity + vel) * meet, top.velocity + vel)
        top.center = point - top.velocity * meet
        self.objects += [(depth, top), (depth - 0.5, under)]
        self.events.append(ClipEvent("crossing", meet, meet, (top.track_id, under.track_id)))

    def _occlusion(self, depth: float) -> None:
        lo, hi = self.config.scene.scale
        obj = self._object(self.rng.uniform(lo, hi), self._centre(), self._heading((0.5, 2.0)))
        first = max(1, self._middle())
        last = min(first + int(self.rng.integers(0, 3)), self.config.num_frames - 2)
        for t in range(first, last + 1):
            self._hide.setdefault(t, set()).add(obj.track_id)
        self.objects.append((depth, obj))
        self.events.append(ClipEvent("occlusion", first, last, (obj.track_id,)))

    def _division(self, depth: float) -> None:
        lo, hi = self.config.scene.scale
        mother = self._object(self.rng.uniform(max(lo, 0.6 * hi), hi), self._centre(), self._heading((0.5, 2.0)))
        at = min(max(1, self._middle()), self.config.num_frames - 2)
        axis, apart = self.rng.uniform(0, np.pi), self.rng.uniform(1.5, 3.0)
        d1, d2 = self.next_id, self.next_id + 1
        self.next_id += 2
        self._split.setdefault(at, []).append((mother.track_id, axis, apart, d1, d2))
        self.parents |= {d1: mother.track_id, d2: mother.track_id}
        self.objects.append((depth, mother))
        self.events.append(ClipEvent("division", at, at, (mother.track_id, d1, d2)))

    def hidden(self, t: int) -> set[int]:
        return self._hide.get(t, set())

    def divide(self, objs: list[tuple[float, _Object]], t: int) -> list[tuple[float, _Object]]:
        """``objs`` with the mothers dividing at frame ``t`` replaced by their daughters."""
        for mother_id, axis, apart, d1, d2 in self._split.get(t, []):
            found = [(d, o) for d, o in objs if o.track_id == mother_id]
            if not found:
                continue
            depth, mother = found[0]
            objs = [(d, o) for d, o in objs if o.track_id != mother_id]
            u = np.array([np.cos(axis), np.sin(axis)])
            size = float(np.ptp(mother.scale_px * _rot(mother.poly, mother.angle), axis=0).max())
            for sign, tid, dz in ((1, d1, 0.0), (-1, d2, 0.001)):
                daughter = replace(mother, scale_px=0.72 * mother.scale_px, track_id=tid,
                                   center=mother.center + sign * 0.15 * size * u,
                                   velocity=mother.velocity + sign * apart * u)  # fmt: skip
                objs.append((depth + dz, daughter))
        return objs


def _fill(poly: np.ndarray) -> float:
    """Area of a polygon ``(K, 2)`` over the square of its longer box side."""
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return area / float(np.ptp(poly, axis=0).max()) ** 2


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
