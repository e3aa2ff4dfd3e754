"""Evaluation: COCO AP / AR identical to pycocotools (numpy + pycocotools.mask only)."""

from instseg.evaluation.coco_eval import COCOResult, evaluate

__all__ = ["COCOResult", "evaluate"]
