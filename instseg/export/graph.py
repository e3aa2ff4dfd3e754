"""In-graph operations of the exported models: exact equivalents of the eager pre- and
post-processing whose sizes are computed from the input's shape (so one file takes images of
any size), written with ops that the TorchScript-based ONNX exporter (``dynamo=False``) records.

Conventions: images enter as uint8 ``(H, W, 3)`` RGB; sizes are 0-dim int64 tensors while
tracing (plain ints in eager runs); boxes xyxy absolute pixels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "export_symbolics", "hat_weights", "image_size", "overlap_counts", "pad_to_multiple", "paste_boxes", "resize_by", "to_float_chw",
]  # fmt: skip


def image_size(image: Tensor) -> tuple[Tensor, Tensor]:
    """``(H, W)`` of an ``(H, W, 3)`` image as 0-dim int64 tensors (traced: read from the
    input's shape in the graph, so the file takes any size)."""
    return torch.as_tensor(image.shape[0]), torch.as_tensor(image.shape[1])


def to_float_chw(image: Tensor) -> Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(1, 3, H, W)`` in [0, 1] (the eager ``Predictor``'s
    conversion)."""
    return image.permute(2, 0, 1)[None].to(torch.float32) / 255.0


def pad_to_multiple(x: Tensor, divisor: int) -> Tensor:
    """Zero-pad ``(B, C, h, w)`` at the bottom and right to multiples of ``divisor``."""
    h, w = x.shape[-2], x.shape[-1]
    ph = (h + divisor - 1) // divisor * divisor - h
    pw = (w + divisor - 1) // divisor * divisor - w
    return F.pad(x, [0, pw, 0, ph])  # type: ignore[list-item]


class _ResizeByScales(torch.autograd.Function):
    """Bilinear resize of ``(1, C, h, w)`` by given (data-dependent) factors, half-pixel
    centers: output ``(1, C, floor(h * scale_h), floor(w * scale_w))``, output pixel ``y``
    samples input ``(y + 0.5) / scale - 0.5`` (PyTorch's ``scale_factor`` with
    ``recompute_scale_factor=False``; ONNX ``Resize`` with a ``scales`` input). Masks go in
    as the channels of one image: ONNX Runtime's and OpenVINO's fast layout for many small
    maps (as a batch of one-channel images both are 2-6x slower)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale_h: Tensor, scale_w: Tensor) -> Tensor:  # type: ignore[override]
        if x.shape[1] == 0:  # no channels: PyTorch's kernel refuses, ONNX Resize does not
            oh, ow = math.floor(x.shape[2] * float(scale_h)), math.floor(x.shape[3] * float(scale_w))
            return x.new_zeros(x.shape[0], 0, oh, ow)
        return F.interpolate(
            x, scale_factor=(float(scale_h), float(scale_w)), mode="bilinear",
            align_corners=False, recompute_scale_factor=False,
        )  # fmt: skip

    @staticmethod
    def symbolic(g, x, scale_h, scale_w):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN205
        def flat(t):  # noqa: ANN001, ANN202
            t = g.op("Cast", t, to_i=1)  # float
            return g.op("Reshape", t, g.op("Constant", value_t=torch.tensor([1])))

        ones = g.op("Constant", value_t=torch.ones(2, dtype=torch.float32))
        scales = g.op("Concat", ones, flat(scale_h), flat(scale_w), axis_i=0)
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op(
            "Resize", x, roi, scales, mode_s="linear",
            coordinate_transformation_mode_s="half_pixel", nearest_mode_s="floor",
        )  # fmt: skip


def resize_by(x: Tensor, scale_h: Tensor, scale_w: Tensor) -> Tensor:
    """``(1, C, h, w)`` -> ``(1, C, floor(h * scale_h), floor(w * scale_w))`` bilinear, with
    the factors (0-dim tensors) in the graph (:class:`_ResizeByScales`)."""
    return _ResizeByScales.apply(x, scale_h, scale_w)  # type: ignore[no-any-return]


class _IntMatMul(torch.autograd.Function):
    """``(M, D) uint8 @ (D, N) int8`` with 0/1 entries -> exact int32 counts (ONNX
    ``MatMulInteger``: on CPUs with VNNI about 4x faster than a float32 product)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        return (a.to(torch.float32) @ b.to(torch.float32)).to(torch.int32)

    @staticmethod
    def symbolic(g, a, b):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN205
        return g.op("MatMulInteger", a, b)


def overlap_counts(binary: Tensor) -> Tensor:
    """Exact pairwise intersections ``(M, M)`` int32 of uint8 0/1 rows ``(M, P)`` on and above
    the diagonal (two row blocks: 3/4 of the full product; below it 0)."""
    m = binary.shape[0]
    half = m // 2
    cols = binary.t().to(torch.int8)
    top = _IntMatMul.apply(binary[:half], cols)  # (half, M)
    bottom = _IntMatMul.apply(binary[half:], cols[:, half:])  # (M - half, M - half)
    bottom = torch.cat([torch.zeros_like(bottom[:, :half]), bottom], 1)  # M - half >= half
    return torch.cat([top, bottom], 0)


def hat_weights(src: Tensor, length: int) -> Tensor:
    """Bilinear interpolation weights ``(..., length)`` of source positions ``src (...)``
    (clamped to ``[0, length - 1]``, as PyTorch clamps): ``max(0, 1 - |src - j|)``."""
    j = torch.arange(length, dtype=src.dtype, device=src.device)
    src = src.clamp(min=0.0, max=float(length - 1))
    return (1.0 - (src[..., None] - j).abs()).clamp(min=0.0)


def paste_boxes(masks: Tensor, boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """torchvision's ``paste_masks_in_image`` (padding 1) as two batched matmuls: soft masks
    ``(N, M, M)`` of xyxy ``boxes (N, 4)`` in image pixels -> ``(N, H, W)`` probabilities.

    Each mask, padded by one zero pixel and its box grown by ``(M + 2) / M``, is resized
    bilinearly to its integer box ``(x0..x1, y0..y1)`` (inclusive) and placed there; pixels
    outside the box are 0. Row weights ``Ry (N, H, M + 2)`` and column weights
    ``Rx (N, W, M + 2)`` make it ``Ry @ mask @ Rx^T``."""
    m = masks.shape[-1]
    padded = F.pad(masks, [1, 1, 1, 1])
    scale = (m + 2.0) / m
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx, cy = (boxes[:, 2] + boxes[:, 0]) * 0.5, (boxes[:, 3] + boxes[:, 1]) * 0.5
    x0, x1 = (cx - half_w).to(torch.int64), (cx + half_w).to(torch.int64)  # trunc, as torchvision
    y0, y1 = (cy - half_h).to(torch.int64), (cy + half_h).to(torch.int64)
    ry = _axis_weights(y0, y1, height, m + 2)
    rx = _axis_weights(x0, x1, width, m + 2)
    return ry @ padded @ rx.transpose(1, 2)


def _axis_weights(lo: Tensor, hi: Tensor, length: Tensor, cells: int) -> Tensor:
    """``(N, length, cells)`` weights of image pixels ``0..length-1`` on one axis for boxes
    ``lo..hi`` (inclusive ints): pixel ``p`` of a box of ``n = hi - lo + 1`` pixels samples
    the mask at ``(p - lo + 0.5) * cells / n - 0.5``; pixels outside the box weigh 0."""
    n = (hi - lo + 1).clamp(min=1).to(torch.float32)
    p = torch.arange(length, device=lo.device)[None, :]  # type: ignore[call-overload]
    inside = (p >= lo[:, None]) & (p <= hi[:, None])
    src = ((p - lo[:, None]).to(torch.float32) + 0.5) * (cells / n[:, None]) - 0.5
    return hat_weights(src, cells) * inside[..., None].to(torch.float32)


def _group_norm(g, x, num_groups, weight, bias, eps, cudnn_enabled):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202, ARG001
    """``aten::group_norm`` of ``(N, C, H, W)`` without reshapes: per-channel means over H, W,
    then group means by a grouped 1x1 convolution, two passes (mean, then variance of the
    centred values). torch's own symbolic reshapes to ``(0, G, -1)``, which ONNX Runtime
    cannot do on an empty batch (Mask R-CNN's mask head when nothing is detected); on this
    machine both run the light SOLOv2 equally fast."""
    from torch.onnx import symbolic_helper as sh

    groups, epsilon = sh._get_const(num_groups, "i", "num_groups"), sh._get_const(eps, "f", "eps")
    channels = int(sh._get_tensor_dim_size(weight, 0))  # type: ignore[arg-type]
    cg = channels // groups
    # grouped 1x1 convolution: each channel's mean -> the mean of its group, on every channel
    mix = g.op("Constant", value_t=torch.full((channels, cg, 1, 1), 1.0 / cg))

    def group_mean(t):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        if g.opset >= 18:  # axes became an input
            mean = g.op("ReduceMean", t, g.op("Constant", value_t=torch.tensor([2, 3])), keepdims_i=1)
        else:
            mean = g.op("ReduceMean", t, axes_i=[2, 3], keepdims_i=1)
        return g.op("Conv", mean, mix, group_i=groups)

    centred = g.op("Sub", x, group_mean(x))
    var = group_mean(g.op("Mul", centred, centred))
    eps_t = g.op("Constant", value_t=torch.tensor(epsilon, dtype=torch.float32))
    scale = g.op("Div", g.op("Reshape", weight, g.op("Constant", value_t=torch.tensor([channels, 1, 1]))),
                 g.op("Sqrt", g.op("Add", var, eps_t)))  # fmt: skip
    return g.op("Add", g.op("Mul", centred, scale),
                g.op("Reshape", bias, g.op("Constant", value_t=torch.tensor([channels, 1, 1]))))  # fmt: skip


@contextlib.contextmanager
def export_symbolics(opset: int) -> Iterator[None]:
    """Within the block the ONNX exporter writes ``aten::group_norm`` with
    :func:`_group_norm` (empty batches allowed); torch's own symbolic is restored after."""
    torch.onnx.register_custom_op_symbolic("aten::group_norm", _group_norm, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::group_norm", opset)
