"""SOLOv2 as one ONNX-exportable module: uint8 image ``(H, W, 3)`` in; masks, boxes, labels,
scores out, with the eager model's resize, normalisation, Matrix NMS and mask upsampling in the
graph (:class:`SOLOv2Export`). It wraps the model's public tensor API (``network``,
``decode``) and :mod:`instseg.models.solov2.post`'s steps; the model holds no export code."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from instseg.export.graph import (
    image_size,
    overlap_counts,
    pad_to_multiple,
    resize_by,
    to_float_chw,
)
from instseg.masks import masks_to_boxes
from instseg.models.solov2 import SOLOv2, nms
from instseg.models.solov2.post import MASK_STRIDE, select_cells

__all__ = ["SOLOv2Export", "uint8_iou"]


class SOLOv2Export(nn.Module):
    """``forward(image uint8 (H, W, 3)) -> (masks bool (N, H, W), boxes float (N, 4) xyxy,
    labels int64 (N,) 0..K-1, scores float (N,) descending)``, equal to ``model.predict`` of the
    same image (up to float rounding). Thresholds are the model's at construction time."""

    def __init__(self, model: SOLOv2) -> None:
        super().__init__()
        self.model = model.eval()
        self.cfg = model.post_config()

    def _resized_size(self, h: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """The eager ``preprocess`` size rule, in float64 like Python's arithmetic."""
        m = self.model
        hf, wf = h.to(torch.float64), w.to(torch.float64)
        cap = m.max_size / torch.maximum(hf, wf)
        if m.input_scale is None:
            scale = torch.minimum(m.min_size / torch.minimum(hf, wf), cap)
        else:
            scale = torch.clamp(cap, max=float(m.input_scale))
        return (torch.round(hf * scale).clamp(min=1).to(torch.int64),
                torch.round(wf * scale).clamp(min=1).to(torch.int64))  # fmt: skip

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m, cfg = self.model, self.cfg
        h, w = image_size(image)
        oh, ow = self._resized_size(h, w)
        x = torch.nn.functional.interpolate(
            to_float_chw(image), size=(oh, ow), mode="bilinear", align_corners=False  # type: ignore[arg-type]
        )
        x = pad_to_multiple((x - m.image_mean) / m.image_std, m.size_divisible)
        padded = (x.shape[-2], x.shape[-1])
        raw = m.decode(m.network(x), padded, [(oh, ow)], [(h, w)])  # type: ignore[list-item]
        feats = raw.feats[0][0]  # (E, fh, fw)
        fh, fw = feats.shape[-2], feats.shape[-1]
        flat = feats.reshape(feats.shape[0], -1)
        top, cells, labels = select_cells(raw.scores[0], cfg)
        kernels = raw.kernels[0][0][cells]  # (M, E)
        probs = torch.sigmoid(kernels @ flat)  # (M, fh * fw)
        binary = (probs > cfg.mask_threshold).to(torch.uint8)
        binf = binary.to(torch.float32)
        area = binf.sum(1)
        maskness = (probs * binf).sum(1) / area.clamp(min=1)
        # candidates under the min area drop out with score -1 (below any update threshold)
        scores = torch.where(area > raw.cell_strides[cells], top * maskness, -torch.ones_like(top))
        decayed = nms.matrix_nms(binary, labels, scores, cfg.nms_kernel, cfg.nms_sigma, uint8_iou)
        keep = torch.nonzero(decayed >= cfg.update_threshold).reshape(-1)
        sc, order = decayed[keep].sort(descending=True)
        order, sc = keep[order[: cfg.max_detections]], sc[: cfg.max_detections]
        # the kept masks as the channels of one image (1, N, fh, fw), cropped to the image's cells
        soft = torch.sigmoid(kernels[order] @ flat).reshape(1, -1, fh, fw)
        st = MASK_STRIDE
        soft = soft[:, :, : (oh + st - 1) // st, : (ow + st - 1) // st]
        # the eager scale st * H / resized, a hair larger so floor(cells * scale) >= H
        up = resize_by(soft, st * h / oh * (1 + 1e-6), st * w / ow * (1 + 1e-6))
        up = up.reshape(-1, up.shape[2], up.shape[3])  # (N, Hc, Wc): a reshape, no copy
        masks = (up > cfg.mask_threshold)[:, :h, :w]  # type: ignore[misc]  # bool, then sliced
        return masks, masks_to_boxes(masks), labels[order], sc


def uint8_iou(binary: Tensor) -> Tensor:
    """Pairwise IoU ``(M, M)`` of uint8 0/1 masks ``(M, P)`` on and above the diagonal, from
    exact integer intersections (``MatMulInteger`` in the graph)."""
    inter = overlap_counts(binary).to(torch.float32)
    area = inter.diagonal()
    return inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6)
