"""The in-graph operations equal the eager code they replace, in PyTorch and in ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instseg.export.graph import export_symbolics, overlap_counts, paste_boxes, resize_by

ort = pytest.importorskip("onnxruntime")


def run_onnx(module: nn.Module, args: tuple[Tensor, ...], path: Path, axes: dict[str, dict[int, str]]) -> list[np.ndarray]:
    """Export ``module`` (inputs ``x0, x1, ...``) and run it on ``args`` with ONNX Runtime."""
    names = [f"x{i}" for i in range(len(args))]
    with torch.no_grad(), warnings.catch_warnings(), export_symbolics(17):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17,
                          input_names=names, dynamic_axes=axes)  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: a.numpy() for n, a in zip(names, args)})  # type: ignore[no-any-return]


class Paste(nn.Module):
    def forward(self, masks: Tensor, boxes: Tensor, image: Tensor) -> Tensor:
        return paste_boxes(masks, boxes, torch.as_tensor(image.shape[0]), torch.as_tensor(image.shape[1]))


def test_paste_boxes_is_torchvisions_paste(tmp_path: Path) -> None:
    """Boxes inside, across the border and of one pixel: the same probabilities as
    ``paste_masks_in_image`` (eager and in ONNX Runtime, at another image size than traced)."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 28, 28, generator=g)
    boxes = torch.tensor([[3.2, 4.7, 30.1, 20.9], [-5.0, -3.0, 12.0, 9.0], [40.0, 30.0, 70.0, 60.0],
                          [10.0, 10.0, 10.4, 10.6], [0.0, 0.0, 63.0, 47.0]])  # fmt: skip
    want = paste_masks_in_image(masks[:, None], boxes, (48, 64))[:, 0]
    got = Paste()(masks, boxes, torch.zeros(48, 64))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    image = torch.zeros(48, 64)
    axes = {"x0": {0: "n"}, "x1": {0: "n"}, "x2": {0: "h", 1: "w"}}
    run_onnx(Paste(), (masks, boxes, image), tmp_path / "paste.onnx", axes)
    session = ort.InferenceSession(str(tmp_path / "paste.onnx"), providers=["CPUExecutionProvider"])
    other = session.run(None, {"x0": masks[:3].numpy(), "x1": boxes[:3].numpy(), "x2": np.zeros((40, 50), np.float32)})[0]
    want = paste_masks_in_image(masks[:3, None], boxes[:3], (40, 50))[:, 0]
    np.testing.assert_allclose(other, want.numpy(), atol=1e-5)


class Resize(nn.Module):
    def forward(self, x: Tensor, sh: Tensor, sw: Tensor) -> Tensor:
        return resize_by(x, sh, sw)


def test_resize_by_samples_like_scale_factor(tmp_path: Path) -> None:
    """Resize by data-dependent factors == ``F.interpolate(scale_factor=...,
    recompute_scale_factor=False)``, also in ONNX Runtime with other factors than traced."""
    x = torch.rand(1, 4, 13, 17)
    for sh, sw in ((4.0, 4.0), (3.1, 2.7)):
        want = F.interpolate(x, scale_factor=(sh, sw), mode="bilinear",
                             align_corners=False, recompute_scale_factor=False)  # fmt: skip
        got = Resize()(x, torch.tensor(sh), torch.tensor(sw))
        torch.testing.assert_close(got, want)
    axes = {"x0": {1: "c", 2: "h", 3: "w"}}
    run_onnx(Resize(), (x, torch.tensor(4.0), torch.tensor(4.0)), tmp_path / "r.onnx", axes)
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x0": x.numpy(), "x1": np.array(3.1, np.float32), "x2": np.array(2.7, np.float32)})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    empty = session.run(None, {"x0": np.zeros((1, 0, 13, 17), np.float32), "x1": np.array(2.0, np.float32), "x2": np.array(2.0, np.float32)})[0]
    assert empty.shape == (1, 0, 26, 34)


class Overlaps(nn.Module):
    def forward(self, b: Tensor) -> Tensor:
        return overlap_counts(b)


@pytest.mark.parametrize("m", [1, 2, 7])
def test_overlap_counts_are_exact_on_and_above_the_diagonal(tmp_path: Path, m: int) -> None:
    binary = (torch.rand(m, 300) > 0.5).to(torch.uint8)
    full = binary.long() @ binary.long().t()
    got = Overlaps()(binary)
    assert torch.equal(got.triu().long(), full.triu())
    onnx_out = run_onnx(Overlaps(), (binary,), tmp_path / "o.onnx", {"x0": {0: "m"}})[0]
    assert np.array_equal(np.triu(onnx_out), full.triu().numpy())


class GN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(4, 12)
        nn.init.normal_(self.norm.weight)
        nn.init.normal_(self.norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


def test_group_norm_symbolic_matches_and_takes_an_empty_batch(tmp_path: Path) -> None:
    """The exported GroupNorm equals PyTorch's, and runs on a batch of 0 (torch's own
    symbolic reshapes to (0, G, -1), which ONNX Runtime refuses)."""
    model = GN().eval()
    x = torch.randn(2, 12, 5, 7) * 3 + 1
    got = run_onnx(model, (x,), tmp_path / "gn.onnx", {"x0": {0: "n", 2: "h", 3: "w"}})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)
    session = ort.InferenceSession(str(tmp_path / "gn.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x0": np.zeros((0, 12, 5, 7), np.float32)})[0].shape == (0, 12, 5, 7)
