"""Print images, instances, per-class counts and an object-size histogram of a dataset."""

from __future__ import annotations

import argparse
import json

from instseg.cli.common import add_dataset_arguments, load_from_args, report_skipped


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--no-verify", action="store_true", help="do not decode every image (faster)")


def format_stats(stats: dict, fmt: str) -> str:
    """Human-readable summary of :meth:`InstanceDataset.stats`."""
    lines = [
        f"format      {fmt}",
        f"images      {stats['images']} ({stats['images_without_instances']} without instances)",
        f"instances   {stats['instances']} ({stats['crowd']} crowd), "
        f"{stats['per_image_min']}-{stats['per_image_max']} per image",
        f"categories  {stats['categories']} declared, {stats['categories_used']} used",
        "",
        "per class:",
    ]
    width = max((len(k) for k in stats["per_class"]), default=5)
    for name, n in stats["per_class"].items():
        lines.append(f"  {name:<{width}}  {n}")
    lines += ["", "object size (mask area, pixels):"]
    total = max(stats["instances"], 1)
    for name, n in stats["size_histogram"].items():
        bar = "#" * round(40 * n / total)
        lines.append(f"  {name:>11}  {n:>6}  {bar}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instseg.data.formats import detect_format

    ds = load_from_args(args, check_images=not args.no_verify)
    stats = ds.stats()
    fmt = args.format or detect_format(Path(args.src))
    if args.json:
        print(json.dumps({"format": fmt, **stats}, indent=2))
    else:
        print(format_stats(stats, fmt))
    report_skipped(ds.skipped)
    return 0
