"""``Instances``: the one structure that flows dataset -> model -> evaluator -> visualizer -> tracker.

Fields (N instances in an image of ``image_size = (H, W)``):
    boxes      float32 (N, 4)  xyxy in absolute pixels (x2/y2 exclusive for mask-derived boxes)
    masks      bool    (N, H, W) or None (box-only predictions)
    labels     int64   (N,)    contiguous class indices 0..K-1
    scores     float32 (N,)    1.0 for ground truth
    track_ids  int64   (N,)    or None
    iscrowd    bool    (N,)    crowd regions (ground truth only); all False otherwise

Mask codecs (bool <-> RLE <-> polygon) live in :mod:`instseg.masks` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from instseg.masks import decode as rle_decode
from instseg.masks import encode as rle_encode
from instseg.masks import from_polygons, masks_to_boxes, paint_label_image, to_polygons

__all__ = [
    "Instances",
    "from_polygons",
    "masks_to_boxes",
    "rle_decode",
    "rle_encode",
    "to_polygons",
]


def _as_tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


@dataclass
class Instances:
    """Instances of one image. See the module docstring for shapes and conventions."""

    image_size: tuple[int, int]
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4)))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.int64))
    scores: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    track_ids: torch.Tensor | None = None
    iscrowd: torch.Tensor | None = None

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        self.image_size = (h, w)
        self.boxes = _as_tensor(self.boxes, torch.float32).reshape(-1, 4)
        n = self.boxes.shape[0]
        self.labels = _as_tensor(self.labels, torch.int64).reshape(-1)
        self.scores = (
            torch.ones(n) if self.scores is None else _as_tensor(self.scores, torch.float32).reshape(-1)
        )
        self.iscrowd = (
            torch.zeros(n, dtype=torch.bool)
            if self.iscrowd is None
            else _as_tensor(self.iscrowd, torch.bool).reshape(-1)
        )
        if self.masks is not None:
            self.masks = _as_tensor(self.masks, torch.bool).reshape(-1, h, w)
        if self.track_ids is not None:
            self.track_ids = _as_tensor(self.track_ids, torch.int64).reshape(-1)
        for name in ("labels", "scores", "iscrowd", "masks", "track_ids"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"Instances.{name} has {value.shape[0]} rows, boxes has {n}")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray | torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        scores: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        track_ids: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        iscrowd: Sequence[bool] | np.ndarray | torch.Tensor | None = None,
    ) -> Instances:
        """Build from bool masks ``(N, H, W)``; boxes are the masks' tight boxes."""
        m = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        m = np.asarray(m, dtype=bool)  # no copy when already bool (any strides)
        n = m.shape[0]
        def opt(x: Any, dtype: torch.dtype) -> torch.Tensor | None:
            return None if x is None else _as_tensor(x, dtype)

        return cls(
            image_size=(m.shape[1], m.shape[2]),
            boxes=torch.from_numpy(masks_to_boxes(m)),
            labels=_as_tensor(np.zeros(n, np.int64) if labels is None else labels, torch.int64),
            scores=opt(scores, torch.float32),
            masks=torch.from_numpy(m),
            track_ids=opt(track_ids, torch.int64),
            iscrowd=opt(iscrowd, torch.bool),
        )

    @classmethod
    def from_rles(cls, rles: list[dict[str, Any]], image_size: tuple[int, int], **kw: Any) -> Instances:
        """Build from COCO RLEs; ``kw`` as for :meth:`from_masks`."""
        return cls.from_masks(rle_decode(rles, *image_size), **kw)

    @classmethod
    def cat(cls, items: Sequence[Instances]) -> Instances:
        """Concatenate instances of the same image size (optional fields must agree)."""
        if not items:
            raise ValueError("Instances.cat needs at least one Instances")
        size = items[0].image_size
        if any(it.image_size != size for it in items):
            raise ValueError("Instances.cat: image sizes differ")

        def join(name: str) -> torch.Tensor | None:
            vals = [getattr(it, name) for it in items]
            if all(v is None for v in vals):
                return None
            if any(v is None for v in vals):
                raise ValueError(f"Instances.cat: {name} is set on some items only")
            return torch.cat(vals)  # type: ignore[arg-type]

        return cls(
            image_size=size,
            boxes=torch.cat([it.boxes for it in items]),
            labels=torch.cat([it.labels for it in items]),
            scores=join("scores"),
            masks=join("masks"),
            track_ids=join("track_ids"),
            iscrowd=join("iscrowd"),
        )

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray | Sequence[int]) -> Instances:
        """Index, slice, bool mask or index list -> a new ``Instances``."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index) if not isinstance(index, torch.Tensor) else index)
            if index.dtype != torch.bool:
                index = index.to(torch.int64)
        kw: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "image_size"
        }
        return Instances(
            image_size=self.image_size,
            **{k: (v[index] if v is not None else None) for k, v in kw.items()},  # type: ignore[arg-type]
        )

    def filter(
        self,
        score_threshold: float | None = None,
        labels: Sequence[int] | None = None,
        min_area: float | None = None,
    ) -> Instances:
        """Keep instances with ``score >= score_threshold``, a label in ``labels``, ``area >= min_area``."""
        keep = torch.ones(len(self), dtype=torch.bool)
        if score_threshold is not None:
            assert self.scores is not None
            keep &= self.scores >= score_threshold
        if labels is not None:
            keep &= torch.isin(self.labels, torch.as_tensor(list(labels), dtype=torch.int64))
        if min_area is not None:
            keep &= self.areas() >= min_area
        return self[keep]

    def areas(self) -> torch.Tensor:
        """Mask pixel counts ``(N,)`` float32, or box areas when there are no masks."""
        if self.masks is not None:
            return self.masks.flatten(1).sum(1).to(torch.float32)
        wh = (self.boxes[:, 2:] - self.boxes[:, :2]).clamp(min=0)
        return wh[:, 0] * wh[:, 1]

    def to(self, device: torch.device | str) -> Instances:
        """Move every tensor field to ``device``."""
        kw: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "image_size"
        }
        return Instances(
            image_size=self.image_size,
            **{k: (v.to(device) if v is not None else None) for k, v in kw.items()},  # type: ignore[arg-type]
        )

    def recompute_boxes(self) -> Instances:
        """Return a copy whose boxes are the tight boxes of its masks."""
        if self.masks is None:
            raise ValueError("recompute_boxes needs masks")
        out = self[slice(None)]
        out.boxes = torch.from_numpy(masks_to_boxes(self.masks.cpu().numpy())).to(self.boxes.device)
        return out

    # -- codecs ---------------------------------------------------------------------------
    def to_rles(self) -> list[dict[str, Any]]:
        """Masks as compressed COCO RLEs (counts: str)."""
        if self.masks is None:
            raise ValueError("to_rles needs masks")
        return rle_encode(self.masks.cpu().numpy())

    def to_polygons(self) -> list[list[list[float]]]:
        """Masks as COCO polygons, one list of rings per instance (outer contours only)."""
        if self.masks is None:
            raise ValueError("to_polygons needs masks")
        return [to_polygons(m) for m in self.masks.cpu().numpy()]

    def to_label_image(self) -> np.ndarray:
        """Label image ``(H, W)`` int32: 0 background, i+1 for instance i; the highest score
        is on top, on equal scores the later instance (:func:`instseg.masks.paint_label_image`)."""
        if self.masks is None:
            return np.zeros(self.image_size, dtype=np.int32)
        scores = None if self.scores is None else self.scores.cpu().numpy()
        return paint_label_image(self.image_size, self.masks.cpu().numpy(), scores=scores)

    def __repr__(self) -> str:
        extra = ", masks" if self.masks is not None else ""
        extra += ", track_ids" if self.track_ids is not None else ""
        return f"Instances(n={len(self)}, image_size={self.image_size}{extra})"
