"""``instseg eval --tracking GT RES [--json OUT]`` (argparse only here): tracking measures of a
result against its ground truth, by :func:`instseg.evaluation.tracking_eval.evaluate_tracking`.

GT and RES are CTC folders (``<seq>_GT`` with ``TRA/``, a result with ``mask*.tif`` and
``res_track.txt``: TRA, DET, SEG, HOTA, IDF1, MOTA and the AOGM counts), two folders of label
images (value = track id, paired by sorted name) or two MOTS txt files (HOTA, DetA, AssA,
MOTA, MOTSA, sMOTSA, IDF1, IDSW as TrackEval). The eval command (``instseg/cli/eval.py``)
defines ``gt``, ``pred`` and ``--json``, calls :func:`add_tracking_arguments` and dispatches
to :func:`run_tracking`.
"""

from __future__ import annotations

import argparse
import math
import sys

from instseg.cli.eval_matching import _write_json

_COUNTS = ("NS", "FN", "FP", "ED", "EA", "EC")


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--tracking`` flag, in its own group."""
    group = parser.add_argument_group("tracking (--tracking GT RES)")
    group.add_argument(
        "--tracking",
        action="store_true",
        help="GT and RES are tracked sequences: CTC folders (<seq>_GT with TRA/; mask*.tif + "
        "res_track.txt), two folders of label images (value = track id) or two MOTS txt files",
    )


def _value(key: str, value: float) -> str:
    if math.isnan(value):
        return "n/a (no SEG/ in the ground truth)" if key == "SEG" else "n/a"
    return f"{value:.4f}" if key not in ("IDSW", "AOGM", "AOGM_0", *_COUNTS) else f"{value:g}"


def format_tracking(kind: str, metrics: dict[str, float]) -> str:
    """The short table ``instseg eval --tracking`` prints."""
    shown = [k for k in metrics if k not in (*_COUNTS, "AOGM", "AOGM_0")]
    lines = [f"tracking measures ({kind})"]
    lines += [f"  {k:<7} {_value(k, metrics[k])}" for k in shown]
    if "AOGM" in metrics:
        counts = "  ".join(f"{k} {metrics[k]:g}" for k in _COUNTS)
        lines.append(f"  {'AOGM':<7} {metrics['AOGM']:g} of AOGM_0 {metrics['AOGM_0']:g}  ({counts})")
    return "\n".join(lines)


def run_tracking(args: argparse.Namespace) -> int:
    """Print the measures; write them as JSON to ``args.json`` (NaN as null). Bad input raises
    DataError (the CLI prints it as one line)."""
    from instseg.evaluation.tracking_eval import evaluate_tracking, tracking_input_kind

    gt, res = getattr(args, "gt", None), getattr(args, "pred", None)
    if not gt or not res:
        print("instseg eval: error: --tracking needs GT and RES", file=sys.stderr)
        return 2
    kind = tracking_input_kind(gt, res)
    metrics = evaluate_tracking(gt, res)
    print(format_tracking(kind, metrics))
    if getattr(args, "json", None):
        clean = {k: None if math.isnan(v) else v for k, v in metrics.items()}
        _write_json(args.json, {**clean, "input": kind, "gt": str(gt), "res": str(res)})
    return 0
