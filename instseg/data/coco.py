"""COCO instances JSON in and out: polygons, compressed/uncompressed RLE, iscrowd; validated.

Every problem is a :class:`~instseg.errors.DataError` naming the file and the item
(``image id=3``, ``annotation id=17``, ``category id=9``). Under ``skip_invalid`` the bad
item is dropped (an image with its annotations) and reported in ``dataset.skipped``.

Predictions go out as COCO result dicts (:func:`coco_results`, :func:`instances_to_coco`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instseg import masks as mask_codec
from instseg.data.coco_checks import (
    check_agreement,
    check_area,
    check_bbox,
    check_id,
    check_segmentation,
    check_size,
    segmentation_box,
)
from instseg.data.dataset import Annotation, Category, ImageRecord, InstanceDataset
from instseg.data.image_paths import ImageResolver
from instseg.data.io import image_size
from instseg.errors import DataError, ErrorPolicy

if TYPE_CHECKING:  # no torch at import: reading COCO files stays light
    from instseg.structures import Instances

__all__ = ["check_segmentation", "coco_results", "instances_to_coco", "load_coco", "parse_coco", "read_json"]


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; DataError on a missing file or bad JSON (with line and column)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, None, "file not found")
    try:
        with open(p, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(p, None, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise DataError(p, None, "not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise DataError(p, None, "not usable JSON (nested too deeply)") from None


def _require(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise DataError(path, None, f"not a COCO instances file: top level is a {type(data).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(path, None, f"not a COCO instances file: missing key '{key}'")
        if not isinstance(data[key], list):
            raise DataError(path, None, f"not a COCO instances file: '{key}' is not a list")


def parse_coco(
    data: Any,
    path: str | Path,
    images_dir: str | Path | None = None,
    skip_invalid: bool = False,
    check_images: bool = False,
) -> InstanceDataset:
    """Validate a parsed COCO dict and build a dataset.

    ``file_name`` resolves against ``images_dir``, then the JSON's folder, then the standard
    COCO siblings (:mod:`instseg.data.image_paths`); absolute paths are kept. ``check_images`` decodes every image fully (finds truncated files) and compares
    its size with the JSON's.
    """
    path = Path(path)
    _require(data, path)
    policy = ErrorPolicy(skip_invalid)
    resolver = ImageResolver(path, images_dir)
    categories = _parse_categories(data["categories"], path)
    records = _parse_images(data["images"], path, resolver, policy, check_images)
    known_image_ids = {
        im.get("id") for im in data["images"] if isinstance(im, dict) and check_id(im.get("id"), "") is None
    }
    seen_ann_ids: set[Any] = set()
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "id" not in a:
            policy.fail(DataError(path, f"annotations[{k}]", "annotation without 'id'"))
            continue
        problem = check_id(a["id"], "id")
        if problem:
            policy.fail(DataError(path, f"annotations[{k}]", problem))
            continue
        if a["id"] in seen_ann_ids:
            raise DataError(path, f"annotation id={a['id']}", "duplicate annotation id")
        seen_ann_ids.add(a["id"])
        try:
            ann = _annotation(a, path, categories, records, known_image_ids)
        except DataError as err:
            policy.fail(err)
            continue
        if ann is not None:
            records[ann.image_id].annotations.append(ann)
    return InstanceDataset(list(records.values()), list(categories.values()), path, policy.skipped)


def _parse_categories(items: list[Any], path: Path) -> dict[int, Category]:
    """Category id -> :class:`Category`; DataError for a missing, bad or duplicate id."""
    categories: dict[int, Category] = {}
    for k, c in enumerate(items):
        if not isinstance(c, dict) or "id" not in c:
            raise DataError(path, f"categories[{k}]", "category without 'id'")
        problem = check_id(c["id"], "id")
        if problem:
            raise DataError(path, f"categories[{k}]", problem)
        if c["id"] in categories:
            raise DataError(path, f"category id={c['id']}", "duplicate category id")
        categories[c["id"]] = Category(c["id"], str(c.get("name", c["id"])), str(c.get("supercategory", "")))
    return categories


def _parse_images(
    items: list[Any], path: Path, resolver: ImageResolver, policy: ErrorPolicy, check_images: bool
) -> dict[int, ImageRecord]:
    """Image id -> :class:`ImageRecord` (no annotations yet); bad entries go to ``policy``."""
    records: dict[int, ImageRecord] = {}
    for k, im in enumerate(items):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            policy.fail(DataError(path, f"images[{k}]", "image entry needs 'id' and 'file_name'"))
            continue
        problem = check_id(im["id"], "id")
        if problem is None and not (isinstance(im["file_name"], str) and im["file_name"]):
            problem = f"file_name {im['file_name']!r} is not a file name"
        if problem:
            policy.fail(DataError(path, f"images[{k}]", problem))
            continue
        item = f"image id={im['id']} ({im['file_name']})"
        if im["id"] in records:
            raise DataError(path, item, "duplicate image id")
        h, w = im.get("height"), im.get("width")
        problem = check_size(h, w)
        file_path = resolver.find(im["file_name"])
        if problem is None and file_path is None:
            problem = resolver.not_found()
        if problem:
            policy.fail(DataError(path, item, problem))
            continue
        assert file_path is not None
        try:
            h, w = _image_size(file_path, h, w, check_images)
        except DataError as err:
            policy.fail(DataError(path, item, str(err)))
            continue
        records[im["id"]] = ImageRecord(im["id"], im["file_name"], file_path, h, w)
    return records


def _image_size(file_path: Path, h: Any, w: Any, check_images: bool) -> tuple[int, int]:
    """``(height, width)`` from the JSON, read from the file when missing or checked."""
    if check_images or h is None or w is None:
        real = image_size(file_path, verify=check_images)
        if h is not None and w is not None and (int(h), int(w)) != real:
            raise DataError(
                file_path, None, f"image is {real[0]}x{real[1]} but the JSON says {h}x{w}"
            )
        return real
    return int(h), int(w)


def _annotation(
    a: dict[str, Any],
    path: Path,
    categories: dict[int, Category],
    records: dict[int, ImageRecord],
    known_image_ids: set[Any],
) -> Annotation | None:
    """One validated annotation (bbox and area computed when absent); None when its image
    was skipped; DataError naming the annotation when it is invalid."""
    item = f"annotation id={a['id']}"
    for key in ("image_id", "category_id", "segmentation"):
        if key not in a:
            raise DataError(path, item, f"missing '{key}'")
    img_id, cat_id = a["image_id"], a["category_id"]
    problem = check_id(img_id, "image_id") or check_id(cat_id, "category_id")
    if problem:
        raise DataError(path, item, problem)
    if img_id not in known_image_ids:
        raise DataError(path, item, f"image_id {img_id} is not in 'images'")
    if img_id not in records:  # image itself was skipped
        return None
    if cat_id not in categories:
        raise DataError(path, item, f"category_id {cat_id} is not declared in 'categories'")
    rec = records[img_id]
    segm = a["segmentation"]
    bbox, area, crowd = a.get("bbox"), a.get("area"), a.get("iscrowd", 0)
    problem = check_segmentation(segm, rec.height, rec.width)
    if problem is None and bbox is not None:
        problem = check_bbox(bbox) or check_agreement(bbox, segmentation_box(segm, rec.height, rec.width))
    if problem is None and area is not None:
        problem = check_area(area)
    if problem is None and crowd not in (0, 1):
        problem = f"iscrowd {crowd!r} is not 0 or 1"
    if problem is None and a.get("track_id") is not None:
        problem = check_id(a["track_id"], "track_id")
    if problem:
        raise DataError(path, item, problem)
    if bbox is None or area is None:
        rle = mask_codec.segmentation_to_rle(segm, rec.height, rec.width)
        bbox = bbox if bbox is not None else list(mask_codec.rle_boxes_xywh([rle])[0])
        area = area if area is not None else float(mask_codec.area([rle])[0])
    return Annotation(
        id=a["id"],
        image_id=img_id,
        category_id=cat_id,
        segmentation=segm,
        bbox=[float(v) for v in bbox],
        area=float(area),
        iscrowd=int(crowd),
        track_id=a.get("track_id"),
    )


def load_coco(
    path: str | Path,
    images_dir: str | Path | None = None,
    skip_invalid: bool = False,
    check_images: bool = False,
) -> InstanceDataset:
    """Read and validate a COCO instances JSON file (see :func:`parse_coco`)."""
    return parse_coco(read_json(path), path, images_dir, skip_invalid, check_images)


def coco_results(
    image_id: int,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    cat_ids: Sequence[int],
    rles: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One image's predictions as COCO result dicts, in input order.

    ``boxes`` are xyxy absolute pixels (written as ``bbox`` xywh, 2 decimals); ``score`` has 5
    decimals; ``segmentation`` (only with ``rles``) is a compressed RLE with ``counts`` str.
    ``cat_ids[label]`` is the category id of model label ``label``; a label without one
    (negative, or past the end of ``cat_ids``) is a ValueError naming it, never a guess.
    """
    out = []
    for k, ((x1, y1, x2, y2), label, score) in enumerate(zip(boxes, labels, scores)):
        if not 0 <= int(label) < len(cat_ids):
            raise ValueError(
                f"label {int(label)} has no category id (cat_ids {list(cat_ids)} cover labels "
                f"0..{len(cat_ids) - 1})"
            )
        res: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(cat_ids[int(label)]),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        }
        if rles is not None:
            rle = rles[k]
            res["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}
        out.append(res)
    return out


def instances_to_coco(
    inst: Instances, image_id: int, label_to_cat_id: Sequence[int]
) -> list[dict[str, Any]]:
    """:func:`coco_results` of an ``Instances`` (RLE segmentation when it has masks)."""
    scores = inst.scores.cpu().tolist() if inst.scores is not None else [1.0] * len(inst)
    return coco_results(
        image_id,
        inst.boxes.cpu().tolist(),
        inst.labels.cpu().tolist(),
        scores,
        label_to_cat_id,
        inst.to_rles() if inst.masks is not None else None,
    )
