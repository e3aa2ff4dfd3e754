"""CPU inference speed at 512x512: our models in PyTorch and exported to ONNX (ONNX Runtime,
OpenVINO), torchvision's Mask R-CNN, and Ultralytics YOLO11n-seg.

Every model is untrained (speed does not depend on the weights) and runs ``--images``
synthetic 512x512 scenes (``instseg.data.synthetic``) one at a time after ``--warmup`` runs,
on ``--threads`` threads. Timed: the whole call, image in -> bool masks (N, H, W) at the
image size out, post-processing included:

* ``NAME`` (a zoo name): ``model.predict`` in PyTorch (float image (3, H, W) in [0, 1]);
* ``NAME:onnx`` / ``NAME:openvino``: the model exported by ``instseg.export.export_model``
  (uint8 image (H, W, 3) in, resize, NMS and mask pasting in the graph) run by
  :class:`instseg.inference.onnx_model.OnnxModel` on ONNX Runtime / OpenVINO;
* ``torchvision_r18_fpn`` / ``torchvision_mnv3_fpn``: torchvision's ``MaskRCNN`` (default
  800/1333 resize; ``NAME@S`` sets the short side to S), ``model([image])`` + ``masks > 0.5``;
* ``yolo11n-seg``: Ultralytics YOLO11n-seg built from its model yaml (no weights), exported
  by Ultralytics to ONNX at ``--size`` and run through its own ``predict`` pipeline
  (letterbox, ONNX Runtime, NMS, mask assembly and upsampling), uint8 (H, W, 3) image in;
  its ONNX Runtime session uses every core (Ultralytics sets no thread count), its torch
  post-processing ``--threads``. Needs ``pip install -e '.[bench]'``; instseg never imports it.

Post-processing load: untrained models score their candidates very differently (SOLOv2's
focal-loss prior keeps every score below its 0.1 threshold: 0 detections), so every score
threshold is set to ``--score-threshold 0`` (Mask R-CNN ``score_threshold`` / torchvision
``box_score_thresh``; SOLOv2 ``score_threshold`` and ``update_threshold``; YOLO ``conf``)
and every model returns its maximum of 100 detections per image (YOLO: ``max_det=100``, NMS
IoU 1.0, as its untrained boxes on these flat scenes coincide; its untrained mask
prototypes are set to cover the boxes, since Ultralytics drops detections with empty masks),
whose masks are all made at full size. The table shows the mean detections per image.
``--num-classes`` is 1 by default (YOLO keeps its 80: a one-class yaml is not what users
run). Rows run interleaved, image by image, so a slower machine phase hits every row alike.

    python bench/infer_speed.py [--models solov2_light_mnv3,solov2_light_mnv3:onnx,yolo11n-seg]
        [--images 30] [--warmup 3] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

DEFAULT_MODELS = (
    "solov2_light_mnv3,solov2_light_mnv3:onnx,solov2_light_mnv3:openvino,"
    "maskrcnn_mnv2_fpn,maskrcnn_mnv2_fpn:onnx,torchvision_r18_fpn@512,yolo11n-seg"
)
TORCHVISION = {"torchvision_r18_fpn": "resnet18", "torchvision_mnv3_fpn": "mobilenet_v3_large"}
BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}
#: targets at 512x512, 2 threads: the light SOLOv2 exported (median ms), and vs YOLO11n-seg
TARGET_MS = 60.0
PEER = "yolo11n-seg"

#: one timed call: image index -> detections (bool masks at the image size materialized)
Runner = Callable[[int], int]


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
        raise SystemExit(f"unknown model {name!r}: a zoo name, {PEER} or one of {', '.join(TORCHVISION)}")
    overrides: dict[str, Any] = {"score_threshold": score_threshold, **sizes}
    if MODELS[name].family == "solov2":
        overrides["update_threshold"] = score_threshold
        if size:
            overrides["max_size"] = int(size)
    return build_model(name, num_classes, **overrides).eval(), False


def torch_runner(spec: str, images: list[Tensor], args: argparse.Namespace) -> Runner:
    """A PyTorch model (ours or torchvision's) on float images."""
    model, is_tv = build(spec, args.num_classes, args.score_threshold)

    def run(i: int) -> int:
        with torch.inference_mode():
            if is_tv:
                det = model([images[i]])[0]
                return int((det["masks"][:, 0] > 0.5).shape[0])
            return len(model.predict([images[i]])[0])  # type: ignore[operator]

    return run


def onnx_runner(spec: str, arrays: list[np.ndarray], args: argparse.Namespace, tmp: Path) -> Runner:
    """``NAME:onnx|openvino``: our exported file on ONNX Runtime / OpenVINO."""
    from instseg.export import export_model
    from instseg.inference.onnx_model import OnnxModel

    name, _, kind = spec.partition(":")
    path = tmp / f"{name}.onnx"
    if not path.exists():
        export_model(build(name, args.num_classes, args.score_threshold)[0], path, size=(args.size, args.size))
    model = OnnxModel(path, BACKENDS[kind], threads=args.threads)
    return lambda i: len(model.predict_array(arrays[i]))


def yolo_runner(arrays: list[np.ndarray], args: argparse.Namespace, tmp: Path) -> Runner:
    """YOLO11n-seg from its yaml, exported by Ultralytics, through its own predict pipeline."""
    try:
        from ultralytics import YOLO
    except ImportError:
        raise SystemExit(f"{PEER} needs Ultralytics: pip install -e '.[bench]'") from None
    cwd = Path.cwd()
    os.chdir(tmp)  # Ultralytics writes its export beside the model
    try:
        yolo = YOLO("yolo11n-seg.yaml", task="segment")
        _nonempty_masks(yolo.model.model[-1])
        exported = yolo.export(
            format="onnx", imgsz=args.size, simplify=False, dynamic=False, verbose=False
        )
        model = YOLO(str(tmp / Path(exported).name), task="segment")
    finally:
        os.chdir(cwd)
    bgr = [np.ascontiguousarray(a[..., ::-1]) for a in arrays]  # its numpy input is BGR

    def run(i: int) -> int:
        r = model.predict(bgr[i], imgsz=args.size, conf=args.score_threshold, iou=1.0,
                          max_det=100, verbose=False)[0]  # fmt: skip
        return 0 if r.masks is None else int(r.masks.data.shape[0])

    return run


def _nonempty_masks(head: nn.Module) -> None:
    """Make an untrained YOLO segment head's masks cover their boxes (prototypes SiLU(1),
    coefficients 1): Ultralytics drops detections whose mask is empty, and untrained masks
    are, so the table would show 0 detections although all 100 masks were made. Weights do
    not change the time of a fixed-size network."""
    with torch.no_grad():
        last = head.proto.cv3  # type: ignore[union-attr]
        last.conv.weight.zero_()
        last.bn.bias.fill_(1.0)
        for branch in head.cv4:  # type: ignore[union-attr]
            branch[-1].weight.zero_()
            branch[-1].bias.fill_(1.0)


def make_runner(spec: str, images: list[Tensor], arrays: list[np.ndarray], args: argparse.Namespace, tmp: Path) -> Runner:
    if spec == PEER:
        return yolo_runner(arrays, args, tmp)
    if spec.partition(":")[2] in BACKENDS:
        return onnx_runner(spec, arrays, args, tmp)
    return torch_runner(spec, images, args)


def measure(runners: dict[str, Runner], n: int, warmup: int, threads: int) -> dict[str, dict[str, float]]:
    """Warm-up runs, then every image through every runner in turn -> per runner ms statistics
    and mean detections. torch runs on ``threads`` threads in every timed call (Ultralytics
    sets its own count, one on a 2-core machine, when its predictor starts)."""
    for run in runners.values():
        for i in range(warmup):
            run(i % n)
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    dets: dict[str, list[int]] = {k: [] for k in runners}
    for i in range(n):
        for k, run in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            dets[k].append(run(i))
            times[k].append((time.perf_counter() - t0) * 1000)
            cpu[k].append((time.process_time() - c0) * 1000)
    out = {}
    for k in runners:
        t = np.array(times[k])
        out[k] = {
            "median_ms": float(np.median(t)),
            "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()),
            "min_ms": float(t.min()),
            "cpu_median_ms": float(np.median(cpu[k])),
            "detections": float(np.mean(dets[k])),
        }
    return out


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
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated specs (see above)")
    p.add_argument("--size", type=int, default=512, help="square image side")
    p.add_argument("--images", type=int, default=30, help="timed images per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--num-classes", type=int, default=1, help="foreground classes (see the docstring)"
    )
    p.add_argument("--score-threshold", type=float, default=0.0, help="see the docstring")
    p.add_argument("--baseline", default=None, help=f"model of the ratio column (default: {PEER}, else the first)")
    p.add_argument("--out", default=None, help="folder for infer_speed.json")
    args = p.parse_args(argv)
    if args.images < 1 or args.warmup < 0:
        p.error("--images must be >= 1 and --warmup >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    images = synthetic_images(args.images, args.size)
    arrays = [(im.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for im in images]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runners = {spec: make_runner(spec, images, arrays, args, Path(tmp)) for spec in specs}
        print(f"built {len(runners)} runners; timing", flush=True)
        stats = measure(runners, len(images), args.warmup, args.threads)
    rows = [{"model": spec, **stats[spec]} for spec in specs]
    report(rows, specs, args, argv)
    return 0


def report(rows: list[dict[str, Any]], specs: list[str], args: argparse.Namespace, argv: list[str] | None) -> None:
    """The table, the targets and the command; ``--out``/infer_speed.json."""
    base = args.baseline or (PEER if PEER in specs else specs[0])
    base_ms = next(r["median_ms"] for r in rows if r["model"] == base)
    width = max(len(s) for s in specs)
    print(f"\n{args.size}x{args.size}, {args.threads} threads, {args.images} images after "
          f"{args.warmup} warm-up, {args.num_classes} classes, score threshold {args.score_threshold:g}")  # fmt: skip
    print(f"| {'model':<{width}} | median ms | p90 ms | CPU ms | dets/img | x faster than {base} |")
    print(f"|{'-' * (width + 2)}|-----------|--------|--------|----------|{'-' * (len(base) + 16)}|")
    for r in rows:
        r["speedup_vs_baseline"] = base_ms / r["median_ms"]
        print(f"| {r['model']:<{width}} | {r['median_ms']:9.1f} | {r['p90_ms']:6.1f} | "
              f"{r['cpu_median_ms']:6.0f} | {r['detections']:8.0f} | "
              f"{r['speedup_vs_baseline']:{len(base) + 14}.2f} |")  # fmt: skip
    peer = next((r for r in rows if r["model"] == PEER), None)
    for r in rows:
        if r["model"] == "solov2_light_mnv3:onnx":
            ok = r["median_ms"] <= TARGET_MS
            print(f"target: {r['model']} median {r['median_ms']:.1f} ms <= {TARGET_MS:.0f} ms: "
                  f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
            if peer is not None:
                ok = r["median_ms"] <= peer["median_ms"]
                print(f"target: {r['model']} no slower than {PEER} ({peer['median_ms']:.1f} ms): "
                      f"{'PASS' if ok else 'FAIL'} (x{peer['median_ms'] / r['median_ms']:.2f})")  # fmt: skip
    print("command: python " + " ".join(["bench/infer_speed.py", *(argv or sys.argv[1:])]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        (out / "infer_speed.json").write_text(
            json.dumps({**meta, "baseline": base, "results": rows}, indent=1)
        )
        print(f"wrote {out / 'infer_speed.json'}")


if __name__ == "__main__":
    sys.exit(main())
