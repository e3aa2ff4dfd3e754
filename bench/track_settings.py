"""The sweeps that chose the tracker's settings on Fluo-N2DH-SIM+ (GOWT1 chose nothing).

    python bench/track_settings.py gt  [--overlap 0.1,0.2,0.3] [--area 0.05,0.2]
    python bench/track_settings.py e2e   # needs bench/track_cells.py's cached detections

``gt``: division settings from SIM+'s GT masks, TRA / HOTA / IDF1 by ``instseg eval
--tracking`` (equal to py-ctcmetrics) and divisions found. ``e2e``: the default tracker, without
divisions and without the low-score stage, on the shipped model's SIM+ detections.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import data_root  # noqa: E402
from bench.track_cells import _paint, divisions_found, gt_frames, predicted, score, write_ctc  # noqa: E402
from instseg.data.ctc import label_instances  # noqa: E402
from instseg.structures import Instances  # noqa: E402
from instseg.tracking.tracker import Tracker, TrackerConfig  # noqa: E402

SEQ = "Fluo-N2DH-SIM+"


def run(frames: list[Instances], name: str, out: Path, **config: Any) -> None:
    gt_dir = data_root() / "ctc_tracking" / SEQ / "01_GT"
    tracker = Tracker(TrackerConfig(**config))
    result = ([_paint(tracker.update(f)) for f in frames], tracker.tracks())
    write_ctc(out / name, result)
    r = score(gt_dir, out / name)
    found, true = divisions_found(gt_dir, out / name)
    shown = "  ".join(f"{k} {float(r[k]):.4f}" for k in ("TRA", "DET", "HOTA", "IDF1"))
    print(f"{name:<28} {shown}  divisions {found}/{true}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("setting", choices=["gt", "e2e"])
    ap.add_argument("--overlap", default="0.1,0.2,0.3")
    ap.add_argument("--area", default="0.05,0.2")
    ap.add_argument("--out", default="runs/track_settings")
    args = ap.parse_args()
    out = Path(args.out) / args.setting
    seq_dir = data_root() / "ctc_tracking" / SEQ / "01"
    if args.setting == "gt":
        frames = [label_instances(x) for x in gt_frames(seq_dir)]
        for f in frames:
            f.track_ids = None
        for ov in map(float, args.overlap.split(",")):
            for area in map(float, args.area.split(",")):
                run(frames, f"overlap {ov} area {area}", out, division_overlap=ov, division_min_area=area)
        return
    frames, cut = predicted(seq_dir, Path("runs/track_cells") / SEQ / "predictions.json")
    run(frames, "default", out, high_score=cut)
    run(frames, "no divisions", out, high_score=cut, divisions=False)
    run(frames, "no low-score stage", out, high_score=cut, low_score=cut)


if __name__ == "__main__":
    main()
