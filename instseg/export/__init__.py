"""Deployment: ``export_onnx`` writes a trained model to one ONNX file with pre- and
post-processing in the graph (:mod:`.onnx`). The exported graphs wrap the models' public
tensor API (:mod:`.solov2`, :mod:`.mask_rcnn`) with in-graph operations (:mod:`.graph`);
files run with :class:`instseg.inference.onnx_model.OnnxModel`."""

from instseg.export.onnx import ExportReport, export_model, export_onnx, fixed_size

__all__ = ["ExportReport", "export_model", "export_onnx", "fixed_size"]
