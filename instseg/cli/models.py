"""List the model zoo names, one per line (zoo order: per family, recommended CPU default first)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also print family and description")


def run(args: argparse.Namespace) -> int:
    from instseg.models.zoo import MODELS, list_models

    for name in list_models():
        if args.verbose:
            spec = MODELS[name]
            star = "*" if spec.recommended else " "
            print(f"{name:32s} {star} {spec.family:9s} {spec.description}")
        else:
            print(name)
    return 0
