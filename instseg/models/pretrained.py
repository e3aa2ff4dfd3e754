"""Trained models shipped inside the package: a name -> a checkpoint file, offline.

``SHIPPED`` is the whole list (no registry, no download): ``instseg predict img.png --model
nuclei`` and ``Predictor("nuclei")`` read ``instseg/weights/nuclei.pt``. A path that exists
always wins over a shipped name, so a folder called ``nuclei`` is still a training folder.
Each shipped checkpoint carries a ``card`` dict (training data, commands, validation figures).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from instseg.errors import DataError

__all__ = ["SHIPPED", "resolve_model_path", "shipped_card", "shipped_path"]

#: shipped model name -> file name under ``instseg/weights/``
SHIPPED: dict[str, str] = {"nuclei": "nuclei.pt"}


def shipped_path(name: str) -> Path:
    """The package file of shipped model ``name``; DataError when the name or file is missing."""
    if name not in SHIPPED:
        raise DataError(None, "--model", f"'{name}' is not a shipped model ({', '.join(SHIPPED)})")
    path = Path(str(resources.files("instseg") / "weights" / SHIPPED[name]))
    if not path.is_file():
        raise DataError(path, None, f"shipped model '{name}' is missing from this installation")
    return path


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A checkpoint path for ``--model``: an existing file or folder as is, else a shipped name.

    DataError (one line) for a zoo name (the zoo has architectures, not trained weights) and
    for anything else that is neither an existing path nor a shipped name.
    """
    p = Path(name_or_path)
    if p.exists():
        return p
    name = str(name_or_path)
    if name in SHIPPED:
        return shipped_path(name)
    from instseg.models.zoo import MODELS

    shipped = ", ".join(SHIPPED)
    if name in MODELS:
        raise DataError(
            name,
            None,
            "zoo models ship without trained weights; pass a checkpoint, a training folder "
            f"or a shipped model ({shipped})",
        )
    raise DataError(
        p, None, f"checkpoint or training folder not found, and not a shipped model ({shipped})"
    )


def shipped_card(name: str) -> dict[str, Any]:
    """The ``card`` dict of shipped model ``name`` (empty when the checkpoint has none)."""
    from instseg.engine.checkpoint import load_checkpoint

    card = load_checkpoint(shipped_path(name)).get("card")
    return dict(card) if isinstance(card, dict) else {}
