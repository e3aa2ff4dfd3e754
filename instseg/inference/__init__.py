"""Inference: :class:`Predictor` (any image in, ``Instances`` out), test-time augmentation
wrappers (:mod:`.tta`), threshold calibration (:mod:`.calibrate`), tiled inference for large
images, input sources (files, folders, globs, videos), output writers (:func:`run_batch`) and
exported ``.onnx`` files on ONNX Runtime / OpenVINO (:class:`OnnxModel`)."""

from instseg.device import resolve_device
from instseg.inference.batch import BatchReport, run_batch
from instseg.inference.onnx_model import OnnxModel, read_metadata
from instseg.inference.predictor import Predictor, load_input
from instseg.inference.sources import Item, Source, count_items, iter_sources, list_inputs
from instseg.inference.tiling import TiledPrediction, predict_tiled, predict_tiled_sparse, tile_grid
from instseg.inference.tta import FlipTTA, ScaleTTA, with_tta

__all__ = [
    "BatchReport",
    "FlipTTA",
    "Item",
    "OnnxModel",
    "Predictor",
    "ScaleTTA",
    "Source",
    "TiledPrediction",
    "count_items",
    "iter_sources",
    "list_inputs",
    "load_input",
    "predict_tiled",
    "predict_tiled_sparse",
    "read_metadata",
    "resolve_device",
    "run_batch",
    "tile_grid",
    "with_tta",
]
