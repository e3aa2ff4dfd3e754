"""``track``: a predictor over a sequence of frames, its instances tracked."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from instseg.structures import Instances
from instseg.tracking.tracker import Tracker

__all__ = ["track"]


def track(frames: Iterable[Any], predictor: Any, tracker: Tracker | None = None) -> Iterator[Instances]:
    """For each frame (anything ``predictor`` takes: an RGB array, a path, ...), its tracked
    instances (``track_ids`` set), in order. ``tracker`` defaults to a new :class:`Tracker`;
    pass one to read its :meth:`~Tracker.tracks` table afterwards."""
    tracker = tracker if tracker is not None else Tracker()
    for frame in frames:
        yield tracker.update(predictor(frame))
