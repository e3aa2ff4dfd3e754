"""Argument helpers shared by commands (argparse only at import)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

#: same as instseg.data.formats.FORMATS (kept literal so the CLI imports no numpy at startup)
DATASET_FORMATS = ("coco", "label-png", "label-image", "instance-pngs", "yolo", "via")


def add_format_arguments(p: argparse.ArgumentParser) -> None:
    """``[--format F] [--images DIR]``: how to read a dataset given in any format."""
    p.add_argument(
        "--format", "-f", default=None, choices=DATASET_FORMATS, help="dataset format (detected when omitted)"
    )
    p.add_argument("--images", default=None, metavar="DIR", help="folder that COCO/VIA file names are relative to")


def add_dataset_arguments(p: argparse.ArgumentParser, src_help: str = "dataset file or folder") -> None:
    """``SRC [--format F] [--images DIR] [--skip-invalid]``."""
    p.add_argument("src", metavar="SRC", help=src_help)
    add_format_arguments(p)
    p.add_argument("--class-name", default=None, metavar="NAME", help="name of the single class of mask formats (default: object)")
    p.add_argument("--names", default=None, metavar="FILE", help="YOLO class names: data.yaml or one name per line")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad items with a warning each and a count at the end, instead of stopping",
    )


def load_from_args(args: argparse.Namespace, check_images: bool = True) -> Any:
    """Load the dataset named by :func:`add_dataset_arguments`'s arguments."""
    from instseg.data.formats import load_dataset

    return load_dataset(
        args.src,
        format=args.format,
        images_dir=args.images,
        skip_invalid=args.skip_invalid,
        class_name=getattr(args, "class_name", None),
        names=getattr(args, "names", None),
        check_images=check_images,
    )


def report_skipped(skipped: list[str]) -> None:
    """Print the count of skipped items (each was already warned about)."""
    if skipped:
        print(f"skipped {len(skipped)} invalid item(s)", file=sys.stderr)
