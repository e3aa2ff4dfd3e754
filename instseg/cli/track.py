"""Track objects through a sequence: frames through a model, or another segmenter's masks.

    instseg track SOURCE --model M --out DIR [--score-threshold T]
    instseg track --masks LABELS_DIR --out DIR

SOURCE is a folder of frames (a Cell Tracking Challenge sequence such as ``Fluo-N2DH-SIM+/01``),
a glob or a video; ``--masks`` tracks label images (one per frame, sorted by name) instead of
running a model. Writes ``DIR/ctc/`` (``mask000.tif`` ... with track ids, ``res_track.txt`` with
divisions: the challenge's result format) and ``DIR/tracks.csv``. Frames that cannot be read
are reported at the end (exit code 1); the others are all tracked and written.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", metavar="SOURCE", help="frames folder, glob or video")
    p.add_argument("--model", default=None, metavar="M", help="checkpoint, training folder, shipped name or .onnx")
    p.add_argument("--masks", default=None, metavar="DIR", help="track these label images instead")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--score-threshold", type=float, default=None, help="drop detections below this score")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--max-lost", type=int, default=3, help="frames a track may be unseen and continue (3)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in DIR")


def run(args: argparse.Namespace) -> int:
    import sys

    from instseg.tracking.sequence import label_frames, predicted_frames, track_sequence
    from instseg.tracking.tracker import Tracker, TrackerConfig

    if bool(args.masks) == bool(args.source and args.model):
        print("instseg track: error: give SOURCE --model M, or --masks DIR", file=sys.stderr)
        return 2
    if args.max_lost < 0:
        print("instseg track: error: --max-lost must be >= 0", file=sys.stderr)
        return 2
    tracker = Tracker(TrackerConfig(max_lost=args.max_lost))
    if args.masks:
        frames = label_frames(args.masks)
    else:
        from instseg.inference import Predictor

        predictor = Predictor(args.model, device=args.device, score_threshold=args.score_threshold)
        frames = predicted_frames(args.source, predictor)
    report = track_sequence(frames, args.out, tracker, progress=sys.stderr.isatty(), overwrite=args.overwrite)
    print(report.summary(), file=sys.stderr)
    return report.exit_code
