"""Models: Mask R-CNN and SOLOv2, built by name from :mod:`instseg.models.zoo`.

Every model is a plain ``nn.Module`` with ``num_classes``, ``config`` (``build_model(**config)``
rebuilds it), ``losses(images, targets) -> dict`` and ``predict(images) -> list[Instances]``.
Names below are imported lazily, so ``import instseg.models.<submodule>`` stays cheap and
free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "MODELS": "zoo",
    "ModelSpec": "zoo",
    "build_model": "zoo",
    "list_models": "zoo",
    "MaskRCNN": "mask_rcnn",
    "load_torchvision_maskrcnn": "mask_rcnn.torchvision_compat",
    "SOLOv2": "solov2",
    "DatasetSizeStats": "autoconfig",
    "suggest_config": "autoconfig",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"instseg.models.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'instseg.models' has no attribute {name!r}")
