"""Deployment: ``export_onnx`` writes a trained model to one ONNX file with pre- and
post-processing in the graph (:mod:`.onnx`); ``quantize_int8`` makes its INT8 version
(:mod:`.quantize`). The exported graphs wrap the models' public tensor API (:mod:`.solov2`,
:mod:`.mask_rcnn`); files run with :class:`instseg.inference.onnx_model.OnnxModel`."""

from instseg.export.onnx import ExportReport, export_model, export_onnx, fixed_size

__all__ = ["ExportReport", "export_model", "export_onnx", "fixed_size"]
