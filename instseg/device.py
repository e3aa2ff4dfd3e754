"""The default compute device: CUDA when available, else the CPU (bottom layer: torch only)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``""``/``"auto"`` -> cuda when available, else cpu; anything else as
    ``torch.device`` (``"cuda:1"`` keeps its index). A clear ValueError for a missing GPU."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available (use device='cpu')"
        )
    return dev
