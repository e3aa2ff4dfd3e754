"""SOLOv2 (Wang et al., NeurIPS 2020): segment objects by locations, no boxes, no RoIs.

Reading order, image -> masks:
    1. ``_preprocess``: resize (short side ``min_size``, long side <= ``max_size``; or a fixed
       ``input_scale``, ``train_input_scale`` in ``losses``), normalize, pad to a multiple of
       32 -> ``(B, 3, Hp, Wp)``.
    2. backbone + FPN -> P2..P6 (strides 4..64).
    3. :class:`SOLOv2Head` (:mod:`.heads`): per level, features (+2 CoordConv
       channels) resized to an ``S x S`` grid (or fixed-size cells: ``grid_canvas``,
       :meth:`SOLOv2.grid_shapes`);
       a category branch gives ``(B, K, S, S)`` class logits, a kernel branch
       ``(B, E, S, S)`` dynamic 1x1 kernels (+5 coefficients of the optional position prior,
       :mod:`.prior`: a pixel-unit quadratic around each cell, added to its mask; +3
       with ``center_votes``: the cell's object center and a sharpness).
    4. :class:`MaskFeatureHead`: P2..P5 fused at 1/4 scale -> ``(B, E, Hp/4, Wp/4)`` (+2
       channels with ``center_votes``: each pixel's offset to its object's center).
    5. mask of cell c = sigmoid(kernel_c . mask_features): one matmul.
    6. training: :func:`assign.assign_targets` (center sampling) -> focal + Dice losses (+ L1 of
       the center votes); inference: 2x2 point NMS on cell scores (``point_nms``), then
       :mod:`.post` (top-k, min-area filter, maskness rescoring, Matrix NMS, upsample to
       the original size).

Public tensor API (what test-time augmentation, calibration and export wrap):
``preprocess`` -> ``network`` -> ``decode`` (together ``forward_raw``: a :class:`SOLOv2Raw`)
-> ``postprocess`` (``list[Instances]``); ``predict`` is the two in a row, ``detect`` the
tensors-only equivalent.

Conventions: boxes xyxy absolute pixels; masks bool ``(N, H, W)``; labels 0..K-1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.solov2 import assign, losses, nms, prior, targets
from instseg.models.solov2.heads import MaskFeatureHead, SOLOv2Head
from instseg.models.solov2.losses import dice_loss_logits
from instseg.models.solov2.post import MASK_STRIDE, PostConfig, SOLOv2Raw, postprocess_batch
from instseg.structures import Instances

__all__ = [
    "GRIDS",
    "SCALE_RANGES",
    "STRIDES",
    "MaskFeatureHead",
    "SOLOv2",
    "SOLOv2Head",
    "SOLOv2Raw",
    "to_instances",
]  # the heads live in solov2_heads (re-exported here)

#: paper defaults for P2..P6; ``STRIDES`` only sets the min-area filter (a candidate's
#: 1/4-scale mask must cover more pixels than its level's value)
GRIDS = (40, 36, 24, 16, 12)
SCALE_RANGES = ((1.0, 96.0), (48.0, 192.0), (96.0, 384.0), (192.0, 768.0), (384.0, 2048.0))
STRIDES = (8, 8, 16, 32, 32)


class SOLOv2(nn.Module):
    """SOLOv2 instance segmentation. ``backbone(x) -> dict`` of 5 maps (P2..P6, strides 4..64)
    with ``backbone.out_channels``. See the module docstring for the data flow and
    ``losses`` / ``predict`` for the shared model contract."""

    image_mean: Tensor
    image_std: Tensor
    #: model family (the zoo's and the test-time augmentation wrappers' key)
    family = "solov2"
    #: input pixels per mask-feature pixel
    mask_stride = MASK_STRIDE

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        head_channels: int = 256,
        stacked_convs: int = 4,
        kernel_channels: int = 128,
        mask_channels: int = 128,
        num_grids: tuple[int, ...] = GRIDS,
        scale_ranges: tuple[tuple[float, float], ...] = SCALE_RANGES,
        strides: tuple[int, ...] = STRIDES,
        sigma: float = 0.2,
        min_size: int = 800,
        max_size: int = 1333,
        input_scale: float | None = None,
        train_input_scale: float | None = None,
        size_divisible: int = 32,
        image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        cate_loss_weight: float = 1.0,
        mask_loss_weight: float = 3.0,
        score_threshold: float = 0.1,
        mask_threshold: float = 0.5,
        nms_pre: int = 500,
        update_threshold: float = 0.05,
        max_detections: int = 100,
        nms_kernel: str = "gaussian",
        nms_sigma: float = 2.0,
        channels_last: bool = True,
        position_prior: bool = False,
        grid_canvas: int | None = None,
        point_nms: bool = True,
        center_votes: bool = False,
        vote_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not (len(num_grids) == len(scale_ranges) == len(strides) == 5):
            raise ValueError(
                "SOLOv2 needs 5 levels: num_grids, scale_ranges and strides of length 5"
            )
        if train_input_scale is not None and input_scale is None:
            raise ValueError("train_input_scale needs input_scale (the fixed-scale mode)")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.config: dict[str, Any] = {}
        # center votes: pixels vote for their object's center, cells predict theirs and a
        # sharpness; the mask logit falls with the distance between the two (:mod:`.prior`)
        self.position_prior, self.center_votes = bool(position_prior), bool(center_votes)
        self.vote_loss_weight = vote_loss_weight
        self._build_heads(head_channels, stacked_convs, kernel_channels, mask_channels)
        self.num_grids = tuple(int(s) for s in num_grids)
        self.scale_ranges = tuple((float(a), float(b)) for a, b in scale_ranges)
        self.prior_units = prior.prior_units(self.scale_ranges)
        # fixed-size cells: num_grids are the grids of a grid_canvas x grid_canvas input
        self.grid_canvas = None if grid_canvas is None else int(grid_canvas)
        self.strides = tuple(int(s) for s in strides)
        self.sigma = sigma
        self.min_size, self.max_size, self.size_divisible = min_size, max_size, size_divisible
        # losses() may resize by another fixed factor than predict() (cheaper CPU steps; the
        # fixed-size cells and pixel-unit prior see the same geometry at both scales)
        self.input_scale, self.train_input_scale = input_scale, train_input_scale
        self.register_buffer("image_mean", torch.tensor(image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(3, 1, 1), persistent=False)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.cate_loss_weight, self.mask_loss_weight = cate_loss_weight, mask_loss_weight
        self.score_threshold, self.mask_threshold = score_threshold, mask_threshold
        self.nms_pre, self.update_threshold = nms_pre, update_threshold
        self.max_detections = max_detections
        self.nms_kernel, self.nms_sigma = nms_kernel, nms_sigma
        # SOLO's 2x2 max filter on cell scores; off for crowded small objects, whose
        # neighbouring cells hold different objects (Matrix NMS removes duplicates anyway)
        self.point_nms = bool(point_nms)
        # NHWC convolutions: faster CPU inference (oneDNN); fine on GPU
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _build_heads(
        self, head_channels: int, stacked_convs: int, kernel_channels: int, mask_channels: int
    ) -> None:
        """The category / kernel head and the mask-feature head, with the kernel channels of
        the position prior and the center votes."""
        channels = int(self.backbone.out_channels)  # type: ignore[arg-type]
        extra = prior.NUM_COEFS if self.position_prior else 0
        extra += prior.NUM_VOTE_PARAMS if self.center_votes else 0
        self.head = SOLOv2Head(
            channels, self.num_classes, head_channels, stacked_convs, kernel_channels + extra
        )
        bias = self.head.kernel_pred.bias
        assert bias is not None
        if self.position_prior:  # start as a mild round bump on each cell (a_xx = a_yy = -1)
            nn.init.constant_(bias[kernel_channels : kernel_channels + 2], -1.0)
        if self.center_votes:  # a mild vote term at first (softplus(-1) = 0.31)
            nn.init.constant_(bias[kernel_channels + extra - 3], -1.0)
        self.mask_head = MaskFeatureHead(
            channels, mask_channels, kernel_channels, votes=self.center_votes
        )

    # -- shared pieces ----------------------------------------------------------------------
    def preprocess(
        self, images: list[Tensor], input_scale: float | None = None, train: bool = False
    ) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images ``(3, H, W)`` in [0, 1] -> padded batch ``(B, 3, Hp, Wp)`` and resized sizes
        (``input_scale`` instead of the model's fixed scale, e.g. for scale test-time
        augmentation; ``train``: at ``train_input_scale`` when set)."""
        fixed = self.input_scale if input_scale is None else input_scale
        if train and self.train_input_scale:
            fixed = self.train_input_scale
        if len(images) == 0:
            raise ValueError("SOLOv2: empty image list")
        resized, sizes = [], []
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"SOLOv2: images must be (3, H, W), got {tuple(img.shape)}")
            h, w = int(img.shape[-2]), int(img.shape[-1])
            if fixed is None:
                scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
            else:  # one fixed scale for every image (long side still <= max_size)
                scale = min(float(fixed), self.max_size / max(h, w))
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = img.to(self.image_mean.device, torch.float32)
            if size != (h, w):
                x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
            resized.append((x - self.image_mean) / self.image_std)
            sizes.append(size)
        d = self.size_divisible
        hp = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        wp = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = resized[0].new_zeros((len(images), 3, hp, wp))
        for b, x in enumerate(resized):
            batch[b, :, : x.shape[1], : x.shape[2]] = x
        return batch, sizes

    def grid_shapes(self, padded: tuple[int, int]) -> list[tuple[int, int]]:
        """Grid ``(rows, cols)`` per level for a padded input ``(Hp, Wp)``: ``S x S`` over the
        input (the paper), or with ``grid_canvas`` cells of a fixed pixel size
        (``round(Hp * S / canvas)`` x ``round(Wp * S / canvas)``), so that a model trained on
        crops sees the same cells on whole images of any size."""
        return assign.grid_shapes(self.num_grids, padded, self.grid_canvas)

    def network(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Padded batch ``(B, 3, Hp, Wp)`` -> per level class logits ``(B, K, rows, cols)`` and
        kernels ``(B, E', rows, cols)``, and the mask features ``(B, E, Hp/s, Wp/s)``."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = self.backbone(batch)
        feats = list(out.values()) if isinstance(out, dict) else list(out)
        cates, kernels = self.head(feats, self.grid_shapes((batch.shape[-2], batch.shape[-1])))
        return cates, kernels, self.mask_head(feats[:4])

    def mask_operands(self, kernels: Tensor, mask_feat: Tensor) -> tuple[Tensor, Tensor]:
        """Flat kernels ``(B, C, E')`` and mask features ``(B, E, h, w)`` (``h = Hp / mask_stride``)
        (``E + 2`` channels with ``center_votes``) -> the two sides of the mask matmul:
        ``(B, C, E'')`` and ``(B, E'', h, w)`` (the position prior adds 6:
        :func:`prior.expand` coefficients and monomial channels; center votes 4:
        :func:`prior.expand_votes` and :func:`prior.vote_channels`)."""
        if not (self.position_prior or self.center_votes):
            return kernels, mask_feat
        fh, fw = mask_feat.shape[-2:]
        padded = (self.mask_stride * fh, self.mask_stride * fw)
        return prior.mask_operands(
            kernels, mask_feat, self.grid_shapes(padded), self.prior_units, self.mask_stride,
            self.position_prior, self.center_votes,
        )  # fmt: skip

    def cell_scores(self, probs: list[Tensor]) -> Tensor:
        """Per-level class probabilities ``(B, K, S, S)`` -> class scores ``(B, C, K)`` (2x2
        point NMS when ``point_nms``)."""
        return self.flatten([nms.points_nms(p) if self.point_nms else p for p in probs])

    @staticmethod
    def flatten(preds: list[Tensor]) -> Tensor:
        """Per-level ``(B, C, S, S)`` -> ``(B, sum S^2, C)`` (cell index ``r * S + c``)."""
        return torch.cat(
            [p.permute(0, 2, 3, 1).reshape(p.shape[0], -1, p.shape[1]) for p in preds], 1
        )

    # -- training ---------------------------------------------------------------------------
    def _image_targets(
        self, target: Instances, size: tuple[int, int], padded: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Cell labels / cell GT indices (see :func:`assign.assign_targets`) and soft masks
        ``(N, Hp/s, Wp/s)`` (``s = mask_stride``, area-averaged) of one image's ground truth,
        in network-input coordinates."""
        device = self.image_mean.device
        h, w = target.image_size
        n = len(target)
        if target.masks is None and n > 0:
            raise ValueError("SOLOv2 needs instance masks in its targets")
        masks = target.masks if target.masks is not None else torch.zeros(0, h, w, dtype=torch.bool)
        # masks resized like the image, padded, pooled to 1/s (targets); on a CPU
        # inside each object's box, on an accelerator all at full size
        if device.type == "cpu":
            soft, centers = targets.soft_masks(masks, size, padded, self.mask_stride)
        else:
            soft, centers = targets.soft_masks_dense(
                masks.to(device), size, padded, self.mask_stride
            )
        sy, sx = size[0] / h, size[1] / w
        boxes = target.boxes.to(device) * torch.tensor([sx, sy, sx, sy], device=device)
        box_centers = torch.stack([boxes[:, 1] + boxes[:, 3], boxes[:, 0] + boxes[:, 2]], 1) / 2
        centers = torch.where(torch.isnan(centers), box_centers, centers)
        assert target.iscrowd is not None
        cell_labels, cell_gt = assign.assign_targets(
            boxes.cpu(),
            centers.cpu(),
            target.labels.cpu(),
            target.iscrowd.cpu(),
            padded,
            self.num_classes,
            self.grid_shapes(padded),
            self.scale_ranges,
            self.sigma,
        )
        return cell_labels.to(device), cell_gt.to(device), soft

    def losses(self, images: list[Tensor], targets: list[Instances]) -> dict[str, Tensor]:
        """``{"loss_cate", "loss_mask"}`` scalars: focal loss over all cells / (positives + 1),
        Dice loss averaged over positive cells; with ``center_votes`` also ``"loss_vote"``: L1 of the
        predicted center offsets on foreground pixels (:func:`prior.vote_targets`).
        Crowd objects only mark ignored cells."""
        if len(images) != len(targets):
            raise ValueError(f"SOLOv2.losses: {len(images)} images but {len(targets)} targets")
        batch, sizes = self.preprocess(images, train=True)
        cates, kernels, mask_feat = self.network(batch)
        cate_flat = self.flatten(cates)
        votes = mask_feat[:, -2:] if self.center_votes else None
        kernel_flat, mask_feat = self.mask_operands(self.flatten(kernels), mask_feat)
        padded = (batch.shape[-2], batch.shape[-1])
        labels, dice = [], []
        vote_sum, vote_pixels = batch.new_zeros(()), 0
        for b, (target, size) in enumerate(zip(targets, sizes)):
            cell_labels, cell_gt, soft = self._image_targets(target, size, padded)
            labels.append(cell_labels)
            if votes is not None:
                v_sum, v_pixels = prior.vote_l1(
                    votes[b], soft, self.mask_stride, self.prior_units[0]
                )
                vote_sum, vote_pixels = vote_sum + v_sum, vote_pixels + v_pixels
            pos = cell_gt >= 0
            if bool(pos.any()):
                logits = (kernel_flat[b][pos] @ mask_feat[b].flatten(1)).float()  # fp32 Dice sums
                dice.append(dice_loss_logits(logits, soft, cell_gt[pos]))
        all_labels = torch.cat(labels)
        num_pos = int(((all_labels >= 0) & (all_labels < self.num_classes)).sum())
        focal = losses.focal_loss(
            cate_flat.reshape(-1, self.num_classes), all_labels, self.focal_alpha, self.focal_gamma
        )
        loss_cate = self.cate_loss_weight * focal / (num_pos + 1)
        if dice:
            loss_mask = self.mask_loss_weight * torch.cat(dice).mean()
        else:  # keep every head parameter in the graph
            loss_mask = 0.0 * (kernel_flat.sum() + mask_feat.sum())
        out = {"loss_cate": loss_cate, "loss_mask": loss_mask}
        if votes is not None:  # mean L1 per foreground pixel (both offsets summed)
            vote_sum = vote_sum + 0.0 * votes.sum()  # keeps the head in the graph
            out["loss_vote"] = self.vote_loss_weight * vote_sum / max(vote_pixels, 1)
        return out

    # -- inference: the public tensor API ---------------------------------------------------
    def decode(
        self,
        outputs: tuple[list[Tensor], list[Tensor], Tensor],
        padded: tuple[int, int],
        sizes: list[tuple[int, int]],
        image_sizes: list[tuple[int, int]],
    ) -> SOLOv2Raw:
        """:meth:`network` outputs of a padded ``(Hp, Wp)`` batch -> :class:`SOLOv2Raw` (one
        view): cell scores, the mask matmul's operands, the cells' min-area values."""
        cates, kernels, mask_feat = outputs
        scores = self.cell_scores([torch.sigmoid(c) for c in cates])
        kernel_flat, feats = self.mask_operands(self.flatten(kernels), mask_feat)
        strides = self.cell_strides(padded, feats.device)
        return SOLOv2Raw(scores, [kernel_flat], [feats], strides, sizes, image_sizes)

    def forward_raw(self, images: list[Tensor], input_scale: float | None = None) -> SOLOv2Raw:
        """Images ``(3, H, W)`` in [0, 1] -> the network's raw outputs (:class:`SOLOv2Raw`),
        at the model's input scale or ``input_scale``. Call under ``torch.no_grad()``."""
        batch, sizes = self.preprocess(images, input_scale)
        padded = (int(batch.shape[-2]), int(batch.shape[-1]))
        originals = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        return self.decode(self.network(batch), padded, sizes, originals)

    def post_config(self) -> PostConfig:
        """The inference thresholds of :mod:`.post` from this model's attributes."""
        return PostConfig(
            self.score_threshold, self.mask_threshold, self.nms_pre, self.update_threshold,
            self.max_detections, self.nms_kernel, self.nms_sigma,
        )  # fmt: skip

    def postprocess(
        self, raw: SOLOv2Raw, cfg: PostConfig | None = None, cache: bool = False
    ) -> list[Instances]:
        """Raw outputs -> one :class:`Instances` per image (CPU) in its original coordinates,
        thresholds ``cfg`` (default :meth:`post_config`). ``cache``: keep and reuse the
        candidates' mask probabilities in ``raw`` across calls that change only
        ``mask_threshold`` (e.g. calibration)."""
        dets = postprocess_batch(raw, cfg or self.post_config(), cache)
        return to_instances(raw.image_sizes, dets)

    def cell_strides(self, padded: tuple[int, int], device: torch.device) -> Tensor:
        """``(C,)`` min-area filter value of every cell (its level's ``strides`` entry)."""
        shapes = self.grid_shapes(padded)
        return torch.cat(
            [torch.full((r * c,), st, device=device) for (r, c), st in zip(shapes, self.strides)]
        )

    @torch.no_grad()  # not inference_mode: callers may edit the returned tensors in place
    def predict(self, images: list[Tensor]) -> list[Instances]:
        """One :class:`Instances` per image in its original coordinates (bool masks
        ``(N, H, W)``, xyxy boxes, labels 0..K-1, scores sorted descending)."""
        return self.postprocess(self.forward_raw(images))

    def detect(self, images: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Tensors-only inference (what an exporter traces): per image ``(masks (N, H, W)
        bool, boxes (N, 4), labels (N,), scores (N,))`` in original coordinates, on the
        model's device. Call under ``torch.no_grad()``."""
        return postprocess_batch(self.forward_raw(images), self.post_config())


def to_instances(
    sizes: list[tuple[int, int]], dets: list[tuple[Tensor, Tensor, Tensor, Tensor]]
) -> list[Instances]:
    """:meth:`SOLOv2.detect` tuples -> :class:`Instances` (on the CPU) of each image size."""
    out = []
    for size, (masks, boxes, labels, scores) in zip(sizes, dets):
        out.append(Instances(size, boxes.cpu(), labels.cpu(), scores.cpu(), masks=masks.cpu()))
    return out
