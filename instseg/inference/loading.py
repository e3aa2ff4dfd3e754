"""Trained models from files: rebuild a checkpoint's model with the zoo, resolve ``--model``.

``load_model`` turns a checkpoint file, a training folder or a shipped model name (see
:mod:`instseg.engine.checkpoint`) into an ``nn.Module`` in eval mode;
``resolve_model_path`` explains a zoo name given where trained weights are expected;
``shipped_card`` reads a shipped model's card (training data, commands, validation figures);
``init_model`` starts a model for another class set from any checkpoint (fine-tuning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.engine.checkpoint import (
    SHIPPED,
    find_shipped,
    load_checkpoint,
    resolve_checkpoint,
    shipped_path,
)
from instseg.errors import DataError
from instseg.models.zoo import MODELS, build_model

__all__ = ["InitReport", "init_model", "load_model", "resolve_model_path", "shipped_card"]

#: checkpoint entries that are training state, not metadata
_TRAINING_STATE = frozenset({"model", "model_train", "optimizer", "scaler", "rng"})


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    build: Callable[..., nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint -> ``(model in eval mode on device, meta)``.

    ``build`` defaults to ``instseg.models.zoo.build_model`` and is called as
    ``build(**ckpt["config"])``. ``meta`` is the checkpoint without weights and training state,
    plus ``path`` (the checkpoint file that was read).
    """
    file = resolve_checkpoint(path)
    ckpt = load_checkpoint(file)
    try:
        model = (build or build_model)(**dict(ckpt["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(file, "config", f"cannot build the model ({exc})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise DataError(file, "model", f"weights do not fit the architecture ({msg})") from None
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in _TRAINING_STATE}
    meta["path"] = str(file)
    return model, meta


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A checkpoint path for ``--model``: an existing file or folder as is, else a shipped name.

    DataError (one line) for a zoo name (the zoo has architectures, not trained weights) and
    for anything else that is neither an existing path nor a shipped name.
    """
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = find_shipped(name_or_path)
    if shipped is not None:
        return shipped
    names = ", ".join(SHIPPED)
    if str(name_or_path) in MODELS:
        raise DataError(
            str(name_or_path),
            None,
            "zoo models ship without trained weights; pass a checkpoint, a training folder "
            f"or a shipped model ({names})",
        )
    raise DataError(
        p, None, f"checkpoint or training folder not found, and not a shipped model ({names})"
    )


def shipped_card(name: str) -> dict[str, Any]:
    """The ``card`` dict of shipped model ``name`` (empty when the checkpoint has none)."""
    card = load_checkpoint(shipped_path(name)).get("card")
    return dict(card) if isinstance(card, dict) else {}


#: a key every torchvision ``maskrcnn_resnet50_fpn`` state dict has
_TORCHVISION_KEY = "roi_heads.box_predictor.cls_score.weight"


@dataclass
class InitReport:
    """What :func:`init_model` did: the architecture, the file, and which tensors were kept
    from the checkpoint / left at their fresh initialisation (names or shapes differ)."""

    name: str
    source: str
    kept: list[str]
    fresh: list[str]

    def summary(self) -> str:
        shown = ", ".join(self.fresh[:4]) + (", ..." if len(self.fresh) > 4 else "")
        fresh = f"; re-initialised {len(self.fresh)} ({shown})" if self.fresh else ""
        return f"init {self.name} from {self.source}: kept {len(self.kept)} tensors{fresh}"


def _init_state(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """``(architecture config, state dict, source)`` of an instseg checkpoint, training folder
    or shipped name, or of a torchvision Mask R-CNN state dict (bare, or under ``"model"``)."""
    file = resolve_checkpoint(path)
    try:
        obj: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, foreign pickle
        raise DataError(path, None, f"cannot read checkpoint ({type(exc).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "model" in obj:
        return dict(obj["config"]), obj["model"], str(file)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and _TORCHVISION_KEY in obj:
        return {"name": "maskrcnn_r50_fpn_torchvision"}, obj, str(file)
    raise DataError(file, None, "neither an instseg checkpoint nor a torchvision Mask R-CNN")


def init_model(
    path: str | Path,
    num_classes: int,
    adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[nn.Module, InitReport]:
    """A model to fine-tune on ``num_classes`` classes from any checkpoint (instseg
    checkpoint, training folder, shipped name, or torchvision ``maskrcnn_resnet50_fpn``
    weights): its architecture rebuilt for the new class count, every tensor whose name and
    shape match kept, the others (the class-dependent head layers when the classes differ)
    freshly initialised. ``adapt(config) -> config`` may change the checkpoint's config before
    the model is built (settings that hold no weights, e.g. the input scale of new data).
    -> ``(model in training mode, InitReport)``."""
    config, state, source = _init_state(path)
    config = {**config, "num_classes": int(num_classes)}
    if adapt is not None:
        config = adapt(config)
    try:
        model = build_model(**config)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(source, "config", f"cannot build the model ({exc})") from None
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not kept:
        raise DataError(source, None, f"no tensor fits {config['name']}")
    model.load_state_dict(kept, strict=False)
    fresh = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    return model.train(), InitReport(str(config["name"]), source, list(kept), fresh)
