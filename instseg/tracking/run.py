"""``track``: a predictor over a sequence of frames, its instances tracked; ``detector``: what
a :class:`~instseg.inference.Predictor` gives a tracker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from instseg.inference import Predictor
from instseg.structures import Instances
from instseg.tracking.tracker import Tracker, TrackerConfig

__all__ = ["detector", "track", "tracker_for"]


def detector(predictor: Predictor, floor: float) -> Callable[[np.ndarray], Instances]:
    """``predictor``'s detections of an RGB ``(H, W, 3)`` frame down to ``floor``, below the
    model's stored score cut-off too: the tracker's second stage continues tracks with them
    (an explicit ``score_threshold`` still drops what is under it)."""

    def run(image: np.ndarray) -> Instances:
        inst = predictor.predict_arrays([image], apply_cutoff=False)[0]
        return inst if inst.scores is None else inst[inst.scores >= floor]

    return run


def tracker_for(predictor: Predictor, **config: Any) -> Tracker:
    """A :class:`Tracker` whose first stage starts at ``predictor``'s score cut-off (the
    model's calibrated one, or ``score_threshold``; 0.5 when neither exists) and whose second
    stage reaches down to 0.1 below it, at most."""
    high = predictor.score_cutoff if predictor.score_cutoff is not None else TrackerConfig.high_score
    low = min(TrackerConfig.low_score, high)
    return Tracker(TrackerConfig(high_score=high, low_score=low, **config))


def track(frames: Iterable[Any], predictor: Any, tracker: Tracker | None = None) -> Iterator[Instances]:
    """For each frame (anything ``predictor`` takes: an RGB array, a path, ...), its tracked
    instances (``track_ids`` set), in order. With a :class:`Predictor` the tracker defaults to
    :func:`tracker_for` it and sees its low-score detections too (:func:`detector`); any other
    callable's output is tracked as it is. Pass ``tracker`` to read its
    :meth:`~Tracker.tracks` table afterwards."""
    if isinstance(predictor, Predictor):
        tracker = tracker if tracker is not None else tracker_for(predictor)
        find = detector(predictor, tracker.config.low_score)
        for frame in frames:
            yield tracker.update(find(np.asarray(_image(frame))))
        return
    tracker = tracker if tracker is not None else Tracker()
    for frame in frames:
        yield tracker.update(predictor(frame))


def _image(frame: Any) -> np.ndarray:
    from instseg.inference.predictor import load_input

    return load_input(frame)
