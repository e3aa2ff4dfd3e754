"""Procedural scenes and clips with exact ground truth, deterministic from a seed.

Shapes (one class each): ``ellipse``, ``rectangle``, ``triangle``, ``star``, ``ring`` (has a
hole), ``cross``, ``blob``. Objects get a colour and a texture (solid, gradient, stripes,
checker, noise) on a textured background (noise, gradient, stripes, flat), and are painted in
depth order: a pixel belongs to the topmost object covering at least half of it (edges are
anti-aliased by 4x4 supersampling), so ground-truth masks are the VISIBLE parts and are
disjoint. Sensor noise is added last; it never changes the masks.

Ground-truth rule: an object is kept when its visible part has at least
``min_visible_area`` pixels AND at least ``min_visible_fraction`` of the object's shape
inside the frame; otherwise it is dropped from the ground truth (its pixels stay painted).
Object size is the longer side of the shape's axis-aligned box at the angle it is drawn; the
mask's box side is within +1.5 / -2.5 pixels of it (sharp tips lose up to ~2 px at coverage 0.5).

All randomness comes from one ``numpy.random.Generator`` (no global RNG). Image ``i`` of
:func:`make_dataset` uses ``SeedSequence(seed).spawn(n)[i]``, so it does not depend on ``n``.
Labels are contiguous ``0..K-1`` in ``config.classes`` order; dataset category ids are
``1..K``; track ids start at 1.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from instseg import masks as mask_codec
from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
from instseg.structures import Instances

Seed = int | np.random.Generator | np.random.SeedSequence
SHAPES = ("ellipse", "rectangle", "triangle", "star", "ring", "cross", "blob")
TEXTURES = ("solid", "gradient", "stripes", "checker", "noise")
BACKGROUNDS = ("noise", "gradient", "stripes", "flat")
_SS = 4  # supersampling factor of the anti-aliased edges


@dataclass
class SceneConfig:
    """What a scene looks like. Sizes in pixels; ``num_objects``/``scale`` are inclusive ranges.

    ``max_occlusion``: the most of any object's shape that objects above it may hide
    (0 = objects never overlap). ``overlap``: probability that a new object is placed against
    an existing one (more occlusion). Objects that cannot be placed in ``max_tries`` are
    skipped, so a crowded config may give fewer than ``num_objects[0]``.
    """

    height: int = 256
    width: int = 256
    num_objects: tuple[int, int] = (3, 10)
    scale: tuple[float, float] = (24.0, 80.0)
    classes: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star", "ring")
    max_occlusion: float = 0.6
    overlap: float = 0.3
    backgrounds: tuple[str, ...] = BACKGROUNDS
    textures: tuple[str, ...] = TEXTURES
    min_visible_area: int = 16
    min_visible_fraction: float = 0.1
    noise_std: float = 3.0
    max_tries: int = 30

    def __post_init__(self) -> None:
        for name, given, known in (
            ("classes", self.classes, SHAPES),
            ("textures", self.textures, TEXTURES),
            ("backgrounds", self.backgrounds, BACKGROUNDS),
        ):
            bad = [c for c in given if c not in known]
            if bad or not given:
                raise ValueError(f"unknown {name} {bad}; choose from {known}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be 0 < min <= max, got {self.scale}")
        if not 0 <= self.num_objects[0] <= self.num_objects[1]:
            raise ValueError(f"num_objects must be 0 <= min <= max, got {self.num_objects}")


@dataclass
class Scene:
    """A rendered scene: ``image`` uint8 (H, W, 3), ground truth, and per-instance metadata.

    ``occlusion`` (N,): fraction of the object's in-frame shape hidden by objects above it.
    ``truncation`` (N,): fraction of the object's shape outside the frame.
    """

    image: np.ndarray
    instances: Instances
    occlusion: np.ndarray
    truncation: np.ndarray


@dataclass
class _Object:
    """One object; ``poly``/``holes`` in unit shape coordinates, drawn at ``center`` (x, y)."""

    label: int
    poly: np.ndarray
    holes: list[np.ndarray]
    scale_px: float
    angle: float
    center: np.ndarray
    colors: np.ndarray  # (2, 3) float32
    texture: str
    tex_params: np.ndarray
    track_id: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    spin: float = 0.0


# -- shapes ------------------------------------------------------------------------------
def _ring_pts(radius: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _shape_polygons(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outer polygon (K, 2) and holes of a shape centred at the origin, radius about 1."""
    if kind in ("ellipse", "ring"):
        pts = _ring_pts(np.ones(64), 64) * [1.0, rng.uniform(0.55, 1.0)]
        holes = [pts * rng.uniform(0.4, 0.6)] if kind == "ring" else []
        return pts, holes
    if kind == "rectangle":
        a = rng.uniform(0.35, 1.0)
        return np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=np.float64), []
    if kind == "triangle":
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
        return np.stack([np.cos(t), np.sin(t)], axis=1), []
    if kind == "star":
        k = int(rng.integers(5, 7))
        r = np.tile([1.0, rng.uniform(0.38, 0.55)], k)
        return _ring_pts(r, 2 * k), []
    if kind == "cross":
        w = rng.uniform(0.28, 0.42)
        arm = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w)]
        return np.array(arm + [(-x, -y) for x, y in arm], dtype=np.float64), []
    # blob: smooth random radial function
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0, 0.25 / k * 2) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1), []


def _rot(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _rasterize(obj: _Object) -> tuple[int, int, np.ndarray]:
    """``(x0, y0, coverage)``: float32 pixel coverage in [0, 1] of the whole shape (4x4
    supersampling), top-left pixel at (x0, y0). A pixel is in the mask when coverage >= 0.5."""
    outer = obj.center + obj.scale_px * _rot(obj.poly, obj.angle)
    x0, y0 = np.floor(outer.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(outer.max(axis=0)).astype(int) + 1
    canvas = np.zeros(((y1 - y0) * _SS, (x1 - x0) * _SS), np.uint8)

    def fill(pts: np.ndarray, value: int) -> None:
        # pixel (i, j) covers [j, j+1) x [i, i+1); cv2 samples sub-pixel centres at integers
        fixed = np.round(((pts - [x0, y0]) * _SS - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [fixed], value, lineType=cv2.LINE_8, shift=4)

    fill(outer, 16)
    for hole in obj.holes:
        fill(obj.center + obj.scale_px * _rot(hole, obj.angle), 0)
    # area resampling of {0, 16} over 4x4 blocks = covered sub-pixel count, exact in uint8
    count = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return int(x0), int(y0), count.astype(np.float32) / _SS**2


def _clip(x0: int, y0: int, m: np.ndarray, h: int, w: int) -> tuple[int, int, np.ndarray]:
    """Crop an array placed at (x0, y0) to the frame ``h x w``; returns the in-frame part."""
    ix0, iy0 = min(max(x0, 0), w), min(max(y0, 0), h)
    ix1, iy1 = max(min(x0 + m.shape[1], w), ix0), max(min(y0 + m.shape[0], h), iy0)
    return ix0, iy0, m[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]


def _new_object(cfg: SceneConfig, rng: np.random.Generator, bg_mean: np.ndarray) -> _Object:
    label = int(rng.integers(len(cfg.classes)))
    poly, holes = _shape_polygons(cfg.classes[label], rng)
    angle = float(rng.uniform(0, 2 * np.pi))
    extent = np.ptp(_rot(poly, angle), axis=0).max()
    size = float(rng.uniform(cfg.scale[0], cfg.scale[1]))
    for _ in range(10):  # a colour that stands out from the background
        hsv = (rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
        c1 = np.array(colorsys.hsv_to_rgb(*hsv), np.float32) * 255
        if np.linalg.norm(c1 - bg_mean) > 80:
            break
    hsv2 = (
        (hsv[0] + rng.uniform(-0.15, 0.15)) % 1.0,
        hsv[1] * rng.uniform(0.4, 1.0),
        hsv[2] * rng.uniform(0.45, 0.8),
    )
    c2 = np.array(colorsys.hsv_to_rgb(*hsv2), np.float32) * 255
    return _Object(
        label=label,
        poly=poly,
        holes=holes,
        scale_px=size / extent,
        angle=angle,
        center=np.zeros(2),
        colors=np.stack([c1, c2]),
        texture=str(rng.choice(list(cfg.textures))),
        tex_params=rng.uniform(0, 1, 8),
    )


def _texture(obj: _Object, x0: int, y0: int, h: int, w: int) -> np.ndarray:
    """Colours (h, w, 3) float32 of the object over the pixels [y0, y0+h) x [x0, x0+w)."""
    ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32) + 0.5
    d = np.stack([xs - obj.center[0], ys - obj.center[1]], axis=-1)
    uv = _rot(d.reshape(-1, 2), -obj.angle).reshape(h, w, 2) / obj.scale_px  # unit coords
    u, v = uv[..., 0], uv[..., 1]
    p = obj.tex_params
    if obj.texture == "gradient":
        t = (u * math.cos(6 * p[0]) + v * math.sin(6 * p[0]) + 1) / 2
    elif obj.texture == "stripes":
        t = (np.sin((u + p[1] * v) * (6 + 10 * p[2])) > 0).astype(np.float32)
    elif obj.texture == "checker":
        f = 4 + 5 * p[2]
        t = ((np.sin(u * f) * np.sin(v * f)) > 0).astype(np.float32)
    elif obj.texture == "noise":
        t = (
            sum(np.sin(u * (3 + 6 * p[i]) + v * (3 + 6 * p[i + 1]) + 7 * p[i + 2]) for i in (0, 3))
            / 4
            + 0.5
        )
    else:  # solid, lit from the top-left
        t = np.clip((u + v) * 0.2 + 0.3, 0, 1)
    t = np.clip(t, 0, 1)[..., None]
    return obj.colors[0] * (1 - t) + obj.colors[1] * t


# -- backgrounds ---------------------------------------------------------------------------
def _background(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """A textured background (H, W, 3) float32 of muted colours."""
    h, w = cfg.height, cfg.width
    hue = rng.uniform()
    cols = [
        np.array(
            colorsys.hsv_to_rgb(
                (hue + rng.uniform(-0.1, 0.1)) % 1, rng.uniform(0, 0.35), rng.uniform(0.25, 0.9)
            )
        )
        * 255
        for _ in range(2)
    ]
    c1, c2 = (np.asarray(c, np.float32) for c in cols)
    kind = str(rng.choice(list(cfg.backgrounds)))
    if kind == "noise":
        t = np.zeros((h, w), np.float32)
        for cells, weight in ((4, 0.6), (16, 0.3), (48, 0.1)):
            small = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
            t += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind in ("gradient", "stripes"):
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, np.pi)
        proj = xs * math.cos(a) + ys * math.sin(a)
        if kind == "gradient":
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        else:
            t = 0.5 + 0.5 * np.sin(proj * 2 * np.pi / rng.uniform(6, 40))
            c2 = c1 + (c2 - c1) * 0.5  # keep stripes low-contrast
    else:
        t = np.zeros((h, w), np.float32)
    t = np.clip(t, 0, 1)[..., None]
    return (c1 * (1 - t) + c2 * t).astype(np.float32)


# -- composition ---------------------------------------------------------------------------
def _compose(
    objs: list[_Object],
    background: np.ndarray,
    cfg: SceneConfig,
    rng: np.random.Generator,
    tracks: bool = False,
) -> Scene:
    """Paint ``objs`` in list order (later on top) and derive the visible-part ground truth."""
    h, w = background.shape[:2]
    image = background.copy()
    owner = np.full((h, w), -1, np.int32)
    in_frame = np.zeros(len(objs))
    full = np.zeros(len(objs))
    for i, obj in enumerate(objs):
        x0, y0, cover = _rasterize(obj)
        full[i] = np.count_nonzero(cover >= 0.5)
        ix0, iy0, alpha = _clip(x0, y0, cover, h, w)
        crop = alpha >= 0.5
        in_frame[i] = crop.sum()
        if in_frame[i] == 0:
            continue
        iy1, ix1 = iy0 + crop.shape[0], ix0 + crop.shape[1]
        owner[iy0:iy1, ix0:ix1][crop] = i
        tex = _texture(obj, ix0, iy0, iy1 - iy0, ix1 - ix0)
        region = image[iy0:iy1, ix0:ix1]
        region += (tex - region) * alpha[..., None]  # anti-aliased edges
    visible = np.bincount(owner[owner >= 0], minlength=len(objs)).astype(np.float64)
    keep = (visible >= cfg.min_visible_area) & (
        visible >= cfg.min_visible_fraction * np.maximum(in_frame, 1)
    )
    idx = np.flatnonzero(keep)
    if cfg.noise_std > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * cfg.noise_std
    image_u8 = np.clip(np.round(image), 0, 255).astype(np.uint8)
    masks = owner[None] == idx[:, None, None]
    inst = Instances.from_masks(
        masks,
        labels=[objs[i].label for i in idx],
        track_ids=[objs[i].track_id for i in idx] if tracks else None,
    )
    occl = 1 - visible[idx] / np.maximum(in_frame[idx], 1)
    trunc = 1 - in_frame[idx] / np.maximum(full[idx], 1)
    return Scene(image_u8, inst, occl.astype(np.float32), trunc.astype(np.float32))


def _place(cfg: SceneConfig, rng: np.random.Generator, bg_mean: np.ndarray) -> list[_Object]:
    """Place objects one by one (each on top), rejecting spots that hide too much of another."""
    h, w = cfg.height, cfg.width
    owner = np.full((h, w), -1, np.int32)
    objs: list[_Object] = []
    area: list[float] = []
    visible: list[float] = []
    n = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    for _ in range(n):
        obj = _new_object(cfg, rng, bg_mean)
        half = np.ptp(obj.scale_px * _rot(obj.poly, obj.angle), axis=0) / 2
        for _ in range(cfg.max_tries):
            if objs and rng.random() < cfg.overlap:  # against an existing object
                other = objs[int(rng.integers(len(objs)))]
                r = (
                    half.max() + np.ptp(other.scale_px * other.poly, axis=0).max() / 2
                ) * rng.uniform(0.3, 0.8)
                a = rng.uniform(0, 2 * np.pi)
                c = other.center + r * np.array([math.cos(a), math.sin(a)])
            else:
                c = rng.uniform(0, 1, 2) * np.array([w, h])
            lo, hi = half + 0.5, np.array([w, h]) - half - 0.5
            obj.center = np.where(lo < hi, np.clip(c, lo, hi), np.array([w, h]) / 2)
            x0, y0, cover = _clip(*_rasterize(obj), h, w)
            m = cover >= 0.5
            region = owner[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
            under = region[m]
            hidden = np.bincount(under[under >= 0], minlength=len(objs))
            ok = all(
                (area[j] - visible[j] + hidden[j]) <= cfg.max_occlusion * area[j]
                for j in range(len(objs))
            )
            if ok:
                region[m] = len(objs)
                for j in range(len(objs)):
                    visible[j] -= hidden[j]
                objs.append(obj)
                area.append(float(m.sum()))
                visible.append(float(m.sum()))
                break
    return objs


# -- public API ----------------------------------------------------------------------------
def generate_scene(config: SceneConfig, seed: Seed = 0) -> Scene:
    """Render one scene with its ground truth and occlusion/truncation metadata."""
    rng = np.random.default_rng(seed)
    background = _background(config, rng)
    objs = _place(config, rng, background.reshape(-1, 3).mean(axis=0))
    return _compose(objs, background, config, rng)


def render_scene(config: SceneConfig, seed: Seed = 0) -> tuple[np.ndarray, Instances]:
    """``(image uint8 (H, W, 3), Instances)`` of one scene (masks = visible parts, disjoint)."""
    scene = generate_scene(config, seed)
    return scene.image, scene.instances


# -- datasets on disk ------------------------------------------------------------------------
def _categories(cfg: SceneConfig) -> list[Category]:
    return [
        Category(id=i + 1, name=name, supercategory="shape") for i, name in enumerate(cfg.classes)
    ]


def _record(
    image_id: int, path: Path, image: np.ndarray, inst: Instances, first_ann_id: int
) -> ImageRecord:
    """Write ``image`` as PNG and return its record with RLE annotations (category id = label + 1)."""
    Image.fromarray(image).save(path, compress_level=1)
    h, w = image.shape[:2]
    assert inst.masks is not None
    rles = mask_codec.encode(inst.masks.numpy())
    tracks = inst.track_ids.tolist() if inst.track_ids is not None else [None] * len(inst)
    anns = [
        make_annotation(first_ann_id + k, image_id, int(lab) + 1, rle, h, w, track_id=tid)
        for k, (rle, lab, tid) in enumerate(zip(rles, inst.labels.tolist(), tracks))
    ]
    return ImageRecord(image_id, path.name, path, h, w, anns)


def make_dataset(
    n_images: int,
    config: SceneConfig | None = None,
    seed: int = 0,
    out_dir: str | Path = "synthetic",
    annotations: str | None = "annotations.json",
) -> InstanceDataset:
    """Render ``n_images`` scenes to ``out_dir/images/NNNNNN.png`` and return the dataset.

    Its COCO JSON (RLE masks) is written to ``out_dir/annotations`` unless that is None.
    """
    cfg = config or SceneConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records: list[ImageRecord] = []
    ann_id = 1
    for i, ss in enumerate(np.random.SeedSequence(seed).spawn(n_images)):
        image, inst = render_scene(cfg, ss)
        rec = _record(i + 1, out / "images" / f"{i:06d}.png", image, inst, ann_id)
        ann_id += len(rec.annotations)
        records.append(rec)
    ds = InstanceDataset(records, _categories(cfg), source=f"synthetic scenes (seed {seed})")
    if annotations is not None:
        ds.save_coco(out / annotations)
    return ds


# Clips (ClipConfig, render_clip, make_clip_dataset) live in instseg.data.synthetic_clips.
