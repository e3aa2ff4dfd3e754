"""Drawing: instance overlays (filled masks, outlines, boxes, class/score/track text).

Images are RGB uint8 ``(H, W, 3)``; boxes xyxy in absolute pixels; masks bool ``(N, H, W)``.
Colours come from a fixed palette indexed by track id when present (so a tracked object
keeps its colour across frames), otherwise by instance index.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from instseg.masks import masks_to_boxes

if TYPE_CHECKING:
    from instseg.structures import Instances


def colors_for(keys: np.ndarray | Sequence[int]) -> np.ndarray:
    """A distinct, saturated colour uint8 ``(N, 3)`` per integer key (golden-ratio hue steps).

    The same key always gives the same colour, so a track keeps its colour across frames.
    """
    k = np.abs(np.asarray(keys, dtype=np.int64)).reshape(-1)
    hue = (0.08 + k * 0.618034) % 1.0
    sat = 0.85 - 0.25 * ((k // 3) % 2)
    val = 1.0 - 0.2 * ((k // 2) % 2)
    cols = [colorsys.hsv_to_rgb(*hsv) for hsv in zip(hue.tolist(), sat.tolist(), val.tolist())]
    return (np.asarray(cols, dtype=np.float64).reshape(-1, 3) * 255).round().astype(np.uint8)


def palette(n: int) -> np.ndarray:
    """The first ``n`` colours uint8 ``(n, 3)`` of :func:`colors_for`."""
    return colors_for(np.arange(n))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or built without FreeType
        return ImageFont.load_default()


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Inner boundary ``(H, W)`` bool of a bool mask ``(H, W)``; image-border pixels count."""
    import cv2

    out = np.zeros_like(mask)
    x0, y0, x1, y1 = (int(v) for v in masks_to_boxes(mask[None])[0])
    if x1 == 0:  # empty mask
        return out
    crop = np.pad(mask[y0:y1, x0:x1].astype(np.uint8), thickness)  # pad 0: borders are edges
    kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
    inner = cv2.erode(crop, kernel)[thickness:-thickness, thickness:-thickness].astype(bool)
    out[y0:y1, x0:x1] = mask[y0:y1, x0:x1] & ~inner
    return out


def overlay(
    image: np.ndarray,
    instances: Instances,
    class_names: Sequence[str] | None = None,
    show_boxes: bool = True,
    show_scores: bool = True,
    show_labels: bool = True,
    alpha: float = 0.5,
) -> np.ndarray:
    """Draw ``instances`` over ``image`` (RGB uint8 ``(H, W, 3)``); returns a new uint8 array.

    Masks are filled with ``alpha`` blending and outlined; boxes are drawn when
    ``show_boxes``; each instance is labelled ``"name score #track"`` (parts as enabled).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"overlay expects an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}"
        )
    h, w = img.shape[:2]
    n = len(instances)
    keys = instances.track_ids.cpu().numpy() if instances.track_ids is not None else np.arange(n)
    colors = colors_for(keys)
    thickness = max(1, round(min(h, w) / 400))
    out = img.astype(np.float32)
    if instances.masks is not None and n:
        masks = instances.masks.cpu().numpy()
        if masks.shape[1:] != (h, w):
            raise ValueError(f"masks are {masks.shape[1:]}, image is {(h, w)}")
        for m, c in zip(masks, colors):
            out[m] = out[m] * (1 - alpha) + c.astype(np.float32) * alpha
        for m, c in zip(masks, colors):
            out[_outline(m, thickness)] = c
    pil = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = _font(max(9, round(min(h, w) / 40)))
    boxes = instances.boxes.cpu().numpy()
    labels = instances.labels.cpu().numpy()
    scores = instances.scores.cpu().numpy() if instances.scores is not None else np.ones(n)
    for i in range(n):
        c = tuple(int(v) for v in colors[i])
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if show_boxes:
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=c, width=thickness)
        parts = []
        if show_labels:
            k = int(labels[i])
            parts.append(
                class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)
            )
        if show_scores:
            parts.append(f"{float(scores[i]):.2f}")
        if instances.track_ids is not None:
            parts.append(f"#{int(keys[i])}")
        if parts:
            _label(draw, " ".join(parts), (x1, y1), c, font, (w, h))
    return np.asarray(pil)


def _label(
    draw: ImageDraw.ImageDraw,
    text: str,
    xy: tuple[float, float],
    color: tuple[int, ...],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
) -> None:
    """Text on a filled tag above the box corner (inside the box when at the top edge)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 2
    x = min(max(xy[0], 0), max(size[0] - tw, 0))
    y = xy[1] - th if xy[1] - th >= 0 else xy[1]
    draw.rectangle([x, y, x + tw, y + th], fill=color)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.text(
        (x + 2 - left, y + 1 - top),
        text,
        fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
        font=font,
    )


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    instances: Instances,
    class_names: Sequence[str] | None = None,
    **kwargs: object,
) -> Path:
    """Write :func:`overlay` of ``image`` and ``instances`` to ``path`` (format from suffix)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, instances, class_names, **kwargs)).save(out)  # type: ignore[arg-type]
    return out
