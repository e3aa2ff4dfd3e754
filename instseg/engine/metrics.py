"""Training logs: ``metrics.jsonl`` (one JSON object per logged step / evaluation) and a PNG
(matplotlib, imported lazily, Agg canvas).

Step lines: ``{"step", "epoch", "lr", "loss", "<each loss term>", "time"}``; evaluation lines:
``{"step", "epoch", "eval": {"segm": {AP, AP50, ...}, "bbox": {...}}}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "plot_curves"]


class MetricsLog:
    """Append-only JSON-lines log; on resume, lines after the resumed step are dropped."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if (rec := _record(line)) is not None and rec.get("step", math.inf) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        records = (_record(line) for line in self.path.read_text().splitlines())
        return [r for r in records if r is not None]


def _record(line: str) -> dict[str, Any] | None:
    """A log line's object; None for a blank or partial line (a killed run's last write)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def plot_curves(records: list[dict[str, Any]], out: str | Path) -> Path | None:
    """Loss terms (log scale) and validation AP against step, saved as a PNG (matplotlib Agg)."""
    steps = [r for r in records if "loss" in r and math.isfinite(r["loss"])]
    evals = [r for r in records if "eval" in r]
    if not steps and not evals:
        return None
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, thread-safe

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    keys = sorted({k for r in steps for k in r if k.startswith("loss")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in steps if k in r and r[k] > 0]
        if pts:
            ax1.plot(*zip(*pts), label=k, lw=2 if k == "loss" else 1)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("training loss")
    if keys:
        ax1.legend(fontsize=7)
    for iou_type in ("segm", "bbox"):
        pts = [(r["step"], r["eval"][iou_type]["AP"]) for r in evals if iou_type in r["eval"]]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=f"{iou_type} AP")
    ax2.set_xlabel("step")
    ax2.set_title("validation AP")
    if evals:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, dpi=90)
    return path
