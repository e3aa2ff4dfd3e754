"""Convert a dataset in any supported format to COCO instances JSON."""

from __future__ import annotations

import argparse

from instseg.cli.common import add_dataset_arguments, load_from_args, report_skipped


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="COCO JSON to write")
    p.add_argument("--no-verify", action="store_true", help="do not decode every image (faster)")


def run(args: argparse.Namespace) -> int:
    ds = load_from_args(args, check_images=not args.no_verify)
    out = ds.save_coco(args.output)
    print(f"wrote {out}: {len(ds)} images, {ds.num_instances} instances, {len(ds.categories)} categories")
    report_skipped(ds.skipped)
    return 0
