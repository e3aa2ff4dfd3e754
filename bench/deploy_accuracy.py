"""Accuracy and speed of an exported model against its PyTorch run, on held-out images.

Exports ``--model`` (default the shipped ``nuclei``) with ``instseg.export.export_onnx``,
then predicts the held-out 20% of ``--dataset`` (``split(0.2, seed=0)``; DSB 2018: 22
images) with the PyTorch model, the ONNX file on ONNX Runtime and the same file on OpenVINO
(when installed), all on ``--threads`` threads, and scores segm AP / AP50 and F1 at IoU 0.5 (detections scoring >= 0.5). Also
prints the median and p90 ms per image (whole call: uint8 image in, masks at image size out;
each image goes through every run in turn, so a slower machine phase hits them alike).

    python bench/deploy_accuracy.py [--model nuclei] [--dataset dsb2018_stage1_subset] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import load_split, score  # noqa: E402


def predict_interleaved(
    predictors: dict[str, Any], dataset: Any
) -> dict[str, tuple[list[dict[str, Any]], list[float]]]:
    """COCO results and per-call ms of every predictor on every image of ``dataset``; each
    image goes through every predictor in turn, so a slower machine phase hits them alike."""
    from instseg.data.coco import instances_to_coco
    from instseg.data.io import read_image

    out: dict[str, tuple[list[dict[str, Any]], list[float]]] = {k: ([], []) for k in predictors}
    first = read_image(dataset.images[0].path)
    for predictor in predictors.values():
        predictor(first)  # warm-up
    for rec in dataset.images:
        image = read_image(rec.path)
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            inst = predictor(image)
            out[name][1].append((time.perf_counter() - t0) * 1000)
            out[name][0].extend(instances_to_coco(inst, rec.id, predictor.cat_ids))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="nuclei", help="checkpoint, training folder or shipped name")
    p.add_argument("--dataset", default="dsb2018_stage1_subset", help="shared dataset folder name")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from instseg.export import export_onnx
    from instseg.inference import Predictor

    torch.set_num_threads(args.threads)
    _, held_out = load_split(args.dataset)
    tmp = Path(tempfile.mkdtemp(prefix="deploy_"))
    fp32 = tmp / "model.onnx"
    print(export_onnx(args.model, fp32).summary(), flush=True)
    runs = {
        "pytorch": lambda: Predictor(args.model, device="cpu"),
        "onnxruntime": lambda: Predictor(fp32, threads=args.threads),
        "openvino": lambda: Predictor(fp32, backend="openvino", threads=args.threads),
    }
    predictors = {}
    for name, make in runs.items():
        try:
            predictors[name] = make()
        except Exception as exc:  # noqa: BLE001 - e.g. OpenVINO not installed: say so, go on
            print(f"{name}: skipped ({str(exc).splitlines()[0]})", flush=True)
    rows = []
    for name, (results, times) in predict_interleaved(predictors, held_out).items():
        s = score(held_out, results, f1=True)
        rows.append({"run": name, **s, "median_ms": float(np.median(times)),
                     "p90_ms": float(np.percentile(times, 90))})  # fmt: skip
    base = rows[0]
    print(f"\n{args.model} on the {len(held_out)} held-out images of {args.dataset}, {args.threads} threads")
    print("| run | segm AP | AP50 | F1@0.5 | median ms | p90 ms | x faster than pytorch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['F1']:.3f} | {r['median_ms']:.0f} | "
              f"{r['p90_ms']:.0f} | {base['median_ms'] / r['median_ms']:.2f} |")  # fmt: skip
    print("command: python " + " ".join(["bench/deploy_accuracy.py", *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
