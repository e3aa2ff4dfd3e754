"""Checkpoints: atomic save (temp file, fsync, rename), exact-resume state, shipped models.

A checkpoint is a dict saved with ``torch.save`` that loads with ``weights_only=True``:

    model        state_dict (the weights' moving average when trained with ``ema``)
    config       model.config (``{"name": zoo name, "num_classes": K, ...overrides}``)
    class_names  list[str], index = model label 0..K-1
    cat_ids      list[int], the dataset's category id of each label
    step, epoch, best_ap, plan          training progress (see instseg.engine.train)
    object_size  float px: the training instances' median diameter as the model's inference
                 input sees it (see instseg.engine.learnt); absent in older checkpoints
    score_cutoff float: the F1@0.5-best score cut-off on the validation set, chosen on these
                 weights' evaluation; absent without a validation set and in older checkpoints
    optimizer, scaler, rng              only in ``last.pt`` (what ``--resume`` needs)
    model_train  the raw weights, only in ``last.pt`` of runs with ``ema``

``best.pt`` (best validation segm AP) holds the model and metadata only. A training folder
``DIR`` is usable wherever a model path is expected: ``DIR/best.pt`` is preferred, then
``DIR/last.pt``.

Shipped models: :data:`SHIPPED` is the whole list of trained models inside the package (no
registry, no download): ``instseg predict img.png --model nuclei`` reads
``instseg/weights/nuclei.pt``. A path that exists always wins over a shipped name, so a folder
called ``nuclei`` is still a training folder. Rebuilding a model from a checkpoint needs the
zoo: :func:`instseg.inference.loading.load_model`.
"""

from __future__ import annotations

import os
import random
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instseg.errors import DataError

__all__ = [
    "SHIPPED",
    "export_model",
    "find_shipped",
    "get_rng_state",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "shipped_path",
]

#: shipped model name -> file name under ``instseg/weights/``
SHIPPED: dict[str, str] = {"nuclei": "nuclei.pt"}


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


def shipped_path(name: str) -> Path:
    """The package file of shipped model ``name``; DataError when the name or file is missing."""
    if name not in SHIPPED:
        raise DataError(None, "--model", f"'{name}' is not a shipped model ({', '.join(SHIPPED)})")
    path = Path(str(resources.files("instseg") / "weights" / SHIPPED[name]))
    if not path.is_file():
        raise DataError(path, None, f"shipped model '{name}' is missing from this installation")
    return path


def find_shipped(path: str | Path) -> Path | None:
    """The package file of a shipped model name that is not an existing path, else None
    (an existing file or folder always wins over a shipped name)."""
    if Path(path).exists() or str(path) not in SHIPPED:
        return None
    return shipped_path(str(path))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training folder -> its ``best.pt``, else ``last.pt``; a shipped
    model name (``"nuclei"``, see :data:`SHIPPED`) that is not an existing path -> its file
    inside the package."""
    shipped = find_shipped(path)
    if shipped is not None:
        return shipped
    p = Path(path)
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
    model, config = ckpt["model"], ckpt["config"]
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise DataError(p, "model", "not a state dict (names -> tensors)")
    if not isinstance(config, dict) or not isinstance(config.get("name", ""), str):
        raise DataError(p, "config", "not a model config (an object with a 'name')")
    return ckpt


def export_model(
    path: str | Path, out: str | Path, half: bool = True, extra: dict[str, Any] | None = None
) -> Path:
    """Write a deployable copy of a checkpoint: weights (fp16 when ``half``), config, class
    names, category ids, ``object_size`` and ``score_cutoff``; no optimizer, RNG or plan.
    ``load_model`` (in
    :mod:`instseg.inference.loading`) reads it (fp16 weights
    are cast back to the model's float32 on load). ``extra`` adds metadata (e.g. figures)."""
    ck = load_checkpoint(path)
    weights = {
        k: v.half() if half and v.is_floating_point() else v for k, v in ck["model"].items()
    }
    keep = ("config", "class_names", "cat_ids", "step", "object_size", "score_cutoff")
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
