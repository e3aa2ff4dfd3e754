"""CPU inference speed at 512x512: light SOLOv2 vs our Mask R-CNN vs torchvision's Mask R-CNN.

Every model is untrained (weights=None: speed does not depend on the weights) and runs
``--images`` synthetic 512x512 scenes (``instseg.data.synthetic``) one at a time after
``--warmup`` runs, with ``torch.set_num_threads(--threads)``. Timed: the whole call, float
image (3, H, W) in [0, 1] in -> bool masks (N, H, W) at the image size out (ours:
``model.predict``; torchvision: ``model([image])`` + ``masks > 0.5``).

Post-processing load: untrained models score their candidates very differently (SOLOv2's
focal-loss prior keeps every score below its 0.1 threshold: 0 detections), so by default
every score threshold is set to ``--score-threshold 0`` (Mask R-CNN ``score_threshold`` /
torchvision ``box_score_thresh``; SOLOv2 ``score_threshold`` and ``update_threshold``), and
every model then returns its maximum of 100 detections per image, whose masks are all
pasted at full size. The table shows the mean detections per image. ``--num-classes`` is 1
by default: with a zero threshold and K classes, Mask R-CNN's box post-processing would run
NMS over K x 1000 candidates (80,000 for COCO's 80), a load no trained model produces. The
"CPU ms" column (process CPU time, both threads) is steadier than wall time on a busy machine.

Models: any zoo name, or ``torchvision_r18_fpn`` / ``torchvision_mnv3_fpn`` (torchvision's
``MaskRCNN``, default settings: 800/1333 resize); ``NAME@S`` sets the short-side input size
(``min_size``) to S, e.g. ``torchvision_r18_fpn@512`` (no resize of a 512x512 image).

    python bench/infer_speed.py [--images 20] [--warmup 3] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

DEFAULT_MODELS = "solov2_light_mnv3,solov2_light_r18,maskrcnn_r18_fpn,torchvision_r18_fpn@512,torchvision_r18_fpn"
TORCHVISION = {"torchvision_r18_fpn": "resnet18", "torchvision_mnv3_fpn": "mobilenet_v3_large"}
TARGET_MS = 150.0  # target of the light SOLOv2 at 512x512, 2 threads


def build(spec: str, num_classes: int, score_threshold: float) -> tuple[nn.Module, bool]:
    """``(model in eval mode, is_torchvision)`` for ``NAME[@MIN_SIZE]``."""
    name, _, size = spec.partition("@")
    sizes: dict[str, int] = {}
    if size:
        sizes = {"min_size": int(size), "max_size": max(int(size), 1333 * int(size) // 800)}
    if name in TORCHVISION:
        from bench.baselines import torchvision_maskrcnn

        model = torchvision_maskrcnn(
            num_classes, TORCHVISION[name], box_score_thresh=score_threshold, **sizes
        )
        return model.eval(), True
    from instseg.models.zoo import MODELS, build_model

    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}: a zoo name or one of {', '.join(TORCHVISION)}")
    overrides: dict[str, Any] = {"score_threshold": score_threshold, **sizes}
    if MODELS[name].family == "solov2":
        overrides["update_threshold"] = score_threshold
        if size:
            overrides["max_size"] = int(size)
    return build_model(name, num_classes, **overrides).eval(), False


def run_once(model: nn.Module, image: Tensor, is_tv: bool) -> int:
    """One image through the model -> number of detections (bool masks materialized)."""
    if is_tv:
        det = model([image])[0]
        masks = det["masks"][:, 0] > 0.5
        return int(masks.shape[0])
    inst = model.predict([image])  # type: ignore[operator]
    return len(inst[0])


def measure(model: nn.Module, images: list[Tensor], is_tv: bool, warmup: int) -> dict[str, float]:
    """Warm-up runs, then one timed run per image -> ms statistics and mean detections."""
    with torch.inference_mode():
        for i in range(warmup):
            run_once(model, images[i % len(images)], is_tv)
        times, cpu, dets = [], [], []
        for image in images:
            t0, c0 = time.perf_counter(), time.process_time()
            dets.append(run_once(model, image, is_tv))
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    t = np.array(times)
    return {
        "median_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)),
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "cpu_median_ms": float(np.median(cpu)),
        "detections": float(np.mean(dets)),
    }


def synthetic_images(n: int, size: int, seed: int = 0) -> list[Tensor]:
    """``n`` synthetic scenes (3, size, size) float in [0, 1] (objects of 24-160 px)."""
    from instseg.data.synthetic import SceneConfig, render_scene

    cfg = SceneConfig(height=size, width=size, num_objects=(5, 15), scale=(24.0, 160.0))
    out = []
    for i in range(n):
        image, _ = render_scene(cfg, seed=seed + i)
        out.append(torch.from_numpy(image).permute(2, 0, 1).float().div(255).contiguous())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated NAME[@MIN_SIZE]")
    p.add_argument("--size", type=int, default=512, help="square image side")
    p.add_argument("--images", type=int, default=20, help="timed images per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--num-classes", type=int, default=1, help="foreground classes (see the docstring)"
    )
    p.add_argument("--score-threshold", type=float, default=0.0, help="see the docstring")
    p.add_argument(
        "--baseline",
        default=None,
        help="model of the ratio column (default: the first torchvision one)",
    )
    p.add_argument("--out", default=None, help="folder for infer_speed.json")
    args = p.parse_args(argv)
    if args.images < 1 or args.warmup < 0:
        p.error("--images must be >= 1 and --warmup >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    images = synthetic_images(args.images, args.size)
    rows = []
    for spec in specs:
        model, is_tv = build(spec, args.num_classes, args.score_threshold)
        stats = measure(model, images, is_tv, args.warmup)
        rows.append({"model": spec, **stats})
        print(f"{spec}: median {stats['median_ms']:.1f} ms, p90 {stats['p90_ms']:.1f} ms, "
              f"{stats['detections']:.0f} detections/image", flush=True)  # fmt: skip
        del model

    base = args.baseline or next((s for s in specs if s.split("@")[0] in TORCHVISION), specs[0])
    base_ms = next(r["median_ms"] for r in rows if r["model"] == base)
    width = max(len(s) for s in specs)
    print(f"\n{args.size}x{args.size}, {args.threads} threads, {args.images} images after "
          f"{args.warmup} warm-up, {args.num_classes} classes, score threshold {args.score_threshold:g}")  # fmt: skip
    print(f"| {'model':<{width}} | median ms | p90 ms | CPU ms | dets/img | x faster than {base} |")
    print(
        f"|{'-' * (width + 2)}|-----------|--------|--------|----------|{'-' * (len(base) + 16)}|"
    )
    for r in rows:
        r["speedup_vs_baseline"] = base_ms / r["median_ms"]
        print(f"| {r['model']:<{width}} | {r['median_ms']:9.1f} | {r['p90_ms']:6.1f} | "
              f"{r['cpu_median_ms']:6.0f} | {r['detections']:8.0f} | "
              f"{r['speedup_vs_baseline']:{len(base) + 14}.2f} |")  # fmt: skip
    for r in rows:
        if r["model"].startswith("solov2_light"):
            ok = r["median_ms"] <= TARGET_MS
            print(f"target: {r['model']} median {r['median_ms']:.1f} ms <= {TARGET_MS:.0f} ms: "
                  f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    print("command: python " + " ".join(["bench/infer_speed.py", *(argv or sys.argv[1:])]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        (out / "infer_speed.json").write_text(
            json.dumps({**meta, "baseline": base, "results": rows}, indent=1)
        )
        print(f"wrote {out / 'infer_speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
