"""Store ``object_size`` and ``score_cutoff`` in the shipped nuclei model, in place (no training).

The shipped model (``instseg/weights/nuclei.pt``, card: ``scripts/train_nuclei_model.py``)
trained on the 87 training images of dsb2018_stage1_subset ``split(0.2, seed=0)`` without a
validation set and was scored on the 22 held-out images; those 22 are its validation split:

* ``object_size``: :func:`instseg.engine.learnt.learnt_object_size` of the 87 training images
  and the model's config (trained and run at x1.7: the median diameter as it is);
* ``score_cutoff``: :func:`instseg.engine.learnt.choose_score_cutoff` of the model's plain
  predictions on the 22 held-out images (F1@0.5).

Weights and every other entry are kept byte for byte as loaded; the card gains
``score_cutoff_f1`` (F1 per candidate) and ``settings_command``.

    python scripts/store_nuclei_settings.py [--data DIR] [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import load_split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="dataset folder (default: the shared copy)")
    p.add_argument("--check", action="store_true", help="print what would be stored only")
    args = p.parse_args(argv)

    import torch

    from instseg.engine.checkpoint import save_checkpoint, shipped_path
    from instseg.engine.evaluate import predict_dataset
    from instseg.engine.learnt import choose_score_cutoff, learnt_object_size
    from instseg.inference.loading import load_model

    torch.set_num_threads(2)
    path = shipped_path("nuclei")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    train_set, val_set = load_split("dsb2018_stage1_subset", args.data)
    size = learnt_object_size(ckpt["config"], train_set)
    model, meta = load_model(path)
    results = predict_dataset(model, val_set, label_to_cat_id=meta.get("cat_ids"))
    cutoff, f1 = choose_score_cutoff(val_set.to_coco(), results)
    print(f"object_size {size} px ({len(train_set)} training images); score_cutoff {cutoff:g} "
          f"on {len(val_set)} held-out images (F1@0.5 "
          + ", ".join(f"{c:g}: {v:.4f}" for c, v in f1.items()) + ")")  # fmt: skip
    if args.check:
        return 0
    card = dict(ckpt.get("card") or {})
    card["score_cutoff_f1"] = {f"{c:g}": round(v, 4) for c, v in f1.items()}
    card["settings_command"] = "python scripts/store_nuclei_settings.py"
    ckpt.update(object_size=size, score_cutoff=cutoff, card=card)
    save_checkpoint(ckpt, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
