"""Mask-based dataset readers: label images (``label-png``, ``label-image``) and one binary PNG
per instance (``instance-pngs``). Every instance is stored as a compressed RLE, so the masks
survive a COCO round trip pixel for pixel. All are single-class (``class_name``, default
"object"; category id 1).

Pairing rules of label images (0 = background, every other integer is one instance):

* **two folders** -- SRC has one sub-folder whose name contains ``image``/``img`` and one
  whose name contains ``mask``/``label`` (e.g. ``PNGImages`` + ``PedMasks``, ``images`` +
  ``labels``). Files pair by relative sub-folder and stem; the label stem may carry a
  ``_mask``/``_masks``/``_label``/``_labels`` suffix (``-`` or ``.`` also work).
* **one folder** -- a file whose stem contains the word ``mask(s)``/``label(s)`` is a label
  image; its image has the same stem with that word replaced by ``img`` or ``image``, or
  removed (``mask2d.tif`` -> ``img2d.tif``; ``cell_mask.png`` -> ``cell.png``).

An image without a label image is bad input; a label image without an image is warned about
and skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from instseg.data.dataset import Category, InstanceDataset
from instseg.data.io import read_label_image
from instseg.data.readers_common import (
    DEFAULT_CLASS,
    DatasetBuilder,
    binary_mask_rle,
    checked_size,
    image_files,
    label_image_rles,
    warn_orphan,
)
from instseg.errors import DataError

_LABEL_DIR = re.compile(r"mask|label", re.IGNORECASE)
_IMAGE_DIR = re.compile(r"image|img", re.IGNORECASE)
_LABEL_SUFFIX = re.compile(r"[_\-.](masks?|labels?)$", re.IGNORECASE)
_LABEL_WORD = re.compile(r"(?<![a-z])(masks?|labels?)(?![a-z])", re.IGNORECASE)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def label_folders(root: Path) -> tuple[Path, Path] | None:
    """``(images_dir, labels_dir)`` of the two-folder layout, or None."""
    subs = _subdirs(root)
    labels = [d for d in subs if _LABEL_DIR.search(d.name)]
    images = [d for d in subs if d not in labels and _IMAGE_DIR.search(d.name)]
    if len(labels) == 1 and len(images) == 1:
        return images[0], labels[0]
    return None


def flat_label_files(root: Path) -> list[Path]:
    """Label images of the one-folder layout (stem contains the word mask/label)."""
    return [p for p in image_files(root) if _LABEL_WORD.search(p.stem)]


def _image_stems_for_label(stem: str) -> list[str]:
    """Candidate image stems of a one-folder label file, in order of preference."""
    out = [_LABEL_WORD.sub(rep, stem, count=1) for rep in ("img", "image")]
    removed = _LABEL_WORD.sub("", stem, count=1).strip("_-. ")
    return out + [removed] if removed else out


def _pair(
    images: list[Path], labels: list[Path], image_key: Callable[[Path], Any], label_keys: Callable[[Path], list[Any]]
) -> tuple[list[tuple[Path, Path | None]], list[Path]]:
    """Match each label to the image whose key is the first of its ``label_keys`` found."""
    index = {image_key(p): p for p in images}
    found: dict[Path, Path] = {}
    orphans = []
    for lbl in labels:
        match = next((index[k] for k in label_keys(lbl) if k in index), None)
        if match is None:
            orphans.append(lbl)
        elif match in found:
            raise DataError(lbl, f"image {match.name}", f"two label images for one image ({found[match].name})")
        else:
            found[match] = lbl
    return [(img, found.get(img)) for img in images], orphans


def pair_label_images(root: Path) -> tuple[list[tuple[Path, Path | None]], list[Path]]:
    """``([(image, label or None)], orphan labels)`` following the module's pairing rules."""
    folders = label_folders(root)
    if folders is not None:
        img_dir, lbl_dir = folders
        return _pair(
            image_files(img_dir, recursive=True),
            image_files(lbl_dir, recursive=True),
            lambda p: (p.parent.relative_to(img_dir), p.stem),
            lambda p: [(p.parent.relative_to(lbl_dir), s) for s in (p.stem, _LABEL_SUFFIX.sub("", p.stem))],
        )
    labels = flat_label_files(root)
    label_set = set(labels)
    images = [p for p in image_files(root) if p not in label_set]
    return _pair(images, labels, lambda p: p.stem, lambda p: _image_stems_for_label(p.stem))


def read_label_images(
    root: Path, class_name: str | None = None, skip_invalid: bool = False, check_images: bool = False
) -> InstanceDataset:
    """Label-image dataset (``label-png`` / ``label-image``) -> one RLE annotation per id."""
    pairs, orphans = pair_label_images(root)
    for orphan in orphans:
        warn_orphan(orphan, "label image without a matching image, skipped")
    if not pairs:
        raise DataError(root, None, "no image / label image pairs found")
    b = DatasetBuilder(root, skip_invalid)
    for img, lbl in pairs:
        item = f"image {img.relative_to(root).as_posix()}"
        if lbl is None:
            b.fail(img, item, "no label image for this image")
            continue
        try:
            h, w = checked_size(img, check_images)
            labels = read_label_image(lbl)
        except DataError as err:
            b.fail(err.file, item, err.message)
            continue
        if labels.shape != (h, w):
            b.fail(lbl, item, f"mask is {labels.shape[0]}x{labels.shape[1]} but the image is {h}x{w}")
            continue
        if labels.size and labels.min() < 0:
            b.fail(lbl, item, "label image has negative values")
            continue
        rec = b.add_image(img, root, h, w)
        for rle in label_image_rles(labels):
            b.add_annotation(rec, 1, rle)
    return b.finish([Category(1, class_name or DEFAULT_CLASS)])


# -- one binary PNG per instance ---------------------------------------------------------------
def instance_samples(root: Path) -> list[tuple[str, list[Path], Path]]:
    """``[(item name, image files, masks folder)]`` of a one-PNG-per-instance dataset.

    Layouts: ``<id>/images/<id>.png`` + ``<id>/masks/*.png`` directly under ``root`` or one
    level deeper (DSB 2018); or an images folder + masks folder of per-image sub-folders
    (``images/<stem>.png`` + ``masks/<stem>/*.png``).
    """

    def is_sample(d: Path) -> bool:
        return (d / "images").is_dir() and (d / "masks").is_dir()

    dirs = [d for d in _subdirs(root) if is_sample(d)]
    if not dirs:
        dirs = [d for s in _subdirs(root) for d in _subdirs(s) if is_sample(d)]
    if dirs:
        return [(d.name, image_files(d / "images"), d / "masks") for d in dirs]
    folders = label_folders(root)
    if folders is None or image_files(folders[1]) or not _subdirs(folders[1]):
        return []
    return [(p.stem, [p], folders[1] / p.stem) for p in image_files(folders[0])]


def _read_binary_mask(path: Path) -> np.ndarray:
    """``(H, W)`` array of a mask file, nonzero = object (colour channels OR-ed, alpha ignored)."""
    arr: Any = None
    if path.suffix.lower() in (".png", ".bmp") and _header_ok(path):
        import cv2  # much faster than PIL on thousands of small PNGs

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        return read_label_image(path)  # raises the DataError with PIL's reason
    if arr.ndim == 3:
        return np.any(arr[..., :3] != 0, axis=-1)
    return np.asarray(arr)


def _header_ok(path: Path) -> bool:
    """The file's header (read by PIL, lazily) names an image of positive size: OpenCV spends
    seconds on some corrupt headers (fuzzing found a PNG of height 0), PIL fails at once."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[0] > 0 and img.size[1] > 0
    except Exception:  # the reader then reports PIL's reason
        return False


def _mask_rle(path: Path, size: tuple[int, int]) -> dict[str, Any] | str | None:
    """Compressed RLE of one mask file, None if empty, or why it is unusable (worker thread)."""
    try:
        m = _read_binary_mask(path)
    except DataError as err:
        return err.message
    if m.shape != size:
        return f"mask is {m.shape[0]}x{m.shape[1]} but the image is {size[0]}x{size[1]}"
    return binary_mask_rle(m)


def read_instance_pngs(
    root: Path, class_name: str | None = None, skip_invalid: bool = False, check_images: bool = False
) -> InstanceDataset:
    """One binary mask file per instance (layouts: :func:`instance_samples`); an image without
    masks has no instances."""
    samples = instance_samples(root)
    if not samples:
        raise DataError(root, None, "no <id>/images + <id>/masks folders (or masks/<image stem>/) found")
    b = DatasetBuilder(root, skip_invalid)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for name, imgs, mask_dir in samples:
            item = f"image {name}"
            if len(imgs) != 1:
                b.fail(imgs[0].parent if imgs else mask_dir, item, f"expected one image, found {len(imgs)}")
                continue
            try:
                size = checked_size(imgs[0], check_images)
            except DataError as err:
                b.fail(err.file, item, err.message)
                continue
            mask_paths = image_files(mask_dir) if mask_dir.is_dir() else []
            results = list(pool.map(_mask_rle, mask_paths, [size] * len(mask_paths)))
            fatal = next(((p, r) for p, r in zip(mask_paths, results) if isinstance(r, str)), None)
            if fatal is not None:  # unreadable or wrong-size mask: the whole image is suspect
                b.fail(fatal[0], item, fatal[1])
                continue
            rec = b.add_image(imgs[0], root, *size)
            for path, rle in zip(mask_paths, results):
                if isinstance(rle, dict):
                    b.add_annotation(rec, 1, rle)
                else:  # an empty mask: only this instance goes
                    b.fail(path, item, "mask is empty")
    return b.finish([Category(1, class_name or DEFAULT_CLASS)])
