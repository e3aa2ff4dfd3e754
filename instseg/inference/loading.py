"""Trained models from files: rebuild a checkpoint's model with the zoo, resolve ``--model``.

``load_model`` turns a checkpoint file, a training folder or a shipped model name (see
:mod:`instseg.engine.checkpoint`) into an ``nn.Module`` in eval mode;
``resolve_model_path`` explains a zoo name given where trained weights are expected;
``shipped_card`` reads a shipped model's card (training data, commands, validation figures).
"""

from __future__ import annotations

from collections.abc import Callable
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

__all__ = ["load_model", "resolve_model_path", "shipped_card"]

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
