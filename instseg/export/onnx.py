"""``export_onnx``: a trained model -> one ``.onnx`` file that predicts on its own.

The graph (:class:`~instseg.export.solov2.SOLOv2Export` /
:class:`~instseg.export.mask_rcnn.MaskRCNNExport`) takes a uint8 RGB image ``(H, W, 3)`` of
any size and returns ``masks`` bool ``(N, H, W)``, ``boxes`` float ``(N, 4)`` xyxy pixels,
``labels`` int64 ``(N,)`` and ``scores`` float ``(N,)``. SOLOv2 models with fixed-size cells
or the position prior (small-object configs) compute their cell grids from the input size in
Python, so their files take one image size (``size``, stored in the metadata). The metadata
(:data:`instseg.inference.onnx_model.METADATA_PREFIX`) holds class names, category ids,
thresholds, input scale, the architecture config and the instseg version.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import instseg
from instseg.errors import DataError
from instseg.export.graph import export_symbolics
from instseg.export.mask_rcnn import MaskRCNNExport
from instseg.export.solov2 import SOLOv2Export
from instseg.inference.loading import load_model, resolve_model_path
from instseg.inference.onnx_model import METADATA_PREFIX, OUTPUTS, OnnxModel

__all__ = ["MAX_OPSET", "MIN_OPSET", "ExportReport", "export_model", "export_onnx", "fixed_size"]

#: opsets the exported graphs are checked with (ONNX Runtime and OpenVINO run them)
MIN_OPSET, MAX_OPSET = 16, 20
#: the wrapper of each model family
WRAPPERS: dict[str, type[nn.Module]] = {"solov2": SOLOv2Export, "maskrcnn": MaskRCNNExport}
#: the example image of a file that takes any size (not square: catches H/W mix-ups)
EXAMPLE_SIZE = (384, 512)


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how the file agrees with the PyTorch model on the
    example image (``detections`` each side, largest score difference)."""

    path: Path
    metadata: dict[str, Any]
    detections: tuple[int, int]
    max_score_diff: float

    def summary(self) -> str:
        size = self.metadata.get("input_size")
        takes = "any image size" if size is None else f"{size[0]}x{size[1]} images"
        mb = self.path.stat().st_size / 2**20
        return (
            f"wrote {self.path} ({mb:.1f} MB, opset {self.metadata['opset']}, {takes}); check on "
            f"the example image: {self.detections[0]} detections (PyTorch {self.detections[1]}), "
            f"largest score difference {self.max_score_diff:.1e}"
        )


def fixed_size(model: nn.Module) -> bool:
    """Whether the model's graph is only valid at the traced input size (SOLOv2 grids of
    fixed-size cells, the position prior, center votes: cell geometry computed in Python)."""
    return any(getattr(model, k, None) for k in ("grid_canvas", "position_prior", "center_votes"))


def _example(size: tuple[int, int]) -> torch.Tensor:
    """A uint8 ``(H, W, 3)`` example image: smooth noise (detections do not matter; every
    data-dependent count is a graph op)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[0] // 16 + 1, size[1] // 16 + 1, 3), dtype=np.uint8)
    big = np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))[: size[0], : size[1]]
    return torch.from_numpy(np.ascontiguousarray(big))


def export_model(
    model: nn.Module,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    opset: int = 17,
    size: tuple[int, int] | None = None,
) -> ExportReport:
    """Write ``model`` (a zoo model in eval mode, thresholds as set on it) to ``out``.

    ``meta``: checkpoint metadata (``class_names``, ``cat_ids``); ``size``: the example /
    fixed input size ``(H, W)`` (default :data:`EXAMPLE_SIZE`; fixed-size models default to
    their ``grid_canvas`` square)."""
    family = str(getattr(model, "family", ""))
    if family not in WRAPPERS:
        raise ValueError(f"cannot export a {type(model).__name__}: no exporter for family {family!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET}")
    fixed = fixed_size(model)
    if size is None:
        canvas = getattr(model, "grid_canvas", None)
        size = (int(canvas), int(canvas)) if fixed and canvas else EXAMPLE_SIZE
    model = model.eval().cpu()
    wrapper = WRAPPERS[family](model).eval()  # type: ignore[call-arg]
    image = _example(size)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes: dict[str, dict[int, str]] = {name: {0: "detections"} for name in OUTPUTS}
    if not fixed:
        axes["image"] = {0: "height", 1: "width"}
        axes["masks"] = {0: "detections", 1: "height", 2: "width"}
    with torch.no_grad(), warnings.catch_warnings(), export_symbolics(opset):
        warnings.simplefilter("ignore")  # TracerWarnings of shapes that are graph ops here
        torch.onnx.export(
            wrapper, (image,), str(path), dynamo=False, opset_version=opset,
            input_names=["image"], output_names=list(OUTPUTS), dynamic_axes=axes,
        )  # fmt: skip
        want = wrapper(image)
    metadata = _metadata(model, meta or {}, opset, size if fixed else None)
    _write_metadata(path, metadata)
    got = OnnxModel(path, threads=1).predict_array(image.numpy())
    n = min(len(got), int(want[3].shape[0]))
    diff = float((got.scores[:n] - want[3][:n]).abs().max()) if n else 0.0  # type: ignore[index]
    return ExportReport(path, metadata, (len(got), int(want[3].shape[0])), diff)


def _metadata(
    model: nn.Module, meta: dict[str, Any], opset: int, size: tuple[int, int] | None
) -> dict[str, Any]:
    """The file's metadata: what predicting with it needs, and where it came from."""
    config = dict(getattr(model, "config", {}) or {})
    k = int(getattr(model, "num_classes", 0))
    names = meta.get("class_names") or [str(i) for i in range(k)]
    return {
        "version": instseg.__version__,
        "family": str(getattr(model, "family", "")),
        "config": config,
        "num_classes": k,
        "class_names": [str(n) for n in names],
        "cat_ids": [int(c) for c in (meta.get("cat_ids") or range(1, k + 1))],
        "score_threshold": float(getattr(model, "score_threshold", 0.0)),
        "mask_threshold": float(getattr(model, "mask_threshold", 0.5)),
        "max_detections": int(getattr(model, "max_detections", 100)),
        "input_scale": getattr(model, "input_scale", None),
        "input_size": None if size is None else [int(size[0]), int(size[1])],
        "opset": int(opset),
        "source": str(meta.get("path", "")),
        "object_size": meta.get("object_size"),  # what Predictor's object_size and
        "score_cutoff": meta.get("score_cutoff"),  # score_cutoff use (instseg.engine.learnt)
    }


def _write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` (JSON values) under :data:`METADATA_PREFIX` keys in the file."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)
    proto.producer_name, proto.producer_version = "instseg", instseg.__version__
    onnx.save(proto, str(path))


def export_onnx(
    source: str | Path,
    out: str | Path,
    opset: int = 17,
    size: tuple[int, int] | None = None,
    score_threshold: float | None = None,
    mask_threshold: float | None = None,
    max_detections: int | None = None,
) -> ExportReport:
    """Export a checkpoint file, training folder or shipped model name to ``out`` (thresholds
    default to the checkpoint's). DataError (one line) for a missing or unreadable source or an
    opset outside :data:`MIN_OPSET`..:data:`MAX_OPSET`."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DataError(source, None, f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET}")
    model, meta = load_model(resolve_model_path(source))
    for name, value in (
        ("score_threshold", score_threshold),
        ("mask_threshold", mask_threshold),
        ("max_detections", max_detections),
    ):
        if value is not None:
            setattr(model, name, value)
    if getattr(model, "family", "") == "solov2" and score_threshold is not None:
        # final scores >= the threshold, as Predictor(score_threshold=...) filters them
        update = max(float(model.update_threshold), float(score_threshold))  # type: ignore[arg-type]
        model.update_threshold = update  # type: ignore[assignment]
    try:
        return export_model(model, out, meta, opset, size)
    except torch.onnx.errors.OnnxExporterError as exc:
        raise DataError(source, None, f"cannot export at opset {opset} ({exc})") from None
