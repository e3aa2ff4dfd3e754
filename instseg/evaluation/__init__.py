"""Evaluation: COCO AP / AR identical to pycocotools (numpy + pycocotools.mask only); tracking
measures (CTC DET / SEG / TRA, HOTA, CLEAR MOT, IDF1), imported when first used so that
``import instseg.evaluation`` stays light (no torch, no scipy)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from instseg.evaluation.coco_eval import COCOResult, evaluate

if TYPE_CHECKING:
    from instseg.evaluation.ctc import seg_measure
    from instseg.evaluation.ctc_folders import ctc_measures
    from instseg.evaluation.ctc_mot import ctc_tracking_metrics
    from instseg.evaluation.ctc_tracking import det_measure, tra_measure
    from instseg.evaluation.tracking import tracking_data, tracking_metrics
    from instseg.evaluation.tracking_eval import evaluate_tracking

#: public tracking functions -> their module
_TRACKING = {
    "ctc_measures": "ctc_folders",
    "ctc_tracking_metrics": "ctc_mot",
    "det_measure": "ctc_tracking",
    "evaluate_tracking": "tracking_eval",
    "seg_measure": "ctc",
    "tra_measure": "ctc_tracking",
    "tracking_data": "tracking",
    "tracking_metrics": "tracking",
}

__all__ = [
    "COCOResult",
    "ctc_measures",
    "ctc_tracking_metrics",
    "det_measure",
    "evaluate",
    "evaluate_tracking",
    "seg_measure",
    "tra_measure",
    "tracking_data",
    "tracking_metrics",
]


def __getattr__(name: str) -> Any:
    if name in _TRACKING:
        return getattr(importlib.import_module(f"instseg.evaluation.{_TRACKING[name]}"), name)
    raise AttributeError(f"module 'instseg.evaluation' has no attribute {name!r}")
