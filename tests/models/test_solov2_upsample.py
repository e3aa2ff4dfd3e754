"""SOLOv2's kept-mask upsampling (``mask_upsample``): bilinear on probabilities (the paper)
or bicubic on logits, against direct computations. Flips, ONNX export and overfitting run the
logit-bicubic mode as the ``prior_votes_bicubic`` entry of ``test_solov2.VARIANTS``."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from instseg.models.solov2_post import PostConfig, paste_masks
from tests.models.test_solov2 import tiny_model


def test_logit_bicubic_upsampling_thresholds_interpolated_logits() -> None:
    """``mask_upsample="logit_bicubic"``: a pixel is in the mask where the bicubic
    interpolation of the logits exceeds the threshold's logit (computed here directly); the
    default stays bilinear on the probabilities; unknown modes are refused."""
    torch.manual_seed(0)
    soft = torch.sigmoid(3 * torch.randn(3, 8, 10))
    cfg = PostConfig(mask_threshold=0.4, max_detections=3)
    got = paste_masks(soft, (32, 40), (48, 60), replace(cfg, mask_upsample="logit_bicubic"))
    logits = torch.logit(soft.double())
    up = F.interpolate(logits[:, None], size=(48, 60), mode="bicubic", align_corners=False)
    want = up[:, 0] > math.log(0.4 / 0.6)
    assert got.shape == (3, 48, 60) and (got == want).float().mean() > 0.999
    plain = paste_masks(soft, (32, 40), (48, 60), cfg)
    bilinear = F.interpolate(soft[:, None], size=(48, 60), mode="bilinear", align_corners=False)
    assert (plain == (bilinear[:, 0] > 0.4)).float().mean() > 0.999
    assert not torch.equal(plain, got)
    with pytest.raises(ValueError, match="mask_upsample"):
        tiny_model(mask_upsample="nearest")
