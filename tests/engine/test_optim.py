"""Learning-rate scaling with the batch size."""

from __future__ import annotations

import pytest

from instseg.engine.optim import scale_lr


def test_scale_lr_linear_for_sgd_sqrt_for_adamw() -> None:
    assert scale_lr(0.02, "sgd", 4, 16) == pytest.approx(0.005)
    assert scale_lr(1e-3, "adamw", 8, 2) == pytest.approx(2e-3)
    assert scale_lr(1e-3, "adamw", 2, 2) == 1e-3
    assert scale_lr(1e-3, "adamw", 1, 0) == 1e-3  # a missing reference batch means "as given"
