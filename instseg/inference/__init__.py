"""Inference: :class:`Predictor` (any image in, ``Instances`` out), test-time augmentation
wrappers (:mod:`.tta`), objects rescaled to the learnt size (:mod:`.object_size`, the
``auto`` estimate in :mod:`.size_estimate`), threshold calibration (:mod:`.calibrate`), tiled
inference for large images, input sources (files, folders, globs, videos), output writers
(:func:`run_batch`; on a Ray cluster :func:`predict_ray`, which imports Ray only when called)
and exported ``.onnx`` files on ONNX Runtime / OpenVINO (:class:`OnnxModel`)."""

from instseg.device import resolve_device
from instseg.inference.batch import BatchReport, run_batch
from instseg.inference.object_size import ObjectSizeError, Rescaled, ResizedInput, rescale
from instseg.inference.onnx_model import OnnxModel, read_metadata
from instseg.inference.predictor import Predictor, load_input
from instseg.inference.ray_batch import predict_ray
from instseg.inference.size_estimate import SizeEstimate, estimate_object_size
from instseg.inference.sources import Item, Source, count_items, iter_sources, list_inputs
from instseg.inference.tiling import TiledPrediction, predict_tiled, predict_tiled_sparse, tile_grid
from instseg.inference.tta import FlipTTA, ScaleTTA, with_tta

__all__ = [
    "BatchReport",
    "FlipTTA",
    "Item",
    "ObjectSizeError",
    "OnnxModel",
    "Predictor",
    "Rescaled",
    "ResizedInput",
    "ScaleTTA",
    "SizeEstimate",
    "Source",
    "TiledPrediction",
    "count_items",
    "estimate_object_size",
    "iter_sources",
    "list_inputs",
    "load_input",
    "predict_ray",
    "predict_tiled",
    "predict_tiled_sparse",
    "read_metadata",
    "rescale",
    "resolve_device",
    "run_batch",
    "tile_grid",
    "with_tta",
]
