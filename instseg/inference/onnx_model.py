"""Exported ``.onnx`` files as models: :class:`OnnxModel` runs a file written by
``instseg export`` with ONNX Runtime or OpenVINO, behind the same ``predict`` contract as the
PyTorch models, so :class:`~instseg.inference.Predictor`, tiling, videos and writers work
unchanged.

The file carries everything needed to predict (:data:`METADATA_PREFIX` entries of the ONNX
metadata): class names, category ids, thresholds, input scale, architecture config, instseg
version. Its graph takes one uint8 RGB image ``(H, W, 3)`` and returns ``masks (N, H, W)``
bool, ``boxes (N, 4)`` xyxy absolute pixels, ``labels (N,)`` 0..K-1 and ``scores (N,)``
descending.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from instseg.errors import DataError
from instseg.structures import Instances

__all__ = ["BACKENDS", "METADATA_PREFIX", "OnnxModel", "read_metadata"]

#: prefix of instseg's ONNX metadata keys (``instseg.class_names``, ...)
METADATA_PREFIX = "instseg."
#: inference engines that run an exported file
BACKENDS = ("onnxruntime", "openvino")
#: the graph's output names, in order
OUTPUTS = ("masks", "boxes", "labels", "scores")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """instseg's metadata of an exported file (JSON values decoded, prefix dropped).
    DataError (one line, naming the file) for a missing, corrupt or foreign file."""
    file = Path(path)
    if not file.is_file():
        raise DataError(file, None, "ONNX file not found")
    try:
        import onnx
    except ImportError:  # pragma: no cover - a dependency
        raise DataError(file, None, "reading ONNX files needs the onnx package") from None
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any decode error means the same to the user
        raise DataError(file, None, f"not a readable ONNX file ({type(exc).__name__})") from None
    meta = {
        p.key[len(METADATA_PREFIX) :]: json.loads(p.value)
        for p in proto.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }
    if "family" not in meta:
        raise DataError(file, None, "an ONNX file without instseg metadata (write it with `instseg export`)")
    return meta


def _threads(threads: int | None) -> int:
    return int(threads) if threads else (os.cpu_count() or 1)


class OnnxModel:
    """An exported file behind the model contract: ``predict(list[Tensor]) -> list[Instances]``.

    ``backend``: ``"onnxruntime"`` (default) or ``"openvino"`` (the ``openvino`` extra);
    ``threads``: intra-op threads (default: all cores). Thresholds are part of the graph:
    ``score_threshold`` / ``max_detections`` may only be made stricter here (the
    :class:`Predictor` filters the outputs); another ``mask_threshold`` needs a new export."""

    def __init__(self, path: str | Path, backend: str = "onnxruntime", threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        self.backend = backend
        self.family = f"onnx:{self.meta['family']}"
        self.num_classes = len(self.meta.get("class_names") or []) or int(self.meta["num_classes"])
        size = self.meta.get("input_size")
        self.input_size: tuple[int, int] | None = None if size is None else (int(size[0]), int(size[1]))
        self._run = self._openvino(threads) if backend == "openvino" else self._onnxruntime(threads)

    def _onnxruntime(self, threads: int | None) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads(threads)
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            msg = str(exc).splitlines()[0][:200]
            raise DataError(self.path, None, f"ONNX Runtime cannot load it ({msg})") from None
        name = session.get_inputs()[0].name
        return lambda image: session.run(list(OUTPUTS), {name: image})

    def _openvino(self, threads: int | None) -> Any:
        try:
            import openvino as ov
        except ImportError:
            raise DataError(
                self.path, None, "--backend openvino needs OpenVINO: pip install 'instseg[openvino]'"
            ) from None
        core = ov.Core()
        # f32: OpenVINO may otherwise run bf16 on CPUs that have it (scores moved by 1e-2)
        config = {"INFERENCE_NUM_THREADS": _threads(threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
        try:
            compiled = core.compile_model(str(self.path), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises generic RuntimeErrors
            msg = str(exc).splitlines()[0][:200]
            raise DataError(self.path, None, f"OpenVINO cannot compile it ({msg})") from None
        request = compiled.create_infer_request()
        outputs = [compiled.output(n) for n in OUTPUTS]

        def run(image: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: image})
            return [np.asarray(result[o]) for o in outputs]

        return run

    # -- thresholds of the graph: only stricter ones are possible after export ---------------
    @property
    def score_threshold(self) -> float:
        return float(self.meta["score_threshold"])

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        if value < self.score_threshold:
            self._needs_export("score threshold", self.score_threshold, f"a lower one ({value:g})")

    @property
    def max_detections(self) -> int:
        return int(self.meta["max_detections"])

    @max_detections.setter
    def max_detections(self, value: int) -> None:
        if value > self.max_detections:
            self._needs_export("max detections", self.max_detections, f"more ({value})")

    @property
    def mask_threshold(self) -> float:
        return float(self.meta["mask_threshold"])

    @mask_threshold.setter
    def mask_threshold(self, value: float) -> None:
        if abs(value - self.mask_threshold) > 1e-9:
            self._needs_export("mask threshold", self.mask_threshold, f"another one ({value:g})")

    def _needs_export(self, what: str, exported: float, asked: str) -> None:
        """A setting the graph fixed at export, asked for beyond what filtering the outputs can
        give: DataError (one line)."""
        flag = "--" + what.replace(" ", "-")
        raise DataError(
            self.path, None, f"exported with {what} {exported:g}; {asked} needs a new export "
            f"(instseg export {flag})",
        )  # fmt: skip

    #: the contract's module flags: an exported file only predicts
    training = False

    def eval(self) -> OnnxModel:
        """No-op (the contract's ``model.eval()``)."""
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        """No-op: an exported file only predicts."""
        return self

    def predict_array(self, image: np.ndarray) -> Instances:
        """RGB uint8 ``(H, W, 3)`` -> :class:`Instances` in its pixels."""
        h, w = int(image.shape[0]), int(image.shape[1])
        if self.input_size is not None and (h, w) != self.input_size:
            fh, fw = self.input_size
            raise DataError(
                self.path, None, f"exported for {fh}x{fw} images, got {h}x{w} (predict with "
                f"--tile {max(fh, fw)}, or export at this size)",
            )  # fmt: skip
        masks, boxes, labels, scores = self._run(np.ascontiguousarray(image, dtype=np.uint8))
        return Instances(
            image_size=(h, w),
            boxes=torch.from_numpy(np.asarray(boxes, dtype=np.float32)),
            labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            scores=torch.from_numpy(np.asarray(scores, dtype=np.float32)),
            masks=torch.from_numpy(np.asarray(masks).astype(bool, copy=False)),
        )

    def predict(self, images: list[Tensor]) -> list[Instances]:
        """Float images ``(3, H, W)`` in [0, 1] (the contract) -> one :class:`Instances` each;
        they go into the graph as the uint8 images they came from."""
        out = []
        for img in images:
            arr = (img.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
            out.append(self.predict_array(arr.permute(1, 2, 0).numpy()))
        return out
