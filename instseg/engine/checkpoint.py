"""Checkpoints: atomic save (temp file, fsync, rename), exact-resume state, model loading.

A checkpoint is a dict saved with ``torch.save`` that loads with ``weights_only=True``:

    model        state_dict (the weights' moving average when trained with ``ema``)
    config       model.config (``{"name": zoo name, "num_classes": K, ...overrides}``)
    class_names  list[str], index = model label 0..K-1
    cat_ids      list[int], the dataset's category id of each label
    step, epoch, best_ap, plan          training progress (see instseg.engine.train)
    optimizer, scaler, rng              only in ``last.pt`` (what ``--resume`` needs)
    model_train  the raw weights, only in ``last.pt`` of runs with ``ema``

``best.pt`` (best validation segm AP) holds the model and metadata only. A training folder
``DIR`` is usable wherever a model path is expected: ``DIR/best.pt`` is preferred, then
``DIR/last.pt``. A shipped model's name (``nuclei``) is usable too.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instseg.errors import DataError

__all__ = [
    "get_rng_state",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return out


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training folder -> its ``best.pt``, else ``last.pt``; a shipped
    model name (``"nuclei"``, see :mod:`instseg.models.pretrained`) that is not an existing
    path -> its file inside the package."""
    from instseg.models.pretrained import SHIPPED, shipped_path

    p = Path(path)
    if not p.exists() and str(path) in SHIPPED:
        return shipped_path(str(path))
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise DataError(p, None, "no best.pt or last.pt in this folder (not a training output?)")
    if not p.is_file():
        names = ", ".join(SHIPPED)
        raise DataError(p, None, f"checkpoint not found (and not a shipped model: {names})")
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict (file or training folder); DataError if missing or unreadable."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, foreign pickle, ...
        raise DataError(p, None, f"cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise DataError(p, None, "not an instseg checkpoint (needs 'model' and 'config')")
    return ckpt


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    build: Callable[..., nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint -> ``(model in eval mode on device, meta)``.

    ``build`` defaults to ``instseg.models.zoo.build_model`` and is called as
    ``build(**ckpt["config"])``. ``meta`` is the checkpoint without weights and training state.
    """
    ckpt = load_checkpoint(path)
    if build is None:
        from instseg.models.zoo import build_model

        build = build_model
    config = dict(ckpt["config"])
    try:
        model = build(**config)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            resolve_checkpoint(path), "config", f"cannot build the model ({exc})"
        ) from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise DataError(
            resolve_checkpoint(path), "model", f"weights do not fit the architecture ({msg})"
        ) from None
    model.to(device).eval()
    skip = {"model", "model_train", "optimizer", "scaler", "rng"}
    meta = {k: v for k, v in ckpt.items() if k not in skip}
    meta["path"] = str(resolve_checkpoint(path))
    return model, meta


def export_model(
    path: str | Path, out: str | Path, half: bool = True, extra: dict[str, Any] | None = None
) -> Path:
    """Write a deployable copy of a checkpoint: weights (fp16 when ``half``), config, class
    names and category ids; no optimizer, RNG or plan. ``load_model`` reads it (fp16 weights
    are cast back to the model's float32 on load). ``extra`` adds metadata (e.g. figures)."""
    ck = load_checkpoint(path)
    weights = {
        k: v.half() if half and v.is_floating_point() else v for k, v in ck["model"].items()
    }
    keep = ("config", "class_names", "cat_ids", "step")
    slim = {"model": weights, **{k: ck[k] for k in keep if k in ck}, **(extra or {})}
    return save_checkpoint(slim, out)


def get_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states in a ``weights_only``-loadable form."""
    version, pystate, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(pystate), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, pystate, gauss = state["python"]
    random.setstate((version, tuple(pystate), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
