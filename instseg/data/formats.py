"""Readers for every dataset format we meet, into one :class:`InstanceDataset`.

``load_dataset(src, format=None)`` detects the format when it is omitted. ``--format`` names:

* ``coco``: a COCO JSON file, or a folder ``annotations/*.json`` + ``images/[<split>/]``
* ``label-png``: images folder + masks folder, one label PNG per image (PennFudanPed)
* ``label-image``: label images of any depth (16-bit TIFF ...), two folders or one (stardist)
* ``instance-pngs``: ``<id>/images/<id>.png`` + ``<id>/masks/*.png`` (DSB 2018), or
  ``images/<stem>.png`` + ``masks/<stem>/*.png``
* ``yolo``: ``images/`` + ``labels/*.txt`` normalized polygons (coco128-seg)
* ``via``: VIA 1.x/2.x polygon JSON (the file, or a folder holding just it)

Pairing rules are in :mod:`instseg.data.readers_masks` and :mod:`instseg.data.readers_polygons`.
Mask-based formats store every instance as compressed RLE, so ``format -> COCO -> reload``
keeps every mask pixel-identical; polygon formats keep their polygons (absolute pixels).
"""

from __future__ import annotations

import re
from pathlib import Path

from instseg.data.coco import load_coco, read_json
from instseg.data.dataset import InstanceDataset
from instseg.data.readers_masks import (
    flat_label_files,
    instance_samples,
    label_folders,
    read_instance_pngs,
    read_label_images,
)
from instseg.data.readers_polygons import is_via, read_via, read_yolo, yolo_folders
from instseg.errors import DataError

FORMATS = ("coco", "label-png", "label-image", "instance-pngs", "yolo", "via")
_FOLDER_FORMATS = ("label-png", "label-image", "instance-pngs", "yolo")
_VIA_MARK = re.compile(rb'"(_via_img_metadata|shape_attributes|all_points_x)"\s*:')
_COCO_MARK = re.compile(rb'"(images|annotations|categories)"\s*:\s*\[')


def json_kind(path: Path) -> str:
    """``"via"`` if a JSON file looks like VIA (first MiB, else the parsed file), else ``"coco"``.

    Anything that is not VIA goes to the COCO reader, whose errors say what is missing.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if _VIA_MARK.search(head):
        return "via"
    if _COCO_MARK.search(head):
        return "coco"
    try:
        return "via" if is_via(read_json(path)) else "coco"
    except DataError:
        return "coco"  # the COCO reader reports the bad JSON


def detect_format(src: str | Path) -> str:
    """Guess the format of a dataset file or folder (see the module table)."""
    path = Path(src)
    if path.is_file() and path.suffix.lower() == ".json":
        return json_kind(path)
    if path.is_dir():
        ann = path / "annotations"
        if ann.is_dir() and any(ann.glob("*.json")):
            return "coco"
        if yolo_folders(path) is not None and any((path / "labels").rglob("*.txt")):
            return "yolo"
        if instance_samples(path):
            return "instance-pngs"
        folders = label_folders(path)
        if folders is not None:
            labels = [p for p in folders[1].rglob("*") if p.is_file()]
            return "label-png" if labels and all(p.suffix.lower() == ".png" for p in labels) else "label-image"
        if flat_label_files(path):
            return "label-image"
        jsons = sorted(path.glob("*.json"))
        if len(jsons) == 1:
            return json_kind(jsons[0])
    raise DataError(path, None, f"cannot detect the dataset format; pass --format ({'|'.join(FORMATS)})")


def coco_folder(root: Path, images_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``(json, images folder)`` of a folder ``annotations/*.json`` + ``images/[<split>/]``.

    With several JSON files, the single ``instances*.json`` is used; ``<split>`` is the JSON
    name after ``instances_`` (``instances_val2017.json`` -> ``images/val2017``) when present.
    """
    jsons = sorted((root / "annotations").glob("*.json"))
    if len(jsons) > 1:
        jsons = [p for p in jsons if p.name.startswith("instances")] or jsons
    if len(jsons) != 1:
        names = ", ".join(p.name for p in sorted((root / "annotations").glob("*.json"))) or "none"
        raise DataError(root / "annotations", None, f"expected one instances JSON, found: {names}; pass the file")
    if images_dir is not None:
        return jsons[0], Path(images_dir)
    images = root / "images"
    split = jsons[0].stem.split("_", 1)[-1]
    if (images / split).is_dir():
        images = images / split
    return jsons[0], images


def _single_json(path: Path) -> Path:
    """``path`` itself, or the one ``*.json`` in folder ``path``."""
    if not path.is_dir():
        return path
    jsons = sorted(path.glob("*.json"))
    if len(jsons) != 1:
        raise DataError(path, None, f"expected one JSON file in the folder, found {len(jsons)}")
    return jsons[0]


def load_dataset(
    src: str | Path,
    format: str | None = None,
    images_dir: str | Path | None = None,
    skip_invalid: bool = False,
    check_images: bool = False,
    class_name: str | None = None,
    names: list[str] | str | Path | None = None,
) -> InstanceDataset:
    """Read a dataset in any supported format (detected when ``format`` is None).

    ``images_dir``: where ``coco``/``via`` file names resolve (other formats ignore it).
    ``class_name``: name of the single class of mask formats, and of VIA regions without a
    class attribute (default "object"). ``names``: YOLO class names (list, ``.yaml`` or text
    file). ``check_images`` decodes every image fully (finds truncated files); headers are
    always read. Bad items raise :class:`DataError`, or are skipped and listed in
    ``dataset.skipped`` with ``skip_invalid``.
    """
    path = Path(src)
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(path, None, f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    if fmt == "coco":
        if path.is_dir() and (path / "annotations").is_dir():
            path, images = coco_folder(path, images_dir)
            return load_coco(path, images, skip_invalid, check_images)
        return load_coco(_single_json(path), images_dir, skip_invalid, check_images)
    if fmt == "via":
        return read_via(_single_json(path), images_dir, class_name, skip_invalid, check_images)
    if not path.is_dir():
        raise DataError(path, None, f"format '{fmt}' reads a folder, got a file")
    if fmt == "yolo":
        return read_yolo(path, names, skip_invalid, check_images)
    if fmt == "instance-pngs":
        return read_instance_pngs(path, class_name, skip_invalid, check_images)
    return read_label_images(path, class_name, skip_invalid, check_images)
