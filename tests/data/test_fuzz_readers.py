"""Fuzzing of every reader (``bench/fuzz_readers.py``): mutated COCO / VIA JSON, YOLO labels,
label images, instance masks, checkpoints, CTC track files and MOTS text end as a usable dataset or instseg's one-line
error, never another exception or a hang. Short CI profile: ``INSTSEG_FUZZ_EXAMPLES`` cases
per reader (default 25); the bench runs 100,000."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instseg.errors import DataError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("INSTSEG_FUZZ_EXAMPLES", "25"))


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fuzz_readers", REPO / "bench" / "fuzz_readers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_readers"] = module
    spec.loader.exec_module(module)
    return module


FUZZ = _bench()


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("fuzz")
    return {r: FUZZ.Case(r, root / r) for r in FUZZ.READERS}


@pytest.mark.parametrize("reader", FUZZ.READERS)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(rng=st.randoms(use_true_random=False))
def test_mutated_input_is_read_or_refused_in_one_line(
    cases: dict, reader: str, rng: random.Random
) -> None:
    outcome = FUZZ.run_case(cases[reader], rng)
    assert outcome in ("ok", "error"), outcome


@pytest.mark.parametrize("seed", range(3))
def test_the_seeds_are_valid_inputs(cases: dict, seed: int) -> None:
    """Unmutated, every reader reads its seed (so the fuzzing starts from valid input)."""
    for reader, case in cases.items():
        if reader in ("coco", "via"):
            case.target.write_text(json.dumps(case.tree))
        elif reader == "yolo":
            case.target.write_text(FUZZ.YOLO_SEED)
        elif reader == "checkpoint":
            case.target.write_bytes(case.ckpt_bytes)
        elif reader in ("ctc-tracks", "mots"):
            case.target.write_text(case.text)
        else:
            for old in case.target.parent.glob(case.target.stem + ".*"):
                old.unlink()
            good = (
                FUZZ._labels()
                if reader == "label-png"
                else (FUZZ._labels() == 7).astype("uint8") * 255
            )
            FUZZ._png(case.target, good)
        case.read(random.Random(seed))


def test_deep_nesting_is_a_one_line_error(tmp_path: Path) -> None:
    from instseg.data.coco import load_coco

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        load_coco(path)


# -- what the fuzzing found (each was a crash, a hang or an out-of-memory kill) --------------
def test_via_metadata_that_is_not_an_object(tmp_path: Path) -> None:
    from instseg.data.readers_polygons import read_via

    path = tmp_path / "via.json"
    path.write_text(json.dumps({"_via_img_metadata": [1, 2]}))
    with pytest.raises(DataError, match="_via_img_metadata: must be an object, got list"):
        read_via(path)


def test_polygon_far_outside_the_image_is_refused_before_rasterizing(tmp_path: Path) -> None:
    """pycocotools' memory grows with a polygon's length: 5e8 px would take ~60 GB."""
    from instseg.data.coco import load_coco

    case = FUZZ.Case("coco", tmp_path)
    tree = FUZZ.coco_seed()
    tree["annotations"][0].update(segmentation=[[2, 2, 5e8, 2, 12, 10]], bbox=None, area=None)
    del tree["annotations"][0]["bbox"], tree["annotations"][0]["area"]
    case.target.write_text(json.dumps(tree))
    with pytest.raises(
        DataError, match="annotation id=1: polygon 0 has points far outside the 20x30 image"
    ):
        load_coco(case.target)


def test_corrupt_png_header_is_refused_at_once(tmp_path: Path) -> None:
    """A mask PNG whose header says height 0: OpenCV spent seconds on it; PIL refuses it."""
    import time

    from instseg.data.readers_masks import read_instance_pngs

    case = FUZZ.Case("instance-pngs", tmp_path)
    FUZZ._png(case.target, (FUZZ._labels() == 7).astype("uint8") * 255)
    data = bytearray(case.target.read_bytes())
    data[20:24] = b"\0\0\0\0"  # IHDR height
    case.target.write_bytes(bytes(data))
    t = time.perf_counter()
    with pytest.raises(DataError, match="m0.png: image s1: cannot read label image"):
        read_instance_pngs(tmp_path)
    assert time.perf_counter() - t < 1.0


def test_checkpoint_whose_model_is_not_a_state_dict(tmp_path: Path) -> None:
    import torch

    from instseg.engine.checkpoint import load_checkpoint

    torch.save({"model": {"w": "text"}, "config": {"name": "tiny"}}, tmp_path / "a.pt")
    with pytest.raises(DataError, match="a.pt: model: not a state dict"):
        load_checkpoint(tmp_path / "a.pt")
    torch.save({"model": {}, "config": [1]}, tmp_path / "b.pt")
    with pytest.raises(DataError, match="b.pt: config: not a model config"):
        load_checkpoint(tmp_path / "b.pt")
