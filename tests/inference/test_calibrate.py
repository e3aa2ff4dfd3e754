"""Score cut-off calibration (``choose_score_threshold``) on a hand-made prediction set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from instseg.data.loader import TrainingDataset
from instseg.inference.calibrate import choose_score_threshold
from instseg.structures import Instances
from tests.engine import make_shapes_dataset


class Oracle(nn.Module):
    """Predicts each image's ground truth at score 0.35 plus two false 2x2 squares in the
    top rows (no object reaches them) at scores 0.3 and 0.25, image by image in order."""

    def __init__(self, targets: list[Instances]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for predict_dataset
        self.targets, self.calls = targets, 0

    def predict(self, images: list[Tensor]) -> list[Instances]:
        out = []
        for img in images:
            t = self.targets[self.calls]
            self.calls += 1
            assert t.masks is not None
            fake = torch.zeros(2, *t.image_size, dtype=torch.bool)
            fake[0, 0:2, 0:2] = fake[1, 0:2, 4:6] = True
            masks = torch.cat([t.masks, fake])
            labels = torch.cat([t.labels, torch.zeros(2, dtype=torch.int64)])
            scores = torch.tensor([0.35] * len(t) + [0.3, 0.25])
            out.append(Instances.from_masks(masks, labels=labels.tolist(), scores=scores))
            assert tuple(img.shape[-2:]) == t.image_size
        return out


def test_choose_score_threshold_finds_the_cut_between_true_and_false(tmp_path: Path) -> None:
    ds = make_shapes_dataset(tmp_path, n_images=3)
    targets = [TrainingDataset(ds)[i][1] for i in range(len(ds))]
    best, f1 = choose_score_threshold(Oracle(targets), ds, candidates=(0.2, 0.3, 0.35, 0.4))
    assert best == 0.35 and f1[0.35] == pytest.approx(1.0)
    n = sum(len(t) for t in targets)
    assert f1[0.3] == pytest.approx(2 * n / (2 * n + len(ds)))  # one false positive per image
    assert f1[0.2] == pytest.approx(2 * n / (2 * n + 2 * len(ds))) and f1[0.4] == 0.0
    with pytest.raises(ValueError, match="candidates"):
        choose_score_threshold(Oracle(targets), ds, candidates=())
