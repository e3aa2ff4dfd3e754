"""``--object-size auto`` with the shipped nuclei model: does the estimate find the objects' size?

VALIDATION (chose the estimator's settings, :mod:`instseg.inference.size_estimate`): the 22
held-out images of the shipped model's DSB split (``split(0.2, seed=0)``, never trained on),
each rescaled by known factors (cv2, area when shrinking, bilinear when enlarging). Per
factor: the estimate over the truth (the image's median GT equivalent diameter times the
factor) and the recovered factor (the estimate on the rescaled image over the estimate on
the original).

REPORT (chose nothing): the two Cell Tracking Challenge sequences. The estimate on the first
frame against the GT median diameter (every ``01_GT/SEG`` mask), then per frame (fully
labelled ``SEG`` frames) F1@0.5 and segm AP of ``Predictor("nuclei")`` without and with
``object_size="auto"`` (estimated once on frame 0 and reused, as ``instseg predict`` does
for a folder): F1 of every detection (the behaviour before the stored cut-off), F1 at the
stored cut-off, and AP of every detection.

    python bench/object_size.py                           # ~30 min on 2 busy cores
    python bench/object_size.py --max-val 4 --frames 1    # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import data_root, load_split  # noqa: E402

SEQUENCES = ("Fluo-N2DH-SIM+", "Fluo-N2DH-GOWT1")
FACTORS = (0.5, 1.0, 2.0, 3.0, 4.0)
WITHIN = 1.25  # an estimate within this ratio of the truth counts as right


def resize(image: np.ndarray, factor: float) -> np.ndarray:
    """RGB uint8 image resized by ``factor`` (area when shrinking, bilinear otherwise)."""
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    mode = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=mode) if factor != 1 else image


def median_diameter(areas: Any) -> float:
    a = np.asarray(areas, dtype=np.float64)
    return float(np.median(np.sqrt(4.0 * a / math.pi)))


def validation(predictor: Any, data: str | None, factors: tuple[float, ...], max_val: int | None) -> dict[str, Any]:
    """Per factor: estimate / truth and estimate / estimate at factor 1, per image."""
    _, val_set = load_split("dsb2018_stage1_subset", data)
    n = min(max_val or len(val_set), len(val_set))
    rows: dict[float, list[tuple[float, float]]] = {f: [] for f in factors}
    print(f"VALIDATION: {n} held-out DSB images (split(0.2, seed=0)) x factors {list(factors)}")
    for i in range(n):
        image = val_set.load_image(i)
        truth = median_diameter([a.area for a in val_set.images[i].annotations if not a.iscrowd])
        line = []
        for f in factors:
            t0 = time.perf_counter()
            found = predictor.estimate_object_size([resize(image, f)])
            rows[f].append((found.object_size, truth * f))
            line.append(f"x{f:g} {found.object_size:.1f}/{truth * f:.1f} "
                        f"({len(found.passes)}p {time.perf_counter() - t0:.0f}s)")  # fmt: skip
        print(f"  image {i:2d} {image.shape[1]}x{image.shape[0]}: " + ", ".join(line), flush=True)
    base = np.array([e for e, _ in rows[1.0]]) if 1.0 in rows else None
    out = {}
    print("  factor | est/truth median [10%, 90%] | within x1.25 | recovered factor / factor, median [10%, 90%]")
    for f in factors:
        est, truth = np.array(rows[f]).T
        ratio = est / truth
        within = float(np.mean(np.abs(np.log(ratio)) <= math.log(WITHIN)))
        rec = est / base / f if base is not None else np.full_like(est, np.nan)
        q = lambda x: [float(v) for v in np.quantile(x, [0.5, 0.1, 0.9])]  # noqa: E731
        out[f"{f:g}"] = {"ratio": q(ratio), "within_1.25": within, "recovered": q(rec)}
        r, rr = q(ratio), q(rec)
        print(f"  x{f:<5g} | {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] | {within:.2f} | "
              f"{rr[0]:.3f} [{rr[1]:.3f}, {rr[2]:.3f}]")  # fmt: skip
    return out


def _coco_gt(label: np.ndarray) -> dict[str, Any]:
    """One-image COCO ground truth (category 1) from a label image."""
    from instseg.data.coco import instances_to_coco
    from instseg.data.ctc import label_instances

    h, w = label.shape
    anns = instances_to_coco(label_instances(label), 1, [1])
    for k, a in enumerate(anns, 1):
        a.update(id=k, iscrowd=0, area=float(a.get("area", 0.0)))
        a.pop("score", None)
    return {"images": [{"id": 1, "height": h, "width": w}], "annotations": anns,
            "categories": [{"id": 1, "name": "nucleus"}]}  # fmt: skip


def frame_figures(predictor: Any, image: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """F1@0.5 of every detection and at the cut-off; segm AP of every detection."""
    from instseg.data.coco import instances_to_coco
    from instseg.data.ctc import label_instances
    from instseg.engine.evaluate import coco_summary
    from instseg.evaluation.matching import match_instances

    every = predictor.predict_arrays([image], apply_cutoff=False)[0]
    gt = label_instances(label)
    f1_all = match_instances(gt, every, thresholds=(0.5,))[0].f1
    cut = predictor.score_cutoff
    f1_cut = match_instances(gt, every, thresholds=(0.5,), score_threshold=cut)[0].f1
    ap = coco_summary(_coco_gt(label), instances_to_coco(every, 1, [1]), "segm")["AP"]
    return {"f1_all": f1_all, "f1_cut": f1_cut, "ap": ap, "n_all": len(every),
            "n_cut": int((every.scores >= (cut or 0)).sum()), "n_gt": len(gt)}  # fmt: skip


def report(data: Path, frames_per_seq: int) -> dict[str, Any]:
    """CTC: the auto estimate vs the GT size; per-frame F1 / AP without and with auto."""
    from instseg.data.ctc import read_sequence
    from instseg.data.io import read_label_image
    from instseg.inference import Predictor

    out: dict[str, Any] = {}
    print("REPORT (chose nothing): CTC sequences, GT in 01_GT/SEG")
    for name in SEQUENCES:
        seq = read_sequence(data / "ctc_tracking" / name / "01")
        labels = {t: read_label_image(p) for t, p in sorted(seq.seg.items())}
        areas = [c for lab in labels.values() for c in np.unique(lab[lab > 0], return_counts=True)[1]]
        truth = median_diameter(areas)
        tra = {t: len(np.unique(read_label_image(seq.tra[t]))) for t in labels if t in seq.tra}
        full = [t for t in labels if len(np.unique(labels[t])) >= tra.get(t, 0)]
        picked = [full[round(k * (len(full) - 1) / max(frames_per_seq - 1, 1))] for k in range(min(frames_per_seq, len(full)))]
        plain = Predictor("nuclei", device="cpu")
        auto = Predictor("nuclei", device="cpu", object_size="auto")
        t0 = time.perf_counter()
        found = auto.estimate_object_size([seq.image(0)])
        est_s = time.perf_counter() - t0
        print(f"  {name}: GT median diameter {truth:.1f} px ({len(areas)} SEG masks); auto on frame 0: "
              f"{found.object_size:.1f} px (ratio {found.object_size / truth:.2f}, {len(found.passes)} passes, "
              f"{est_s:.0f} s) -> scale x{auto.scale_factor:.3f}")  # fmt: skip
        rows = {}
        for t in picked:
            image = seq.image(t)
            a, b = frame_figures(plain, image, labels[t]), frame_figures(auto, image, labels[t])
            rows[t] = {"plain": a, "auto": b}
            print(f"    frame {t:3d} ({a['n_gt']} GT): F1 every detection {a['f1_all']:.3f} -> auto {b['f1_all']:.3f}; "
                  f"F1 at cut-off {plain.score_cutoff:g} {a['f1_cut']:.3f} -> auto {b['f1_cut']:.3f}; "
                  f"AP {a['ap']:.3f} -> auto {b['ap']:.3f}; detections >= cut-off {a['n_cut']} -> {b['n_cut']}",
                  flush=True)  # fmt: skip
        mean = {k: {m: float(np.mean([r[k][m] for r in rows.values()])) for m in ("f1_all", "f1_cut", "ap")}
                for k in ("plain", "auto")}  # fmt: skip
        print(f"    mean over {len(rows)} frames: F1 every detection {mean['plain']['f1_all']:.3f} -> "
              f"{mean['auto']['f1_all']:.3f}; F1 at cut-off {mean['plain']['f1_cut']:.3f} -> "
              f"{mean['auto']['f1_cut']:.3f}; AP {mean['plain']['ap']:.3f} -> {mean['auto']['ap']:.3f}")  # fmt: skip
        out[name] = {"gt_median_diameter": truth, "estimate": found.object_size,
                     "passes": found.passes, "frames": rows, "mean": mean}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="shared data folder (default: ../shared/data)")
    p.add_argument("--factors", default=",".join(f"{f:g}" for f in FACTORS))
    p.add_argument("--max-val", type=int, default=None, help="first N validation images")
    p.add_argument("--frames", type=int, default=5, help="frames per CTC sequence")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", choices=("validation", "report"), default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    import torch

    from instseg.inference import Predictor

    torch.set_num_threads(args.threads)
    root = Path(args.data) if args.data else data_root()
    figures: dict[str, Any] = {}
    if args.skip != "validation":
        factors = tuple(float(f) for f in args.factors.split(","))
        predictor = Predictor("nuclei", device="cpu", object_size="auto")
        figures["validation"] = validation(predictor, str(root / "dsb2018_stage1_subset"), factors, args.max_val)
    if args.skip != "report":
        figures["report"] = report(root, args.frames)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
