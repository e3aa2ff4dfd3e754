"""Which SOLOv2 branch fails? Category vs mask diagnostics of a checkpoint on a benchmark split.

For every held-out image: the target assignment of the ground truth (``SOLOv2.losses``' own),
then for the positive cells the predicted category score, and for each object the mask of
its best-scoring positive cell against its target (both at the mask-feature scale, 1/4;
targets binarized at 0.5). Optionally also scores tiled
inference (tiles of ``--tile`` original pixels: the training crop's size, so that cells and CoordConv see training-sized
canvases).

    python bench/solov2_diagnose.py runs/nuc/solov2/last.pt [--dataset dsb2018_stage1_subset] [--tile 387]
        [--set input_scale=1.7 --set point_nms=false --set strides=[2,2,4,8,8]]

``--set KEY=JSON`` (repeatable) changes a model attribute before scoring (inference settings
only: ``input_scale``, ``point_nms``, ``strides`` (min-area filter), ``mask_threshold``,
``nms_sigma`` ...), so a checkpoint trained with older defaults can be scored with new ones.

Prints the share of objects owning a cell, positive-cell score quantiles, negative cells over
0.5 per image, mask IoU / precision / recall at the best positive cell (and, for objects
touching another vs isolated ones, that IoU and the share of the mask on other objects / on
background), the resolution ceiling of the mask features, the scores of plain
``predict`` (``--input-scale`` overrides the model's) and F1@0.5 at score cut-offs 0.1-0.5.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load_split, parse_settings, score  # noqa: E402
from instseg.data.coco import instances_to_coco  # noqa: E402
from instseg.data.dataset import InstanceDataset  # noqa: E402
from instseg.data.loader import TrainingDataset  # noqa: E402
from instseg.engine.evaluate import predict_dataset  # noqa: E402
from instseg.evaluation.matching_dataset import evaluate_coco_matching  # noqa: E402
from instseg.inference.loading import load_model  # noqa: E402
from instseg.inference.tiling import predict_tiled  # noqa: E402
from instseg.masks import paint_label_image  # noqa: E402
from instseg.models.solov2 import SOLOv2  # noqa: E402
from instseg.models.solov2.post import paste_masks  # noqa: E402
from instseg.structures import Instances  # noqa: E402


@dataclass
class _Stats:
    """Per-image and per-object diagnostics gathered over the split."""

    n_obj: int = 0
    owned: int = 0
    neg_high: int = 0
    pos_scores: list[torch.Tensor] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    precs: list[float] = field(default_factory=list)
    recs: list[float] = field(default_factory=list)
    touching: list[bool] = field(default_factory=list)  # per owned object: touches another
    leaks: list[tuple[float, float]] = field(default_factory=list)  # on other objects / bg
    ceilings: list[float] = field(default_factory=list)


@torch.no_grad()
def diagnose(
    checkpoint: Path, dataset: str, tile: int, overlap: int, settings: dict[str, object]
) -> None:
    model, meta = _load(checkpoint, settings)
    _, val = load_split(dataset)
    stats = _Stats()
    data = TrainingDataset(val)
    for i in range(len(val)):
        _image_stats(model, *data[i], stats)
    _print_stats(stats, len(val), model.mask_stride)
    cat_ids = meta.get("cat_ids") or val.label_to_cat_id
    _print_scores(model, val, cat_ids)
    if tile:
        _print_tiled_scores(model, val, cat_ids, tile, overlap)


def _load(checkpoint: Path, settings: dict[str, object]) -> tuple[SOLOv2, dict[str, Any]]:
    """The checkpoint's SOLOv2 in eval mode with ``settings`` applied, and its metadata."""
    model, meta = load_model(checkpoint, device="cpu")
    if not isinstance(model, SOLOv2):
        raise SystemExit(f"{checkpoint}: not a SOLOv2 checkpoint ({type(model).__name__})")
    model.eval()
    for key, value in settings.items():
        if not hasattr(model, key):
            raise SystemExit(f"{checkpoint}: SOLOv2 has no setting {key!r}")
        setattr(model, key, tuple(value) if isinstance(value, list) else value)
    return model, meta


def _image_stats(model: SOLOv2, img: torch.Tensor, target: Instances, stats: _Stats) -> None:
    """Cell scores of one image and, per object, the mask of its best positive cell."""
    batch, sizes = model.preprocess([img])
    cates, kernels, feat = model.network(batch)
    scores = model.flatten([torch.sigmoid(c) for c in cates])[0].amax(1)  # (C,)
    kern, feat = model.mask_operands(model.flatten(kernels), feat)
    labels, gt, soft = model._image_targets(target, sizes[0], tuple(batch.shape[-2:]))
    pos = gt >= 0
    stats.n_obj += len(target)
    stats.owned += int(gt[pos].unique().numel())
    stats.pos_scores.append(scores[pos])
    stats.neg_high += int((scores[labels == model.num_classes] > 0.5).sum())
    assert target.masks is not None
    touch, owner = _touching(target.masks), _owner(soft > 0.5)
    cfg = model.post_config()
    for j in gt[pos].unique().tolist():
        cells = torch.nonzero(gt == j).reshape(-1)
        c = cells[scores[cells].argmax()]
        m = torch.sigmoid(kern[0, c] @ feat[0].flatten(1)).view(feat.shape[-2:]) > 0.5
        g = soft[j] > 0.5
        inter, area = float((m & g).sum()), max(float(m.sum()), 1.0)
        stats.ious.append(inter / max(float((m | g).sum()), 1.0))
        stats.precs.append(inter / area)
        stats.recs.append(inter / max(float(g.sum()), 1.0))
        stats.touching.append(bool(touch[j]))
        stats.leaks.append((float((m & (owner > 0) & ~g).sum()) / area,
                            float((m & (owner == 0)).sum()) / area))  # fmt: skip
        # the resolution ceiling: the target itself pooled, then upsampled as predict does
        up = paste_masks(soft[j : j + 1], sizes[0], target.image_size, cfg)[0]
        full = target.masks[j]
        stats.ceilings.append(float((up & full).sum()) / max(float((up | full).sum()), 1.0))


def _print_stats(s: _Stats, n_images: int, mask_stride: int) -> None:
    ps, iou = torch.cat(s.pos_scores), torch.tensor(s.ious)
    print(f"{n_images} images, {s.n_obj} objects, {s.owned} own a grid cell")
    print(
        f"positive-cell scores: mean {ps.mean():.3f}; share > 0.1 / 0.3 / 0.5: "
        f"{(ps > 0.1).float().mean():.3f} / {(ps > 0.3).float().mean():.3f} / "
        f"{(ps > 0.5).float().mean():.3f}; background cells > 0.5 per image: "
        f"{s.neg_high / n_images:.1f}"
    )
    print(
        f"mask at the best positive cell (1/{mask_stride} scale): IoU mean {iou.mean():.3f}, "
        f"share > 0.5 "
        f"{(iou > 0.5).float().mean():.3f}, > 0.75 {(iou > 0.75).float().mean():.3f}; "
        f"precision {sum(s.precs) / len(s.precs):.3f}, recall {sum(s.recs) / len(s.recs):.3f}"
    )
    t, lk = torch.tensor(s.touching), torch.tensor(s.leaks).reshape(-1, 2)
    print(f"resolution ceiling (target pooled and upsampled vs full mask): IoU mean "
          f"{sum(s.ceilings) / len(s.ceilings):.3f}")  # fmt: skip
    for name, sel in (("touching (within 2 px)", t), ("isolated", ~t)):
        if bool(sel.any()):
            print(
                f"{name}: {int(sel.sum())} objects, best-cell IoU {iou[sel].mean():.3f}; share of "
                f"its mask on other objects {lk[sel, 0].mean():.3f}, on background "
                f"{lk[sel, 1].mean():.3f}"
            )


def _print_scores(model: SOLOv2, val: InstanceDataset, cat_ids: list[int]) -> None:
    """COCO scores of plain ``predict`` and F1@0.5 at score cut-offs 0.1-0.5."""
    results = predict_dataset(model, val, label_to_cat_id=cat_ids)
    shown = {k: round(v, 4) for k, v in score(val, results, f1=True).items()}
    print(f"predict (input scale {model.input_scale}): {shown}")
    gt, f1 = val.to_coco(), []
    for cut in (0.1, 0.2, 0.3, 0.4, 0.5):
        rep = evaluate_coco_matching(
            gt, results, thresholds=(0.5,), score_threshold=cut, semantic=False
        )
        st = rep.at(0.5)
        f1.append(f"{cut:g}: {st.f1:.3f} (P {st.precision:.3f} R {st.recall:.3f})")
    print("F1@0.5 by score cut-off: " + ", ".join(f1))


def _print_tiled_scores(
    model: SOLOv2, val: InstanceDataset, cat_ids: list[int], tile: int, overlap: int
) -> None:
    def predict(arr: np.ndarray) -> Instances:  # RGB uint8 tile -> its Instances
        return model.predict([torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255])[0]

    results = []
    for i in range(len(val)):
        inst = predict_tiled(predict, val.load_image(i), tile_size=tile, overlap=overlap)
        results.extend(instances_to_coco(inst, val.images[i].id, cat_ids))
    shown = {k: round(v, 4) for k, v in score(val, results, f1=True).items()}
    print(f"tiled inference ({tile} px tiles, {overlap} px overlap): {shown}")


def _touching(masks: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: mask ``j`` of ``(N, H, W)`` comes within 2 px of another mask."""
    owner = _owner(masks)
    near = torch.nn.functional.max_pool2d(masks.float()[None], 5, 1, 2)[0] > 0
    ids = torch.arange(1, len(masks) + 1)[:, None, None]
    return ((owner > 0) & (owner != ids) & near).flatten(1).any(1)


def _owner(masks: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` int64: 1 + the index of the last mask of ``(N, H, W)`` covering a pixel
    (:func:`instseg.masks.paint_label_image` without scores), 0 on background."""
    h, w = masks.shape[1:]
    return torch.from_numpy(paint_label_image((h, w), masks.cpu().numpy(), dtype=np.int64))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--dataset", default="dsb2018_stage1_subset")
    p.add_argument("--tile", type=int, default=0, help="also score tiled inference (0: off)")
    p.add_argument("--overlap", type=int, default=96)
    p.add_argument("--input-scale", type=float, default=None, help="same as --set input_scale=X")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a model attribute before scoring (repeatable)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = parse_settings(args.set)
    if args.input_scale is not None:
        settings["input_scale"] = args.input_scale
    diagnose(args.checkpoint, args.dataset, args.tile, args.overlap, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
