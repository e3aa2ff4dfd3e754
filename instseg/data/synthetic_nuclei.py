"""A generated fluorescence-microscopy nuclei image with exact ground truth.

Looks like the fluorescence images of the Data Science Bowl 2018 (a dark, slightly noisy
background with bright, smoothly shaded, lightly textured nuclei of varying brightness, some
touching, and a few small bright specks of debris that are not nuclei) but every pixel is rendered from a seed, so the project can ship and test
it freely. Nuclei are blobby ellipses of 10-30 px diameter; their masks are the painted sets
before the optical blur and the sensor noise (which never change the masks). Where two nuclei
touch, the one placed first keeps the shared pixels, so masks are disjoint.

All randomness comes from one ``numpy.random.Generator``: the same seed gives the same image,
label image and instances on every platform numpy supports.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from instseg.structures import Instances

__all__ = ["NucleiSample", "make_nuclei_sample"]


@dataclass
class NucleiSample:
    """``image`` RGB uint8 ``(H, W, 3)`` (gray repeated); ``labels`` int32 ``(H, W)``, 0 =
    background, ``i + 1`` = nucleus ``i``; ``instances`` the same nuclei as bool masks
    ``(N, H, W)``, boxes xyxy in absolute pixels, label 0 (class ``"nucleus"``)."""

    image: np.ndarray
    labels: np.ndarray
    instances: Instances
    class_names: tuple[str, ...] = ("nucleus",)


def _shape(rng: np.random.Generator, radius: float) -> tuple[np.ndarray, float]:
    """A blobby ellipse as a polar radius function sampled at 360 angles -> ``(r, max r)``."""
    theta = np.linspace(0.0, 2 * np.pi, 360, endpoint=False)
    aspect = rng.uniform(0.65, 1.0)
    angle = rng.uniform(0, np.pi)
    a, b = radius / np.sqrt(aspect), radius * np.sqrt(aspect)  # same area as the circle
    t = theta - angle
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    for k in (2, 3, 4, 5):  # low-frequency wobble: kidney / egg / lumpy outlines
        r *= 1.0 + rng.normal(0, 0.045 / (k - 1) ** 0.5) * np.cos(k * theta + rng.uniform(0, 6.3))
    return r, float(r.max())


def _paint(
    rng: np.random.Generator, center: tuple[float, float], radius: float, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """Rasterize one nucleus -> ``(mask (h, w) bool, rho (h, w) float, window)``: ``rho`` is
    the normalized distance to the centre (0 centre, 1 outline) inside the window."""
    r, rmax = _shape(rng, radius)
    cy, cx = center
    y0, x0 = min(hw[0], max(0, int(cy - rmax - 2))), min(hw[1], max(0, int(cx - rmax - 2)))
    y1, x1 = max(y0, min(hw[0], int(cy + rmax + 3))), max(x0, min(hw[1], int(cx + rmax + 3)))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = yy + 0.5 - cy, xx + 0.5 - cx
    idx = (np.round(np.degrees(np.arctan2(dy, dx))).astype(int)) % 360
    rho = np.hypot(dy, dx) / r[idx]
    return rho <= 1.0, rho, (slice(y0, y1), slice(x0, x1))


def make_nuclei_sample(
    seed: int = 0,
    size: tuple[int, int] = (320, 320),
    n_nuclei: int | None = None,
    touching_fraction: float = 0.2,
) -> NucleiSample:
    """Render one image of ``n_nuclei`` nuclei (default: 40-70, drawn from ``seed``).

    ``size`` is ``(H, W)``; a fraction ``touching_fraction`` of the nuclei is placed against
    an earlier one (touching pairs); the others keep at least 2 px from every nucleus. Nuclei
    cut by the border are kept when at least 60% of them (and 30 px) is visible.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    target = int(rng.integers(40, 71)) if n_nuclei is None else int(n_nuclei)
    # smooth per-image texture field, multiplied into every nucleus (chromatin-like mottling)
    tex: np.ndarray = cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 1.3)
    tex = tex / (tex.std() + 1e-9)
    labels, signal, n = _place_nuclei(rng, size, target, touching_fraction, tex)
    gray = _render(rng, signal, labels)
    ids = np.arange(1, n + 1)
    keep = [i for i in ids if (labels == i).any()]
    masks = np.stack([labels == i for i in keep]) if keep else np.zeros((0, h, w), bool)
    relabel = np.zeros(n + 1, np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1)
    return NucleiSample(
        image=np.repeat(gray[:, :, None], 3, axis=2),
        labels=relabel[labels],
        instances=Instances.from_masks(masks, labels=np.zeros(len(keep), np.int64)),
    )


def _place_nuclei(
    rng: np.random.Generator,
    size: tuple[int, int],
    target: int,
    touching_fraction: float,
    tex: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Place up to ``target`` nuclei -> ``(labels int32 (H, W), signal float64 (H, W), n)``:
    ``labels`` holds ``k`` for the k-th placed nucleus (some may later be fully covered)."""
    h, w = size
    labels = np.zeros((h, w), np.int32)
    signal = np.zeros((h, w), np.float64)
    centers: list[tuple[float, float, float]] = []
    tries = 0
    while len(centers) < target and tries < target * 60:
        tries += 1
        radius = rng.uniform(5.0, 14.0) if rng.random() < 0.85 else rng.uniform(4.0, 15.0)
        touch = bool(centers) and rng.random() < touching_fraction
        if touch:
            py, px, pr = centers[int(rng.integers(len(centers)))]
            phi = rng.uniform(0, 2 * np.pi)
            d = (pr + radius) * rng.uniform(0.85, 0.95)
            cy, cx = py + d * np.sin(phi), px + d * np.cos(phi)
        else:
            cy, cx = rng.uniform(-3, h + 3), rng.uniform(-3, w + 3)
        painted, rho, win = _paint(rng, (cy, cx), radius, (h, w))
        mask = _fit(painted, labels[win] > 0, touch, radius)
        if mask is None:
            continue
        labels[win][mask] = len(centers) + 1
        bright = rng.uniform(0.2, 1.0) ** 0.8
        dome = 0.7 + 0.3 * np.clip(1.0 - rho**2, 0, 1) ** 0.5
        mottling = 1.0 + rng.uniform(0.06, 0.2) * tex[win]
        signal[win][mask] = (bright * dome * mottling)[mask]
        centers.append((cy, cx, radius))
    return labels, signal, len(centers)


def _fit(mask: np.ndarray, taken: np.ndarray, touch: bool, radius: float) -> np.ndarray | None:
    """A new nucleus' mask where it may go, or None: big enough when visible; a touching one
    overlaps little and gives up the shared pixels (keeping its largest piece); any other
    keeps 2 px from every nucleus."""
    full = np.pi * radius**2
    if mask.sum() < max(30, 0.6 * full):
        return None
    if not touch:
        near = cv2.dilate(taken.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        return None if (mask & near).any() else mask
    if (mask & taken).sum() > 0.2 * mask.sum():
        return None
    mask &= ~taken
    pieces, n = ndimage.label(mask)
    if n > 1:  # trimming split it: keep the largest piece
        mask = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    return mask


def _render(rng: np.random.Generator, signal: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Debris specks, optical blur, haze and sensor noise over ``signal`` -> gray uint8."""
    h, w = signal.shape
    # debris: small bright specks (not nuclei, not in the ground truth), as in real images
    for _ in range(int(rng.integers(4, 13))):
        y, x, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.8, 2.2)
        yy, xx = np.ogrid[:h, :w]
        speck = np.exp(-((yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2) / (2 * r * r))
        signal += rng.uniform(0.3, 0.9) * speck * (labels == 0)
    peak = rng.uniform(150, 235)
    background = rng.uniform(4, 14)
    img = background + peak * cv2.GaussianBlur(signal, (0, 0), rng.uniform(0.7, 1.1))
    # faint out-of-focus haze plus sensor noise (shot-like: grows with brightness)
    haze = cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 25)
    img += 3.0 * haze / (haze.std() + 1e-9)
    img += rng.normal(0, 1, (h, w)) * (1.5 + 0.04 * img)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
