"""``--object-size auto``: the size of the objects in an image, from the model's own detections.

A first pass at the wrong scale is biased: objects several times larger than the learnt size
come out in pieces (or the model finds specks of texture), much smaller ones are missed or
merged. Near the right scale the model is most confident, and the median size of its
confident detections hardly moves with the scale. So:

1. *Ladder*: the model runs at each factor of :data:`LADDER` (of its own input scale, coarse
   passes are cheap); the pass whose confident detections (at least :data:`MIN_COUNT` of
   them) score highest on average is the start.
2. *Fixed point*: from there, measure the median equivalent diameter ``d`` (image pixels) of
   the confident detections at factor ``f`` and move to the factor they ask for,
   ``f = learnt / d``, until ``f`` already was within :data:`TOLERANCE` of it.
3. *Check*: pieces of large objects can be self-consistent too, so a self-consistent pass is
   checked by one at half its factor. Whole objects keep their size (within
   :data:`FRAGMENTS` x) and their number per image area (at least :data:`SPARSER` x);
   pieces merge into fewer, larger objects, and then the factor keeps halving until two
   successive passes agree. Of the agreeing pair the more self-consistent pass (its factor
   nearest the one its detections ask for) gives the size.

When the check finds nothing (the objects vanish at half the factor) or after
:data:`MAX_PASSES` passes without an agreeing pair, the most self-consistent pass of all gives
the size; without any confident detection the images are not rescaled. Each pass looks at a
centred window of each image whose side is at most :data:`WINDOW` model-input pixels, which
bounds the cost; detections touching the window's (or image's) border are not measured unless
nothing else is left. These settings were chosen on the held-out images of the shipped
model's DSB split rescaled by known factors (``bench/object_size.py``, validation section).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from instseg.inference.object_size import fixed_input_scale, rescale

__all__ = [
    "FRAGMENTS",
    "LADDER",
    "MAX_PASSES",
    "MIN_COUNT",
    "SPARSER",
    "TOLERANCE",
    "WINDOW",
    "Pass",
    "SizeEstimate",
    "estimate_object_size",
]

#: factors (of the model's input scale) of the first passes, coarse to fine
LADDER = (0.125, 0.25, 0.5, 1.0, 2.0)
#: a ladder pass needs this many confident detections to be the start (when some pass has)
MIN_COUNT = 3
#: a pass whose factor is within this ratio of the one its detections ask for is consistent
TOLERANCE = 2.0**0.25
#: the check at half the factor measuring more than this x the size: the size was of pieces
FRAGMENTS = 1.4
#: ... or fewer than this x as many detections per image pixel: pieces too (the small
#: objects that vanish at half the factor thin out whole objects less: 0.3-0.7)
SPARSER = 0.2
#: passes at most, the ladder's included (one network run each, on every image given)
MAX_PASSES = 11
#: side (model-input pixels) of the centred window of each image that a pass looks at
WINDOW = 1024
#: detections scoring below this are not measured when the model stores no score cut-off
MIN_SCORE = 0.5


@dataclass(frozen=True)
class Pass:
    """One run of the model: its ``factor``; the median equivalent diameter (image pixels,
    ``nan`` without any), ``count`` and mean ``score`` of its confident detections; the image
    ``area`` it saw (pixels, every image's window)."""

    factor: float
    size: float
    count: int
    score: float
    area: float

    def inconsistency(self, learnt: float) -> float:
        """How far the factor is from the one the detections ask for (``|log|`` of the ratio)."""
        return abs(math.log(learnt / (self.size * self.factor)))

    def agrees_with_half(self, coarse: Pass) -> bool:
        """``coarse``, the pass at half the factor, finds the same objects (module doc)."""
        same_size = coarse.size <= FRAGMENTS * self.size
        return same_size and coarse.count / coarse.area >= SPARSER * self.count / self.area


@dataclass
class SizeEstimate:
    """``object_size`` (pixels of the images), whether confident detections were found at
    all (else ``object_size`` is the learnt size: images are not rescaled), and the passes
    made."""

    object_size: float
    found: bool
    passes: list[Pass] = field(default_factory=list)

    def summary(self, learnt: float) -> str:
        """One line for the user."""
        if not self.found:
            return (f"object size auto: no confident detection at any scale tried; images are "
                    f"not rescaled (the model learnt {learnt:.1f} px)")  # fmt: skip
        return (f"object size auto: {self.object_size:.1f} px (the model learnt {learnt:.1f} "
                f"px; {len(self.passes)} passes): images scaled "
                f"x{learnt / self.object_size:.3g}")  # fmt: skip


def _window(image: Tensor, side: float) -> Tensor:
    """The centred crop of ``image`` ``(3, H, W)`` at most ``side`` pixels each way."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    ch, cw = min(h, max(16, int(side))), min(w, max(16, int(side)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return image[:, y0 : y0 + ch, x0 : x0 + cw]


def _confident(pred: Any, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """``(equivalent diameters, scores)`` of the detections scoring >= ``min_score``, those
    touching the border left out (all of them when only those are left)."""
    if pred.masks is None or pred.scores is None or len(pred) == 0:
        return np.zeros(0), np.zeros(0)
    scores = pred.scores.numpy()
    keep = scores >= min_score
    h, w = pred.image_size
    b = pred.boxes.numpy()
    inside = (b[:, 0] > 1) & (b[:, 1] > 1) & (b[:, 2] < w - 1) & (b[:, 3] < h - 1)
    chosen = keep & inside if (keep & inside).any() else keep
    areas = pred.masks.flatten(1).sum(1).numpy()[chosen].astype(np.float64)
    return np.sqrt(4.0 * areas / math.pi), scores[chosen]


def _measure(
    model: Any, images: Sequence[Tensor], factor: float, scale: float, min_score: float
) -> Pass:
    """``model`` at ``factor`` on the windows of ``images`` (:class:`Pass`)."""
    side = WINDOW / (scale * factor)
    runner = rescale(model, factor)
    windows = [_window(im, side) for im in images]
    found = [_confident(runner.predict([w])[0], min_score) for w in windows]
    d = np.concatenate([f[0] for f in found])
    s = np.concatenate([f[1] for f in found])
    area = float(sum(w.shape[-1] * w.shape[-2] for w in windows))
    if not d.size:
        return Pass(factor, math.nan, 0, 0.0, area)
    return Pass(factor, float(np.median(d)), int(d.size), float(s.mean()), area)


def estimate_object_size(
    model: Any, images: Sequence[Tensor], learnt: float, min_score: float = MIN_SCORE
) -> SizeEstimate:
    """The object size (pixels) of ``images`` (float ``(3, H, W)`` in [0, 1], pooled) for
    ``model`` (a fixed-scale model, wrapper or exported file) that learnt objects of
    ``learnt`` pixels; ``min_score``: the detections measured (the model's score cut-off)."""
    scale = fixed_input_scale(model)
    if scale is None:
        raise ValueError("the object size estimate needs a fixed-scale model (input_scale)")
    seen: dict[float, Pass] = {}

    def run(factor: float) -> Pass:  # a factor already run is not run again
        key = round(factor, 6)
        if key not in seen:
            seen[key] = _measure(model, images, factor, scale, min_score)
        return seen[key]

    ladder = [run(f) for f in LADDER]
    usable = [p for p in ladder if p.count >= MIN_COUNT] or [p for p in ladder if p.count]
    if not usable:
        return SizeEstimate(float(learnt), False, list(seen.values()))
    p = max(usable, key=lambda q: q.score)
    checked: Pass | None = None  # the pass whose check at half its factor is ``p``
    for _ in range(2 * MAX_PASSES):  # factors already run cost nothing: bound the steps too
        if p.count == 0:
            break  # nothing at the factor asked for, or the objects vanished at half of it
        if checked is not None and checked.agrees_with_half(p):
            best = min(checked, p, key=lambda q: q.inconsistency(learnt))
            return SizeEstimate(best.size, True, list(seen.values()))
        if checked is not None or p.inconsistency(learnt) <= math.log(TOLERANCE):
            checked, factor = p, p.factor / 2  # check at half the factor (pieces: keep halving)
        else:
            factor = learnt / p.size
        if len(seen) >= MAX_PASSES and round(factor, 6) not in seen:
            break
        p = run(factor)
    measured = [q for q in seen.values() if q.count]
    best = min(measured, key=lambda q: q.inconsistency(learnt))
    return SizeEstimate(best.size, True, list(seen.values()))
