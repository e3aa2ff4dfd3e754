"""Tracking: :class:`Tracker` gives the instances of consecutive frames track ids (mask IoU,
two-stage association, motion prior, lost-track buffer, divisions); :func:`track` runs a
predictor over a sequence of frames and tracks its output."""

from instseg.tracking.run import track
from instseg.tracking.tracker import Tracker, TrackerConfig

__all__ = ["Tracker", "TrackerConfig", "track"]
