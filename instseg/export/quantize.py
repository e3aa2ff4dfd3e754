"""``quantize_int8``: an exported file -> its INT8 version (ONNX Runtime static quantization).

Only the convolutions are quantized (weights int8 per output channel, activations uint8 per
tensor, QDQ format), with activation ranges from the calibration images the user names; the
pre-processing, NMS, mask products and pasting stay float, so masks keep their geometry. The
metadata is copied with ``precision: int8`` and the calibration source.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instseg.data.io import read_image
from instseg.errors import DataError
from instseg.export.onnx import write_metadata
from instseg.inference.onnx_model import OnnxModel, read_metadata
from instseg.inference.sources import Source, list_inputs

__all__ = ["QuantizeReport", "quantize_int8"]

#: files read as calibration images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: calibration images used at most (spread evenly over what the user names)
MAX_CALIBRATION_IMAGES = 32


@dataclass
class QuantizeReport:
    """The INT8 file, its calibration, and its speed and outputs against the float file on the
    first calibration image (median ms of ``runs`` runs each, detections each side)."""

    path: Path
    images: int
    float_ms: float
    int8_ms: float
    detections: tuple[int, int]

    def summary(self) -> str:
        return (
            f"wrote {self.path} (INT8 convolutions, calibrated on {self.images} images): "
            f"{self.int8_ms:.0f} ms vs {self.float_ms:.0f} ms float on the first calibration "
            f"image ({self.float_ms / max(self.int8_ms, 1e-9):.2f}x), {self.detections[0]} "
            f"detections (float {self.detections[1]}); check its accuracy on labelled images "
            "before deploying it"
        )


def _calibration_images(source: Source) -> list[np.ndarray]:
    """Up to :data:`MAX_CALIBRATION_IMAGES` RGB uint8 images from files, folders or globs."""
    paths = [p for p, _ in list_inputs(source) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise DataError(str(source)[:200], None, "no calibration images found")
    step = max(1, len(paths) // MAX_CALIBRATION_IMAGES)
    return [read_image(p) for p in paths[::step][:MAX_CALIBRATION_IMAGES]]


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over the calibration images."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self._it: Iterator[np.ndarray] = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._it, None)
        return None if image is None else {"image": image}

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        raise NotImplementedError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice at WARNING on the root logger: hidden."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _median_ms(model: OnnxModel, image: np.ndarray, runs: int = 5) -> float:
    model.predict_array(image)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict_array(image)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def quantize_int8(path: str | Path, calibrate: Source, out: str | Path | None = None) -> QuantizeReport:
    """Write the INT8 version of exported file ``path`` (default ``NAME.int8.onnx`` beside it),
    its convolution activation ranges taken on ``calibrate``'s images (files, folders, globs;
    choose training images, never the ones you evaluate on)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(path)
    meta = read_metadata(src)
    dst = Path(out) if out is not None else src.with_suffix(".int8.onnx")
    images = _calibration_images(calibrate)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        staged = Path(tmp) / "int8.onnx"  # the calibrator writes beside its model: a temp dir
        prepared = Path(tmp) / "prepared.onnx"  # constants folded, ops fused: ~10% faster int8
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(staged), _Reader(images), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": False},
        )  # fmt: skip
        write_metadata(staged, {**meta, "precision": "int8", "calibration": str(calibrate)[:200],
                               "calibration_images": len(images)})  # fmt: skip
        dst.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(dst)
    fp32, int8 = OnnxModel(src), OnnxModel(dst)
    image = images[0]
    return QuantizeReport(
        dst, len(images), _median_ms(fp32, image), _median_ms(int8, image),
        (len(int8.predict_array(image)), len(fp32.predict_array(image))),
    )  # fmt: skip
