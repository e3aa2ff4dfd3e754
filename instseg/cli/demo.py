"""Run the pipeline end to end on generated data; nothing is downloaded.

Writes synthetic scenes and a short tracked clip (PNG images + COCO JSON), prints the
dataset summary, draws overlays (ground truth until a trained model ships) and prints
where everything is.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from instseg.data.dataset import InstanceDataset
    from instseg.structures import Instances

    Predictor = Callable[[np.ndarray], Instances]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="instseg-demo", metavar="DIR", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the generated data (default: %(default)s)",
    )
    p.add_argument(
        "--images",
        type=_positive,
        default=8,
        metavar="N",
        help="number of scenes (default: %(default)s)",
    )
    p.add_argument(
        "--frames",
        type=_positive,
        default=16,
        metavar="T",
        help="frames in the clip (default: %(default)s)",
    )


def _draw(
    ds: InstanceDataset, out_dir: Path, prefix: str, predictor: Predictor | None
) -> list[np.ndarray]:
    """Overlay every image of ``ds`` (predictions, or ground truth without a predictor)."""
    from PIL import Image

    from instseg.viz import overlay

    drawn = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(ds.images):
        image = ds.load_image(i)
        shown = predictor(image) if predictor is not None else ds.instances(i)
        canvas = overlay(image, shown, ds.class_names, show_scores=predictor is not None)
        Image.fromarray(canvas).save(out_dir / f"{prefix}{Path(rec.file_name).stem}.png")
        drawn.append(canvas)
    return drawn


def _grid(images: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tile same-size images ``(H, W, 3)`` into one sheet with 2-pixel white gutters."""
    import numpy as np

    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (h + 2) - 2, min(columns, len(images)) * (w + 2) - 2, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = img
    return sheet


def run_demo(
    out: str | Path = "instseg-demo",
    seed: int = 0,
    n_images: int = 8,
    n_frames: int = 16,
    predictor: Predictor | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Generate data, summarise it and draw overlays under ``out``; returns the written paths.

    ``predictor`` maps an RGB uint8 ``(H, W, 3)`` image to ``Instances`` (a trained model's
    predictions, with scores); without one the overlays show the ground truth.
    """
    from PIL import Image

    from instseg.cli.info import format_stats
    from instseg.data.synthetic import SceneConfig, make_dataset
    from instseg.data.synthetic_clips import ClipConfig, make_clip_dataset

    root = Path(out)
    scenes = make_dataset(
        n_images, SceneConfig(height=256, width=256), seed=seed, out_dir=root / "scenes"
    )
    clip = make_clip_dataset(ClipConfig(num_frames=n_frames), seed=seed, out_dir=root / "clip")
    log(format_stats(scenes.stats(), "synthetic scenes (COCO JSON, RLE masks)"))
    n_tracks = len({a.track_id for r in clip.images for a in r.annotations})
    log(f"\nclip: {len(clip)} frames, {clip.num_instances} instances, {n_tracks} tracks")

    what = "predictions" if predictor is not None else "ground truth"
    drawn = _draw(scenes, root / "overlays", "scene_", predictor)
    frames = _draw(clip, root / "overlays", "clip_", predictor)
    paths = {
        "scene images": root / "scenes" / "images",
        "scene annotations": root / "scenes" / "annotations.json",
        "clip frames": root / "clip" / "frames",
        "clip annotations": root / "clip" / "annotations.json",
        f"overlays ({what})": root / "overlays",
        "overview": root / "overview.png",
        "clip animation": root / "clip.gif",
    }
    Image.fromarray(_grid(drawn)).save(paths["overview"])
    gif = [Image.fromarray(f) for f in frames]
    gif[0].save(paths["clip animation"], save_all=True, append_images=gif[1:], duration=120, loop=0)
    log("")
    width = max(len(k) for k in paths)
    for name, path in paths.items():
        log(f"{name:<{width}}  {path}")
    return paths


def run(args: argparse.Namespace) -> int:
    from instseg.errors import DataError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "output path exists and is not a folder")
    try:
        run_demo(out, seed=args.seed, n_images=args.images, n_frames=args.frames)
    except OSError as exc:
        raise DataError(
            exc.filename or out, None, f"cannot write ({exc.strerror or exc})"
        ) from None
    return 0
