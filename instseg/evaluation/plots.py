"""PR curves and a per-class AP chart from a :class:`COCOResult` (matplotlib, Agg, lazy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from instseg.evaluation.coco_eval import COCOResult


def pr_curve(res: COCOResult, iou: float | None = 0.5, area: str = "all", max_det: int = 100) -> np.ndarray:
    """Mean interpolated precision ``(R,)`` over categories with ground truth (-1 if none).

    ``iou=None`` averages over all IoU thresholds (the AP@[.5:.95] curve).
    """
    a = res.area_labels.index(area)
    m = res.max_dets.index(max_det)
    p = res.precision[:, :, :, a, m]  # (T, R, K)
    if iou is not None:
        p = p[np.isclose(res.iou_thresholds, iou)]
    out = np.full(p.shape[1], -1.0)
    for r in range(p.shape[1]):
        v = p[:, r][p[:, r] > -1]
        if len(v):
            out[r] = v.mean()
    return out


def save_plots(res: COCOResult, out_dir: str | Path, cat_names: dict[Any, str] | None = None) -> list[Path]:
    """Write ``pr_curves.png`` (IoU .5, .75, .5:.95) and ``per_class_ap.png``; return paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 5))
    rec = res.rec_thresholds
    for iou, label in ((0.5, "IoU=0.50"), (0.75, "IoU=0.75"), (None, "IoU=0.50:0.95")):
        curve = pr_curve(res, iou)
        if (curve > -1).any():
            ap = curve[curve > -1].mean()
            ax.plot(rec[curve > -1], curve[curve > -1], label=f"{label} (AP {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"PR curves ({res.iou_type})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    paths.append(out / "pr_curves.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    per = res.per_class()
    names = cat_names or {}
    items = [(str(names.get(c, c)), v["AP"]) for c, v in per.items() if v["AP"] > -1]
    items.sort(key=lambda x: x[1])
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(items) + 1)))
    ax.barh([n for n, _ in items], [v for _, v in items], color="tab:blue")
    ax.set(xlabel="AP@[.5:.95]", xlim=(0, 1), title="per-class AP")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    paths.append(out / "per_class_ap.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
