"""``InstanceDataset``: images + COCO-style annotations + a category map, in memory.

The COCO annotation is the truth (polygons or RLE, ``bbox`` xywh, ``area``, ``iscrowd``);
``dataset[i]`` decodes one image into ``(image uint8 (H, W, 3), Instances)`` with labels
mapped to contiguous indices 0..K-1 in the order of ``categories`` sorted by id.
No torch import at module level: ``info``/``convert``/``eval`` stay light.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from instseg import masks as mask_codec
from instseg.data.io import read_image
from instseg.errors import DataError

if TYPE_CHECKING:
    from instseg.structures import Instances

Segmentation = list[list[float]] | dict[str, Any]

#: Object-size bins of ``stats()``, by mask area in pixels (COCO's small/medium/large split
#: at 32^2 and 96^2, with finer bins below and above).
SIZE_BINS: list[tuple[str, float, float]] = [
    ("<8^2", 0, 8**2),
    ("8^2-16^2", 8**2, 16**2),
    ("16^2-32^2", 16**2, 32**2),
    ("32^2-64^2", 32**2, 64**2),
    ("64^2-96^2", 64**2, 96**2),
    ("96^2-256^2", 96**2, 256**2),
    (">=256^2", 256**2, float("inf")),
]


@dataclass
class Category:
    """A dataset category; ``id`` is the dataset's own (possibly non-contiguous) id."""

    id: int
    name: str
    supercategory: str = ""


@dataclass
class Annotation:
    """One COCO annotation. ``bbox`` is xywh in absolute pixels."""

    id: int
    image_id: int
    category_id: int
    segmentation: Segmentation
    bbox: list[float]
    area: float
    iscrowd: int = 0
    track_id: int | None = None

    def rle(self, height: int, width: int) -> dict[str, Any]:
        """The mask as a compressed RLE (counts: str)."""
        return mask_codec.segmentation_to_rle(self.segmentation, height, width)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "image_id": self.image_id,
            "category_id": self.category_id,
            "segmentation": self.segmentation,
            "bbox": [round(float(v), 3) for v in self.bbox],
            "area": float(self.area),
            "iscrowd": int(self.iscrowd),
        }
        if self.track_id is not None:
            out["track_id"] = int(self.track_id)
        return out


@dataclass
class ImageRecord:
    """One image: ``path`` is resolved on disk; ``file_name`` is what a COCO file stores."""

    id: int
    file_name: str
    path: Path
    height: int
    width: int
    annotations: list[Annotation] = field(default_factory=list)


def make_annotation(
    ann_id: int,
    image_id: int,
    category_id: int,
    segmentation: Segmentation,
    height: int,
    width: int,
    iscrowd: int = 0,
    track_id: int | None = None,
) -> Annotation:
    """An annotation with ``bbox`` and ``area`` computed from its mask (as pycocotools does)."""
    rle = mask_codec.segmentation_to_rle(segmentation, height, width)
    box = mask_codec.rle_boxes_xywh([rle])[0]
    return Annotation(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        segmentation=segmentation,
        bbox=[float(v) for v in box],
        area=float(mask_codec.area([rle])[0]),
        iscrowd=iscrowd,
        track_id=track_id,
    )


class InstanceDataset:
    """A list of :class:`ImageRecord` with categories; indexable like a torch Dataset."""

    def __init__(
        self,
        images: list[ImageRecord],
        categories: list[Category],
        source: str | Path | None = None,
        skipped: list[str] | None = None,
    ) -> None:
        self.images = images
        self.categories = sorted(categories, key=lambda c: c.id)
        self.source = str(source) if source is not None else None
        #: messages of items skipped while reading (``skip_invalid``)
        self.skipped: list[str] = list(skipped or [])
        self.cat_id_to_label = {c.id: i for i, c in enumerate(self.categories)}
        self.label_to_cat_id = [c.id for c in self.categories]

    # -- torch-Dataset protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Instances]:
        """``(image uint8 (H, W, 3), Instances)`` of image ``index``."""
        return self.load_image(index), self.instances(index)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def num_instances(self) -> int:
        return sum(len(r.annotations) for r in self.images)

    def load_image(self, index: int) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)`` of image ``index``; DataError when the file's size is not
        the annotations' (``height`` x ``width``)."""
        rec = self.images[index]
        image = read_image(rec.path)
        if image.shape[:2] != (rec.height, rec.width):
            raise DataError(
                self.source, f"image id={rec.id} ({rec.file_name})",
                f"the file {rec.path} is {image.shape[0]}x{image.shape[1]} but the annotations "
                f"say {rec.height}x{rec.width}",
            )  # fmt: skip
        return image

    def instances(self, index: int) -> Instances:
        """Ground truth of image ``index`` as ``Instances`` (masks decoded, scores 1)."""
        from instseg.structures import Instances

        rec = self.images[index]
        anns = rec.annotations
        rles = [a.rle(rec.height, rec.width) for a in anns]
        masks = mask_codec.decode(rles, rec.height, rec.width)
        track = [a.track_id for a in anns if a.track_id is not None]
        return Instances.from_masks(
            masks,
            labels=[self.cat_id_to_label[a.category_id] for a in anns],
            iscrowd=[bool(a.iscrowd) for a in anns],
            track_ids=track if anns and len(track) == len(anns) else None,
        )

    # -- subsets ----------------------------------------------------------------------------
    def subset(self, indices: list[int]) -> InstanceDataset:
        """A dataset of the given images (same categories)."""
        return InstanceDataset([self.images[i] for i in indices], self.categories, self.source)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[InstanceDataset, InstanceDataset]:
        """Deterministic random split into ``(train, val)`` by image."""
        idx = list(range(len(self)))
        random.Random(seed).shuffle(idx)
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        return self.subset(sorted(idx[n_val:])), self.subset(sorted(idx[:n_val]))

    # -- COCO out ---------------------------------------------------------------------------
    def to_coco(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """COCO instances dict. ``file_name`` is made relative to ``relative_to`` when given."""
        images = []
        for r in self.images:
            name = r.file_name
            if relative_to is not None:
                name = os.path.relpath(r.path.resolve(), Path(relative_to).resolve())
            images.append({"id": r.id, "file_name": name, "height": r.height, "width": r.width})
        return {
            "info": {"description": f"converted by instseg from {self.source}"},
            "images": images,
            "annotations": [a.to_json() for r in self.images for a in r.annotations],
            "categories": [
                {"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in self.categories
            ],
        }

    def save_coco(self, path: str | Path) -> Path:
        """Write COCO JSON atomically; image paths are stored relative to the file's folder."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.to_coco(relative_to=out.parent), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        return out

    # -- statistics -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts: images, instances, crowd, per class, per-image range, size histogram."""
        per_class: Counter[str] = Counter()
        sizes = Counter({name: 0 for name, _, _ in SIZE_BINS})
        names = {c.id: c.name for c in self.categories}
        per_image = [len(r.annotations) for r in self.images]
        crowd = 0
        for r in self.images:
            for a in r.annotations:
                per_class[names[a.category_id]] += 1
                crowd += int(bool(a.iscrowd))
                for name, lo, hi in SIZE_BINS:
                    if lo <= a.area < hi:
                        sizes[name] += 1
                        break
        return {
            "images": len(self.images),
            "instances": sum(per_image),
            "crowd": crowd,
            "categories": len(self.categories),
            "categories_used": len(per_class),
            "per_class": dict(sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))),
            "per_image_min": min(per_image) if per_image else 0,
            "per_image_max": max(per_image) if per_image else 0,
            "images_without_instances": sum(1 for n in per_image if n == 0),
            "size_histogram": dict(sizes),
        }
