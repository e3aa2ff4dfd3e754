"""Track objects through a sequence: frames through a model, or another segmenter's masks.

    instseg track SOURCE --model M --out DIR [--outputs ctc,mots,coco,csv,overlay]
    instseg track --masks LABELS --out DIR [SOURCE]

SOURCE: a folder of frames (sorted by name; a Cell Tracking Challenge sequence such as
``Fluo-N2DH-SIM+/01``), a glob, a video, or one multi-page TIFF stack (T pages, or a (T, H, W)
/ (T, H, W, C) array). LABELS: label images of another segmenter (a folder or glob, one per
frame, sorted by name, or a multi-page label TIFF), tracked instead of running a model; a
SOURCE given with them is only drawn under the overlay.

With --model, tracks start at the model's stored score cut-off (--score-threshold T sets
another) and detections down to 0.1 under it only continue tracks (ByteTrack's second stage);
--object-size PX|auto rescales the frames so their objects reach the model at the size it
learnt (auto: estimated on the first frame, printed, kept for the rest). --no-divisions for
objects that never divide.

Outputs in DIR (--outputs, comma-separated; default all):
  ctc      ctc/mask000.tif ... and ctc/res_track.txt: the Cell Tracking Challenge's result
           format (a track interrupted by a gap continues under a new label, parent = the old)
  mots     mots.txt: MOTS Challenge text (frame id class_id height width rle; frames from 1,
           id = class_id * 1000 + track id, the identity kept through gaps as in tracks.csv),
           as TrackEval reads it
  coco     coco/results.json (COCO results, image_id = frame index from 0, track_id = the CTC
           label) and coco/images.json (the frames' file names, sizes and categories)
  csv      tracks.csv: track id, first and last frame, parent, frames seen, mean area, path
  overlay  overlay.gif: each track in its own colour with its id and a short trail; the first
           1000 frames, at most 512 px a side; for a video SOURCE also overlay.mp4 (every
           frame, full size, the video's rate). The slowest output on long sequences: leave
           it out (--outputs ctc,mots,coco,csv) when only the numbers matter
All outputs show the same masks (overlaps go to the higher score). Frames that cannot be read
are reported at the end (exit code 1) and written empty; the others are all tracked and
written.
"""

from __future__ import annotations

import argparse
from typing import Any

from instseg.cli.common import add_object_size_argument

OUTPUTS_DEFAULT = "ctc,mots,coco,csv,overlay"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("source", nargs="?", metavar="SOURCE", help="frames: folder, glob, video or TIFF stack")
    p.add_argument("--model", default=None, metavar="M", help="checkpoint, training folder, shipped name or .onnx")
    p.add_argument("--masks", default=None, metavar="LABELS", help="track these label images (folder, glob or TIFF stack) instead")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--outputs", default=OUTPUTS_DEFAULT, metavar="LIST", help=f"what to write (default {OUTPUTS_DEFAULT}; or all)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="score that starts a track (default: the model's stored cut-off); detections "
                   "down to 0.1 under it only continue tracks")  # fmt: skip
    add_object_size_argument(p)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--max-lost", type=int, default=3, help="frames a track may be unseen and continue (3)")
    p.add_argument("--no-divisions", action="store_true",
                   help="objects never divide (people, cars): no track ends in two daughters")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in DIR (all of its outputs)")


def run(args: argparse.Namespace) -> int:
    import sys

    from instseg.tracking import sequence as seq
    from instseg.tracking.tracker import Tracker, TrackerConfig
    from instseg.tracking.writers import parse_outputs

    def usage(message: str) -> int:
        print(f"instseg track: error: {message}", file=sys.stderr)
        return 2

    if bool(args.masks) == bool(args.model) or not (args.masks or args.source):
        return usage("give SOURCE --model M, or --masks LABELS")
    if args.max_lost < 0:
        return usage("--max-lost must be >= 0")
    try:
        outputs = parse_outputs(args.outputs)
    except ValueError as err:
        return usage(f"--outputs: {err}")
    config: dict[str, Any] = {"max_lost": args.max_lost, "divisions": not args.no_divisions}
    cat_ids, names = [1], ["object"]
    if args.masks:
        tracker = Tracker(TrackerConfig(**config))
        total = seq.count_frames(args.masks, labels=True)
        frames = seq.label_frames(args.masks, images=args.source)
    else:
        from instseg.cli.common import check_object_size_arg
        from instseg.inference import Predictor
        from instseg.inference.object_size import ObjectSizeError
        from instseg.tracking.run import detector, tracker_for

        bad = check_object_size_arg(args, "track")
        if bad is not None:
            return bad
        try:
            predictor = Predictor(args.model, device=args.device, score_threshold=args.score_threshold,
                                  object_size=args.object_size, log=lambda m: print(m, file=sys.stderr))  # fmt: skip
        except ObjectSizeError as err:
            return usage(str(err))
        tracker = tracker_for(predictor, **config)
        origin = ("--score-threshold" if args.score_threshold is not None else "the model's calibrated cut-off"
                  if predictor.score_cutoff is not None else "the model stores no cut-off")  # fmt: skip
        print(f"tracks start at score {tracker.config.high_score:g} ({origin}); detections down to "
              f"{tracker.config.low_score:g} continue them", file=sys.stderr)  # fmt: skip
        total = seq.count_frames(args.source)
        cat_ids, names = list(predictor.cat_ids), list(predictor.class_names)
        frames = seq.predicted_frames(args.source, detector(predictor, tracker.config.low_score))
    fps = seq.source_fps(args.source) if args.source else None
    report = seq.track_sequence(frames, args.out, tracker, progress=sys.stderr.isatty(), total=total,
                                overwrite=args.overwrite, outputs=outputs, cat_ids=cat_ids,
                                class_names=names, fps=fps)  # fmt: skip
    print(report.summary(), file=sys.stderr)
    return report.exit_code
