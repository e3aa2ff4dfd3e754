"""COCO segm evaluation speed: pycocotools vs faster-coco-eval vs instseg, same files, one run.

Builds (once, cached in --work) a synthetic segm case: 500 images of 512x512, 10,000
ground-truth polygons (2% crowd, uncompressed RLE), 50,000 RLE detections (jittered copies of
the ground truth with class swaps, plus false positives), in a main variant with 80
categories and a second one with 5. Times, for each tool:
  * in process: load GT + load results + evaluate + accumulate (+ summarize),
  * as a whole process, start to printed stats, the way a user runs it
    (``python -c ...`` for the two libraries, ``instseg eval GT PRED`` for us),
and peak memory (max RSS of that whole process). Checks the 12 stats are identical.

    python bench/eval_speed.py [--images 500] [--skip-pycocotools] [--work /tmp/instseg_bench]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

SIZE = 512


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float, n: int) -> list[float]:
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.6, 1.0, n)
    xs = np.clip(cx + rad * np.cos(ang), 0, SIZE - 1)
    ys = np.clip(cy + rad * np.sin(ang), 0, SIZE - 1)
    return np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()


def build(work: Path, n_images: int, n_cats: int, seed: int = 0) -> tuple[Path, Path]:
    """Write gt.json / dt.json for one variant; returns their paths (cached)."""
    gt_path = work / f"gt_{n_images}_{n_cats}.json"
    dt_path = work / f"dt_{n_images}_{n_cats}.json"
    if gt_path.exists() and dt_path.exists():
        return gt_path, dt_path
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    per_img_gt, per_img_dt = 20, 100
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i:06d}.jpg", "height": SIZE, "width": SIZE})
        objs = []
        for _ in range(per_img_gt):
            r = float(np.exp(rng.uniform(np.log(4), np.log(120))))
            cx, cy = rng.uniform(r, SIZE - r, 2)
            cat = int(rng.integers(1, n_cats + 1))
            poly = _polygon(rng, cx, cy, r, int(rng.integers(6, 16)))
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], SIZE, SIZE))
            crowd = rng.random() < 0.02
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": int(crowd),
                   "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()}
            if crowd:
                m = mask_utils.decode(rle)
                runs = np.diff(np.r_[0, np.flatnonzero(np.diff(m.ravel(order="F"))) + 1, m.size])
                counts = runs.tolist() if m.ravel(order="F")[0] == 0 else [0] + runs.tolist()
                ann["segmentation"] = {"size": [SIZE, SIZE], "counts": counts}
            else:
                ann["segmentation"] = [poly]
            anns.append(ann)
            objs.append((poly, r, cat))
        for k in range(per_img_dt):
            if k < 3 * per_img_gt and rng.random() < 0.9:
                poly, r, cat = objs[k % per_img_gt]
                pts = np.asarray(poly).reshape(-1, 2) + rng.normal(0, 0.04 * r, 2)
                pts = pts + rng.normal(0, 0.04 * r, pts.shape)
                det_poly = np.clip(pts, 0, SIZE - 1).ravel().tolist()
                if rng.random() < 0.1:
                    cat = int(rng.integers(1, n_cats + 1))
            else:
                r = float(np.exp(rng.uniform(np.log(4), np.log(100))))
                cx, cy = rng.uniform(r, SIZE - r, 2)
                cat = int(rng.integers(1, n_cats + 1))
                det_poly = _polygon(rng, cx, cy, r, 10)
            rle = mask_utils.merge(mask_utils.frPyObjects([det_poly], SIZE, SIZE))
            rle["counts"] = rle["counts"].decode("ascii")
            dets.append({"image_id": i, "category_id": cat, "segmentation": rle,
                         "score": round(float(rng.random()), 3)})
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, n_cats + 1)]
    work.mkdir(parents=True, exist_ok=True)
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


def time_pycocotools(gt: Path, dt: Path) -> tuple[float, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(gt))
        E = COCOeval(g, g.loadRes(str(dt)), "segm")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return time.perf_counter() - t0, np.asarray(E.stats)


def time_faster(gt: Path, dt: Path) -> tuple[float, np.ndarray]:
    from faster_coco_eval import COCO, COCOeval_faster

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(gt))
        E = COCOeval_faster(g, g.loadRes(str(dt)), "segm", print_function=lambda *a, **k: None)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return time.perf_counter() - t0, np.asarray(E.stats)


def time_ours(gt: Path, dt: Path) -> tuple[float, np.ndarray]:
    from instseg.evaluation import evaluate

    t0 = time.perf_counter()
    res = evaluate(gt, dt, "segm")
    return time.perf_counter() - t0, res.stats


PROCESS = {
    "pycocotools": "from pycocotools.coco import COCO; from pycocotools.cocoeval import COCOeval; "
    "g=COCO('{gt}'); E=COCOeval(g, g.loadRes('{dt}'), 'segm'); E.evaluate(); E.accumulate(); E.summarize()",
    "faster-coco-eval": "from faster_coco_eval import COCO, COCOeval_faster; g=COCO('{gt}'); "
    "E=COCOeval_faster(g, g.loadRes('{dt}'), 'segm'); E.evaluate(); E.accumulate(); E.summarize()",
}


def time_process(tool: str, gt: Path, dt: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + sys) and peak RSS (MiB) of the whole user-facing process."""
    if tool == "instseg":
        cmd = [sys.executable, "-m", "instseg", "eval", str(gt), str(dt)]
    else:
        cmd = [sys.executable, "-c", PROCESS[tool].format(gt=gt, dt=dt)]
    wrapper = (
        "import resource, subprocess, sys, time; t=time.perf_counter(); "
        "r=subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); dt=time.perf_counter()-t; "
        "u=resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(dt, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024, r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    secs, cpu, rss, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{tool} process failed ({rc}): {' '.join(cmd)}")
    return float(secs), float(cpu), float(rss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--cats", type=int, nargs="+", default=[80, 5])
    ap.add_argument("--work", type=Path, default=Path("/tmp/instseg_bench"))
    ap.add_argument("--skip-pycocotools", action="store_true", help="it takes minutes")
    ap.add_argument("--no-process", action="store_true", help="skip the whole-process timings")
    args = ap.parse_args()
    env_ok = "PYTHONPATH" in os.environ or Path("instseg").is_dir()
    if not env_ok:
        print("note: run from the repository root (or install instseg) for the CLI timing")
    tools = ["faster-coco-eval", "instseg"] if args.skip_pycocotools else ["pycocotools", "faster-coco-eval", "instseg"]
    funcs = {"pycocotools": time_pycocotools, "faster-coco-eval": time_faster, "instseg": time_ours}
    rows = []
    for n_cats in args.cats:
        gt, dt = build(args.work, args.images, n_cats)
        print(f"\n== {args.images} images {SIZE}x{SIZE}, {n_cats} categories: {gt.name} {dt.name}")
        stats, t_in, t_proc, cpu, rss = {}, {}, {}, {}, {}
        for tool in tools:
            t_in[tool], stats[tool] = funcs[tool](gt, dt)
            print(f"  in-process  {tool:<17} {t_in[tool]:8.2f} s")
        if not args.no_process:
            for tool in tools:
                t_proc[tool], cpu[tool], rss[tool] = time_process(tool, gt, dt)
                print(f"  process     {tool:<17} {t_proc[tool]:8.2f} s wall {cpu[tool]:8.2f} s CPU   "
                      f"peak RSS {rss[tool]:7.0f} MiB")
        ref_name = "pycocotools" if "pycocotools" in stats else "faster-coco-eval"
        ref = stats[ref_name]
        same = {t: bool(np.array_equal(stats[t], ref)) for t in tools}
        diff = {t: float(np.abs(stats[t] - ref).max()) for t in tools}
        print(f"  stats identical (==) to {ref_name}: {same}; max |diff|: {diff}")
        print("  AP " + " ".join(f"{v:.6f}" for v in stats["instseg"][:3]))
        rows.append((n_cats, t_in, t_proc, cpu, rss, same))
    print("\n| cats | tool | in-process s | process wall s | process CPU s | peak RSS MiB "
          "| speed-up vs faster-coco-eval (in / wall / CPU) | stats identical |")
    print("|---|---|---|---|---|---|---|---|")
    for n_cats, t_in, t_proc, cpu, rss, same in rows:
        for tool in tools:
            r_in = t_in["faster-coco-eval"] / t_in[tool]
            if t_proc:
                r_pr = t_proc["faster-coco-eval"] / t_proc[tool]
                r_cpu = cpu["faster-coco-eval"] / cpu[tool]
                proc = f"{t_proc[tool]:.2f} | {cpu[tool]:.2f} | {rss[tool]:.0f}"
            else:
                r_pr = r_cpu = float("nan")
                proc = "- | - | -"
            print(f"| {n_cats} | {tool} | {t_in[tool]:.2f} | {proc} | {r_in:.2f} / {r_pr:.2f} / {r_cpu:.2f} "
                  f"| {same[tool]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
