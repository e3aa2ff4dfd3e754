"""Where the ``file_name`` of a COCO (or VIA) image lives: ``--images``, then the JSON's
folder, then the standard COCO siblings of an ``annotations/`` folder.

For ``ROOT/annotations/instances_<split>.json`` the siblings are ``ROOT/images/<split>/``,
``ROOT/images/``, ``ROOT/<split>/`` and ``ROOT/<split>2017/`` (``instances_val.json`` ->
``ROOT/val2017/``). The first folder that holds the file wins; when none does, the error lists
the folders tried and suggests ``--images``.
"""

from __future__ import annotations

from pathlib import Path


def candidate_folders(json_path: Path, images_dir: str | Path | None = None) -> list[Path]:
    """The folders a relative ``file_name`` is looked up in, in order (no duplicates)."""
    folders: list[Path] = []
    if images_dir is not None:
        folders.append(Path(images_dir))
    here = json_path.parent
    folders.append(here)
    root = here.parent
    stem = json_path.stem
    split = stem.split("_", 1)[1] if stem.startswith("instances_") and "_" in stem else None
    siblings = [root / "images"]
    if split:
        siblings = [root / "images" / split, root / "images", root / split]
        if not split.endswith("2017"):
            siblings.append(root / f"{split}2017")
    for folder in siblings:
        if folder not in folders:
            folders.append(folder)
    return folders


class ImageResolver:
    """Resolve the image file names of one annotation file (see the module docstring)."""

    def __init__(self, json_path: Path, images_dir: str | Path | None = None) -> None:
        self.folders = candidate_folders(json_path, images_dir)

    def find(self, file_name: str) -> Path | None:
        """The existing file, or None (absolute names are kept when they exist)."""
        name = Path(file_name)
        if name.is_absolute():
            return name if name.is_file() else None
        for folder in self.folders:
            if (folder / name).is_file():
                return folder / name
        return None

    def default(self, file_name: str) -> Path:
        """Where the file would be (the first folder): for messages and absent files."""
        name = Path(file_name)
        return name if name.is_absolute() else self.folders[0] / name

    def not_found(self) -> str:
        """The message for a file found nowhere."""
        tried = ", ".join(str(f) for f in self.folders)
        return f"image file not found (looked in: {tried}); pass --images DIR"
