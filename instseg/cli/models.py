"""List the model zoo names, one per line (zoo order: per family, recommended CPU default first).

``--shipped`` lists the trained models shipped in the package instead (usable as ``--model
NAME`` offline), with the validation figures of their model card.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also print family and description")
    p.add_argument(
        "--shipped",
        action="store_true",
        help="list the trained models shipped in the package (--model NAME) and their figures",
    )


def _print_shipped() -> None:
    from instseg.engine.checkpoint import SHIPPED, shipped_path
    from instseg.inference.loading import shipped_card

    for name in SHIPPED:
        card = shipped_card(name)
        val = card.get("val", {})
        figures = ", ".join(
            f"{k} {val[k]:.3f}" for k in ("AP", "AP50", "F1", "precision", "recall") if k in val
        )
        n_val = card.get("n_val")
        print(f"{name}  {card.get('model', '?')}  {shipped_path(name)}")
        print(f"  data: {card.get('data', '?')}")
        if figures:
            print(f"  validation ({n_val} held-out images): segm {figures} (F1 at IoU 0.5)")


def run(args: argparse.Namespace) -> int:
    from instseg.models.zoo import MODELS, list_models

    if args.shipped:
        _print_shipped()
        return 0
    for name in list_models():
        if args.verbose:
            spec = MODELS[name]
            star = "*" if spec.recommended else " "
            print(f"{name:32s} {star} {spec.family:9s} {spec.description}")
        else:
            print(name)
    return 0
