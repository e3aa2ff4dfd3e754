"""Datasets: COCO JSON as the on-disk truth, readers for other formats, synthetic scenes."""

from instseg.data.coco import load_coco
from instseg.data.dataset import Annotation, Category, ImageRecord, InstanceDataset
from instseg.data.formats import FORMATS, detect_format, load_dataset

__all__ = [
    "FORMATS",
    "Annotation",
    "Category",
    "ImageRecord",
    "InstanceDataset",
    "detect_format",
    "load_coco",
    "load_dataset",
]
