"""Tracking: :class:`Tracker` gives the instances of consecutive frames track ids (mask IoU,
two-stage association, motion prior, lost-track buffer, divisions); :func:`track` runs a
predictor over a sequence of frames and tracks its output; :func:`track_sequence` writes a
tracked sequence as a Cell Tracking Challenge result folder, MOTS text, COCO results with
``track_id``, ``tracks.csv`` and an overlay animation (:mod:`.writers`)."""

from instseg.tracking.run import track
from instseg.tracking.sequence import TrackReport, label_frames, predicted_frames, track_sequence
from instseg.tracking.tracker import Tracker, TrackerConfig

__all__ = [
    "TrackReport", "Tracker", "TrackerConfig", "label_frames", "predicted_frames", "track",
    "track_sequence",
]  # fmt: skip
