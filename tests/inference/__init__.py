"""Helpers for the inference tests: a stand-in model whose results are predictable.

``BlobModel`` follows the model contract (``predict(list[Tensor]) -> list[Instances]``,
``num_classes``, ``config``, ``score_threshold``, ``max_detections``): an instance is a
4-connected component of pixels brighter than ``threshold`` (channel mean); its label is 1
when the blob is redder than green, else 0; its score is the blob's mean brightness. It is
translation invariant, so tiled and untiled runs must agree exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from instseg.structures import Instances


class BlobModel(nn.Module):
    """Thresholding + connected components; see the module docstring."""

    def __init__(
        self, threshold: float = 0.5, score_threshold: float = 0.0, max_detections: int = 1000
    ) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # so .to(device) and parameters() work
        self.num_classes = 2
        self.config: dict[str, Any] = {"name": "blob", "num_classes": 2}
        self.threshold = threshold
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.calls: list[int] = []  # batch sizes seen

    def predict(self, images: list[torch.Tensor]) -> list[Instances]:
        self.calls.append(len(images))
        return [self._one(im) for im in images]

    def _one(self, image: torch.Tensor) -> Instances:
        assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
        img = image.cpu().numpy()
        gray = img.mean(0)
        comp, n = ndimage.label(gray > self.threshold)
        masks, labels, scores = [], [], []
        for k in range(1, n + 1):
            m = comp == k
            masks.append(m)
            labels.append(int(img[0][m].mean() > img[1][m].mean()))
            scores.append(float(gray[m].mean()))
        h, w = gray.shape
        if not masks:
            return Instances(
                image_size=(h, w),
                masks=torch.zeros((0, h, w), dtype=torch.bool),
                scores=torch.zeros(0),
            )
        order = np.argsort(-np.asarray(scores), kind="stable")
        keep = [i for i in order if scores[i] >= self.score_threshold][: self.max_detections]
        return Instances.from_masks(
            np.asarray(masks)[keep].reshape(-1, h, w),
            labels=np.asarray(labels)[keep],
            scores=np.asarray(scores)[keep],
        )


def blob_image(
    h: int, w: int, blobs: list[tuple[int, int, int]], seed: int = 0, red: bool = True
) -> np.ndarray:
    """Dark noisy RGB uint8 ``(h, w, 3)`` with bright discs ``(cy, cx, r)``; each disc gets its
    own brightness (so its own score); red discs when ``red`` else green ones."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i, (cy, cx, r) in enumerate(blobs):
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        v = 255 - 7 * (i % 12)
        img[m] = (v, 160, 150) if red else (160, v, 150)
    return img
