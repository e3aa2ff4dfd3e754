"""Shared helpers of the accuracy benchmarks (``train_pennfudan.py``, ``train_nuclei.py``).

* data: a shared dataset, split 80/20 with ``InstanceDataset.split(0.2, seed=0)`` (a seeded
  shuffle of the image list, the same every run);
* "ours": ``instseg train`` (the CLI's own argument parser and ``run``, in this process), no
  validation set during training so the whole budget trains; evaluation after the budget;
  scored as trained (plain ``predict``) and "+ TTA" (``tta_options``: flip TTA with the
  flips it trained with, for Mask R-CNN one box refinement pass, and the mask threshold
  chosen on every third training image; for SOLOv2 with F1 (nuclei) also the score cut-off
  chosen there; ``--no-tta`` skips it). "solov2" with F1: one more row, "solov2 + score
  cut-off", the plain predictions' F1 at the score cut-off chosen on every third training
  image (``score_cutoff_row``; ``--no-tta`` skips it too). ``--eval-only`` re-scores the
  checkpoint an earlier run left in ``--out`` (writes ``results_eval_only.json``); ``--set
  KEY=JSON`` sets a model attribute on every checkpoint before scoring (inference options);
* scoring: segm AP / AP50 / AP75 (COCO, maxDets 100, our evaluator), AP at maxDets 1000, and
  F1 / precision / recall at IoU 0.5 of the detections scoring >= ``F1_SCORE_THRESHOLD``;
* a plain table and a JSON file.

Every training gets the same wall-clock budget and ``torch.set_num_threads(threads)``;
evaluation is timed separately and not counted in the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/x.py` from anywhere imports this checkout
    sys.path.insert(0, str(REPO))

from instseg.data.dataset import InstanceDataset  # noqa: E402

#: detections scoring below this are ignored by the F1 / precision / recall figures
F1_SCORE_THRESHOLD = 0.5
VAL_FRACTION, SPLIT_SEED = 0.2, 0
#: scale TTA factors of the '+ TTA' row of a fixed-scale SOLOv2 (``--tta-scales auto``)
SOLOV2_TTA_SCALES = (1.0, 1.2, 1.4)


def data_root() -> Path:
    """``$INSTSEG_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("INSTSEG_DATA", REPO.parent / "shared" / "data"))


def load_split(name: str, data: str | None = None) -> tuple[InstanceDataset, InstanceDataset]:
    """``(train, val)`` of a shared dataset: ``split(0.2, seed=0)`` (deterministic)."""
    from instseg.data.formats import load_dataset

    path = Path(data) if data else data_root() / name
    if not path.exists():
        raise SystemExit(f"dataset not found: {path} (pass --data or set INSTSEG_DATA)")
    return load_dataset(path).split(VAL_FRACTION, seed=SPLIT_SEED)


def add_common_arguments(p: argparse.ArgumentParser, methods: str, augment: str) -> None:
    """``--minutes --out --methods --model --threads --seed --data --augment``."""
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per method")
    p.add_argument("--out", required=True, help="folder for checkpoints, logs and results.json")
    p.add_argument("--methods", default=methods, help=f"comma-separated subset of {methods}")
    p.add_argument(
        "--model", default=None, help="our zoo model (default: the recommended Mask R-CNN)"
    )
    p.add_argument(
        "--solov2-model", default=None, help="zoo model of the solov2 method (default: recommended)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads of every method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="dataset folder (default: the shared copy)")
    p.add_argument("--augment", default=augment, help="`instseg train --augment` preset for ours")
    p.add_argument(
        "--max-val", type=int, default=None, help="evaluate on the first N val images (smoke tests)"
    )
    p.add_argument("--ours-args", default="", help="extra `instseg train` arguments of ours")
    p.add_argument(
        "--no-tta", action="store_true",
        help="skip the '+ TTA' and 'solov2 + score cut-off' rows",
    )
    p.add_argument(
        "--eval-only", action="store_true",
        help="score the checkpoints of ours/solov2 that an earlier run left in --out (no training)",
    )  # fmt: skip
    p.add_argument("--solov2-args", default="", help="extra `instseg train` arguments of solov2")
    p.add_argument(
        "--tta-scales", default="auto", metavar="F,F,...|auto|none",
        help="scale TTA factors of the '+ TTA' rows (instseg --tta-scales); auto: "
        f"{','.join(f'{f:g}' for f in SOLOV2_TTA_SCALES)} for fixed-scale SOLOv2, none for "
        "Mask R-CNN",
    )  # fmt: skip
    p.add_argument(
        "--choose-split", type=float, default=0.0, metavar="F",
        help="hold out this fraction of the training images (seeded) from training and choose "
        "the inference settings on it; 0 (default): choose on every third training image",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON",
        help="set a model attribute (value as JSON) on every checkpoint before scoring it",
    )  # fmt: skip


def tta_scales(text: str, model: Any) -> tuple[float, ...]:
    """``--tta-scales`` for ``model``: ``auto`` -> :data:`SOLOV2_TTA_SCALES` for a SOLOv2 with
    a fixed ``input_scale``, else none; ``none`` -> ``()``; else the listed factors."""
    if text == "auto":
        fixed = getattr(model, "family", None) == "solov2" and model.input_scale is not None
        return SOLOV2_TTA_SCALES if fixed else ()
    if text == "none":
        return ()
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise SystemExit(f"--tta-scales {text!r}: expected auto, none or F,F,...") from None


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["KEY=JSON", ...]`` (``--set``) -> ``{key: value}``; a bad item exits with its text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError("expected KEY=JSON")
            out[key] = json.loads(value)
        except ValueError as err:
            raise SystemExit(f"--set {item!r}: {err}") from None
    return out


def parse_methods(text: str, known: Sequence[str]) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        raise SystemExit(f"--methods: unknown {bad}; choose from {','.join(known)}")
    return methods


def recommended(family: str) -> str:
    """The zoo's recommended (CPU default) model of ``family``."""
    from instseg.models.zoo import MODELS

    names = [n for n, s in MODELS.items() if s.family == family and s.recommended]
    if not names:
        raise SystemExit(f"the zoo has no recommended {family} model")
    return names[0]


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# -- ours: `instseg train` ------------------------------------------------------------------
def train_ours(
    train_set: InstanceDataset,
    model_name: str,
    out: Path,
    minutes: float,
    seed: int = 0,
    augment: str = "default",
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Train ``model_name`` (``""``: ``--init`` in ``extra_args``) with ``instseg train`` (its
    parser and ``run``, this process).

    The training split is written to ``out/train.json`` (image paths relative to it) and
    passed as ``--data``. Returns ``{"command", "train_s", "steps", "checkpoint"}``.
    """
    from instseg.cli import train as train_cli
    from instseg.engine.checkpoint import load_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    data_json = train_set.save_coco(out / "train.json")
    model = ["--model", model_name] if model_name else []  # none: --init in extra_args
    argv = ["--data", str(data_json), *model, "--out", str(out),
            "--time-budget", f"{minutes:g}", "--seed", str(seed), "--augment", augment,
            "--no-progress", "--device", "cpu", *extra_args]  # fmt: skip
    parser = argparse.ArgumentParser(prog="instseg train")
    train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rc = train_cli.run(args)
    train_s = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"instseg train exited with {rc}")
    ck = load_checkpoint(out / "last.pt")
    return {
        "command": "instseg train " + shlex.join(argv),
        "train_s": train_s,
        "steps": int(ck["step"]),
        "checkpoint": str(out / "last.pt"),
        "config": ck["config"],
    }


def trained_info(out: Path) -> dict[str, Any]:
    """``--eval-only``: the row fields of a finished ``train_ours`` run in ``out``."""
    from instseg.engine.checkpoint import load_checkpoint

    path = out / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"--eval-only: no checkpoint {path}")
    ck = load_checkpoint(path)
    rows = json.loads((out.parent / "results.json").read_text()).get("results", [])
    old = next((r for r in rows if r.get("checkpoint") == str(path)), {})
    return {"command": old.get("command"), "train_s": old.get("train_s"),
            "steps": int(ck["step"]), "checkpoint": str(path), "config": ck["config"]}  # fmt: skip


#: model attributes set on every checkpoint this module loads for scoring (``--set
#: KEY=JSON``: an inference setting such as SOLOv2's ``nms_sigma``); empty by default
INFERENCE_SETTINGS: dict[str, Any] = {}


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """``instseg.inference.loading.load_model`` + :data:`INFERENCE_SETTINGS`."""
    from instseg.inference.loading import load_model

    model, meta = load_model(path, device=device)
    for key, value in INFERENCE_SETTINGS.items():
        if not hasattr(model, key):
            raise AttributeError(f"--set {key}: {type(model).__name__} has no such attribute")
        setattr(model, key, value)
    return model, meta


def predict_checkpoint(
    path: Path, dataset: InstanceDataset, device: str = "cpu", **options: Any
) -> list[dict[str, Any]]:
    """COCO results of a trained instseg checkpoint on ``dataset`` (``options``: test-time
    augmentation ``tta``, ``box_refine``, ``tta_scales``, ``tta_agreement``, and model
    attributes such as ``mask_threshold``)."""
    from instseg.engine.evaluate import predict_dataset
    from instseg.inference.tta import with_tta

    model, meta = load_checkpoint(path, device=device)
    wrap = {k: options.pop(k) for k in TTA_KEYS if k in options}
    for key, value in options.items():
        setattr(model, key, value)
    runner = with_tta(model, wrap.get("tta", "none"), wrap.get("tta_scales", ()),
                      wrap.get("tta_agreement", 0.0), wrap.get("box_refine", 0))  # fmt: skip
    return predict_dataset(runner, dataset, device=device, label_to_cat_id=meta.get("cat_ids"))


#: options of :func:`predict_checkpoint` that wrap the model instead of setting its attributes
TTA_KEYS = ("tta", "tta_scales", "tta_agreement", "box_refine")


def tta_options(
    path: Path,
    choose_set: InstanceDataset,
    augment: str,
    device: str = "cpu",
    score_cutoff: bool = False,
    scales: str = "auto",
) -> dict[str, Any]:
    """The '+ TTA' inference of a checkpoint: the flips it trained with (``hv`` for
    ``--augment microscopy``, else ``h``), for Mask R-CNN one box refinement pass, scale TTA
    (``scales``, ``--tta-scales``: :func:`tta_scales`), and the mask threshold (and agreement
    power) chosen on ``choose_set`` (:func:`choosing_images`; ``choose_thresholds``); with
    ``score_cutoff``, also the F1-best score cut-off on the same images at that threshold, as
    ``"f1_score_threshold"`` (not a model attribute)."""
    from instseg.data.transforms import PRESETS
    from instseg.inference.calibrate import SCORE_CANDIDATES, choose_thresholds
    from instseg.inference.tta import with_tta

    model, _ = load_checkpoint(path, device=device)
    options: dict[str, Any] = {"tta": "hv" if PRESETS[augment].vflip else "h"}
    if model.family == "maskrcnn":
        options["box_refine"] = 1
    factors = tta_scales(scales, model)
    if factors:
        options["tta_scales"] = factors
    runner = with_tta(model, options["tta"], factors, 0.0, options.get("box_refine", 0))
    calib = choose_set
    # one network pass per image chooses both (the cut-off on the chosen threshold's masks)
    found = choose_thresholds(
        runner, calib, score_candidates=SCORE_CANDIDATES if score_cutoff else None
    )
    print(
        f"mask threshold {found.mask_threshold:g} chosen on {len(calib)} images: "
        f"{found.ap}", flush=True,
    )  # fmt: skip
    options["mask_threshold"] = found.mask_threshold
    if factors:
        print(f"agreement power {found.agreement:g} chosen there: {found.agreement_ap}")
        options["tta_agreement"] = found.agreement
    if found.score_cutoff is not None:
        shown = ", ".join(f"{c:g}: {v:.3f}" for c, v in found.f1.items())
        print(f"score cut-off {found.score_cutoff:g} chosen on {len(calib)} images (F1 {shown})")
        options["f1_score_threshold"] = found.score_cutoff
    return options


# -- scoring --------------------------------------------------------------------------------
def score(
    val: InstanceDataset,
    results: list[dict[str, Any]],
    f1: bool = False,
    f1_cut: float = F1_SCORE_THRESHOLD,
) -> dict[str, float]:
    """segm ``AP AP50 AP75`` (COCO, maxDets 100) + ``AP_1000`` (maxDets 1000) and, with ``f1``,
    ``F1 precision recall`` at IoU 0.5 over detections with score >= ``f1_cut``."""
    from instseg.engine.evaluate import coco_summary
    from instseg.evaluation.coco_eval import evaluate
    from instseg.evaluation.cocoeval_accumulate import summarize_value
    from instseg.evaluation.matching_dataset import evaluate_coco_matching

    gt = val.to_coco()
    s = coco_summary(gt, results, "segm")
    out = {"AP": s["AP"], "AP50": s["AP50"], "AP75": s["AP75"], "detections": float(len(results))}
    segm = [r for r in results if "segmentation" in r]
    out["AP_1000"] = 0.0
    if segm:  # the 12 COCO stats fix maxDets at 100 for AP: read the 1000 column directly
        r = evaluate(gt, segm, "segm", max_dets=(1, 100, 1000))
        out["AP_1000"] = summarize_value(
            r.precision, r.recall, r.iou_thresholds, r.area_labels, r.max_dets, max_det=1000
        )
    if f1:
        rep = evaluate_coco_matching(
            gt, segm, thresholds=(0.5,), score_threshold=f1_cut, semantic=False
        )
        st = rep.at(0.5)
        out.update(F1=st.f1, precision=st.precision, recall=st.recall)
    return out


def timed(fn: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


# -- report ---------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], f1: bool) -> str:
    """``method | segm AP | AP50 | (F1@0.5) | train min | steps`` (AP in [0, 1])."""
    cols = ["method", "segm AP", "AP50"] + (["F1@0.5"] if f1 else []) + ["train min", "steps"]

    def cell(row: dict[str, Any], col: str) -> str:
        if col == "method":
            return str(row["method"])
        if col == "train min":
            return "-" if row.get("train_s") is None else f"{row['train_s'] / 60:.1f}"
        if col == "steps":
            return "-" if row.get("steps") is None else str(row["steps"])
        key = {"segm AP": "AP", "AP50": "AP50", "F1@0.5": "F1"}[col]
        return f"{row[key]:.3f}" if key in row else "-"

    body = [[cell(r, c) for c in cols] for r in rows]
    widths = [
        max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)
    ]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cols), sep, *(line(b) for b in body)])


def finish(
    out: Path,
    bench: str,
    rows: list[dict[str, Any]],
    f1: bool,
    meta: dict[str, Any],
    name: str = "results.json",
) -> Path:
    """Print the table and the command; write ``out/name``."""
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    print(f"\n{bench}: {meta.get('n_train')} train / {meta.get('n_val')} val images, "
          f"{meta.get('minutes')} min per method, {meta.get('threads')} threads")  # fmt: skip
    print(table(rows, f1))
    print(f"command: {command}")
    path = out / name
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"bench": bench, "command": command, **meta, "results": rows}, indent=1)
    )
    print(f"wrote {path}")
    return path


# -- the benchmark loop ---------------------------------------------------------------------
def add_reference_arguments(p: argparse.ArgumentParser) -> None:
    """Settings of torchvision's reference Mask R-CNN (``baselines.py``)."""
    p.add_argument(
        "--ref-long-side", type=int, default=512, help="torchvision resize: long side (px)"
    )
    p.add_argument("--ref-lr", type=float, default=1e-3, help="AdamW lr for batch 2")
    p.add_argument(
        "--ref-scratch", action="store_true",
        help="the reference's MobileNetV2 from scratch instead of ImageNet weights",
    )  # fmt: skip


def run_method(
    method: str,
    args: argparse.Namespace,
    train_set: InstanceDataset,
    val_set: InstanceDataset,
    f1: bool,
    choose_set: InstanceDataset,
) -> list[dict[str, Any]]:
    """Train (within ``args.minutes``) and score one method -> its result rows (ours and
    solov2: one more with TTA; solov2 with F1: also one with a calibrated score cut-off;
    unless ``--no-tta``)."""
    import gc

    import torch

    out = Path(args.out) / method
    row: dict[str, Any] = {"method": method}
    extra: list[dict[str, Any]] = []  # the '+ TTA' / '+ score cut-off' rows
    print(f"\n== {method}: {args.minutes:g} min budget, {args.threads} threads", flush=True)
    torch.manual_seed(args.seed)
    if method in ("ours", "solov2"):
        family = "maskrcnn" if method == "ours" else "solov2"
        name = (args.model if method == "ours" else args.solov2_model) or recommended(family)
        flags = shlex.split(args.ours_args if method == "ours" else args.solov2_args)
        if args.eval_only:
            info = trained_info(out)
        else:
            info = train_ours(train_set, name, out, args.minutes, args.seed, args.augment, flags)
        results, eval_s = timed(lambda: predict_checkpoint(out / "last.pt", val_set))
        row.update(method=f"{method} ({name})", **info)
        if method == "solov2" and f1 and not args.no_tta:
            extra.append(score_cutoff_row(row, out / "last.pt", choose_set, val_set, results))
        if not args.no_tta:
            cutoff = method == "solov2" and f1
            extra.append(tta_row(row, out / "last.pt", choose_set, val_set, args.augment, f1, cutoff,
                                 args.tta_scales))  # fmt: skip
    elif method == "reference":
        if args.eval_only:
            raise RuntimeError("--eval-only: the reference keeps no checkpoint to score")
        from bench.baselines import predict_torchvision, torchvision_reference, train_reference
        from instseg.models.autoconfig import DatasetSizeStats, suggest_config

        dets = int(
            suggest_config(DatasetSizeStats.from_dataset(train_set)).get("max_detections", 100)
        )
        pretrained = not args.ref_scratch
        settings = {"backbone": "mobilenet_v2", "imagenet": pretrained,
                    "long_side": args.ref_long_side, "box_detections_per_img": dets}  # fmt: skip
        model = torchvision_reference(
            len(train_set.categories), args.ref_long_side, pretrained, box_detections_per_img=dets
        )
        info = train_reference(model, train_set, args.minutes, out, lr=args.ref_lr, seed=args.seed)
        results, eval_s = timed(lambda: predict_torchvision(model, val_set))
        init = "ImageNet" if pretrained else "from scratch"
        row.update(method=f"reference (torchvision MobileNetV2, {init})", settings=settings,
                   lr=args.ref_lr, **info)  # fmt: skip
        del model
    elif method == "watershed":
        from bench.baselines import watershed_results

        results, eval_s = timed(lambda: watershed_results(val_set))
        row.update(method="watershed (no training)", train_s=None, steps=None)
    else:
        raise ValueError(method)
    row.update(score(val_set, results, f1=f1), eval_s=eval_s)
    gc.collect()
    print(f"== {row['method']}: {_shown(row)}", flush=True)
    return [row, *extra]


def tta_row(
    row: dict[str, Any],
    path: Path,
    choose_set: InstanceDataset,
    val_set: InstanceDataset,
    augment: str,
    f1: bool,
    score_cutoff: bool,
    scales: str = "auto",
) -> dict[str, Any]:
    """The '+ TTA' row: ``tta_options`` chosen on ``choose_set``, the held-out images
    predicted with them; with ``score_cutoff`` (SOLOv2 with F1: its focal-loss scores sit
    lower than Mask R-CNN's softmax) F1 at the score cut-off chosen there too."""
    t0 = time.perf_counter()
    options = tta_options(path, choose_set, augment, score_cutoff=score_cutoff, scales=scales)
    calib_s = time.perf_counter() - t0
    cut = float(options.get("f1_score_threshold", F1_SCORE_THRESHOLD))
    attrs = {k: v for k, v in options.items() if k != "f1_score_threshold"}
    res, eval_s = timed(lambda: predict_checkpoint(path, val_set, **attrs))
    name = f"{row['method']} + TTA"
    if "f1_score_threshold" in options:
        name += f", score cut-off {cut:g}"
    out = {**row, "method": name, "inference": options, **score(val_set, res, f1, cut),
           "eval_s": eval_s, "calibrate_s": calib_s}  # fmt: skip
    print(f"== {out['method']}: {_shown(out)}", flush=True)
    return out


def score_cutoff_row(
    row: dict[str, Any],
    path: Path,
    choose_set: InstanceDataset,
    val_set: InstanceDataset,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """The 'solov2 + score cut-off' row: the same predictions, F1 over the detections scoring
    >= the cut-off with the best F1 on ``choose_set`` (``choose_score_threshold``) instead of the fixed ``F1_SCORE_THRESHOLD``; AP unchanged."""
    from instseg.inference.calibrate import choose_score_threshold

    t0 = time.perf_counter()
    model, _ = load_checkpoint(path, device="cpu")
    calib = choose_set
    cut, f1s = choose_score_threshold(model, calib)
    shown = ", ".join(f"{c:g}: {v:.3f}" for c, v in f1s.items())
    print(f"score cut-off {cut:g} chosen on {len(calib)} images (F1 {shown})", flush=True)
    out = {**row, "method": f"{row['method']} + score cut-off {cut:g}",
           "inference": {"f1_score_threshold": cut}, **score(val_set, results, True, cut),
           "calibrate_s": time.perf_counter() - t0}  # fmt: skip
    print(f"== {out['method']}: {_shown(out)}", flush=True)
    return out


def _shown(row: dict[str, Any]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in row.items() if isinstance(v, float)}


def choosing_images(
    train_set: InstanceDataset, fraction: float
) -> tuple[InstanceDataset, InstanceDataset, str]:
    """``(training images, images that choose the inference settings, how)``: with
    ``fraction`` > 0 (``--choose-split``) a seeded split of the training images, the chosen
    part never trained on; else every third training image (trained on too). The held-out
    images choose nothing either way."""
    if fraction > 0:
        train, choose = train_set.split(fraction, seed=SPLIT_SEED)
        return train, choose, f"split({fraction:g}, seed={SPLIT_SEED}) of the training images"
    every_third = train_set.subset(list(range(0, len(train_set), 3)))
    return train_set, every_third, "every third training image"


def run_benchmark(
    bench: str,
    dataset: str,
    args: argparse.Namespace,
    known: Sequence[str],
    f1: bool,
    split: tuple[InstanceDataset, InstanceDataset, str] | None = None,
) -> list[dict[str, Any]]:
    """Split ``dataset`` (or take ``split``: ``(train, held-out, how)``), run every method of
    ``args.methods`` in turn, print and save."""
    methods = parse_methods(args.methods, known)
    INFERENCE_SETTINGS.clear()
    INFERENCE_SETTINGS.update(parse_settings(args.set))
    set_threads(args.threads)
    if split is None:
        train_set, val_set = load_split(dataset, args.data)
        how = f"split({VAL_FRACTION:g}, seed={SPLIT_SEED})"
    else:
        train_set, val_set, how = split
    train_set, choose_set, choose_text = choosing_images(train_set, args.choose_split)
    if args.max_val:
        val_set = val_set.subset(list(range(min(args.max_val, len(val_set)))))
    rows = []
    for method in methods:
        try:
            rows.extend(run_method(method, args, train_set, val_set, f1, choose_set))
        except Exception as err:  # noqa: BLE001 - one broken method must not lose the others
            print(f"== {method} failed: {type(err).__name__}: {err}", flush=True)
            rows.append({"method": method, "error": f"{type(err).__name__}: {err}"})
    meta = {"dataset": dataset, "n_train": len(train_set), "n_val": len(val_set),
            "val_image_ids": [r.id for r in val_set.images], "split": how,
            "n_choose": len(choose_set), "choose": choose_text,
            "minutes": args.minutes, "threads": args.threads, "set": dict(INFERENCE_SETTINGS),
            "f1_score_threshold": F1_SCORE_THRESHOLD if f1 else None}  # fmt: skip
    name = "results_eval_only.json" if args.eval_only else "results.json"
    finish(Path(args.out), bench, rows, f1, meta, name)
    return rows
