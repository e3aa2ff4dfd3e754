"""Readers for every dataset format we meet, into one :class:`InstanceDataset`.

``load_dataset(src, format=None)`` detects the format when it is omitted.
"""

from __future__ import annotations

from pathlib import Path

from instseg.data.coco import load_coco
from instseg.data.dataset import InstanceDataset
from instseg.errors import DataError

FORMATS = ("coco",)


def detect_format(src: Path) -> str:
    """Guess the format of a dataset file or folder."""
    if src.is_file() and src.suffix.lower() == ".json":
        return "coco"
    raise DataError(src, None, f"cannot detect the dataset format; pass --format ({'|'.join(FORMATS)})")


def load_dataset(
    src: str | Path,
    format: str | None = None,
    images_dir: str | Path | None = None,
    skip_invalid: bool = False,
    check_images: bool = False,
) -> InstanceDataset:
    """Read a dataset in any supported format (detected when ``format`` is None)."""
    path = Path(src)
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    fmt = format or detect_format(path)
    if fmt == "coco":
        return load_coco(path, images_dir, skip_invalid, check_images)
    raise DataError(path, None, f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
