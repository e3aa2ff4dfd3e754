"""Fuzz the dataset readers and the checkpoint loader with mutated copies of valid inputs.

Every case must end as a valid dataset (it is then used: every image and its instances are
decoded, the dataset is written as COCO) or as instseg's own one-line error (DataError /
InstsegError). Anything else is a crash: another exception, a multi-line message, or a case
that runs past ``--timeout`` seconds (a hang).

Readers and mutations:

* ``coco``, ``via``: JSON trees with 1-3 edits (a value replaced by a nasty one: NaN,
  +-Infinity, huge/negative numbers, empty or unicode strings, wrong types, deep nesting;
  keys deleted or added, list items duplicated (duplicate ids), lists and objects swapped),
  or the text's bytes truncated / flipped / spliced;
* ``yolo``: label lines with tokens replaced, lines added, dropped or cut; bytes flipped;
* ``label-png``, ``instance-pngs``: the label image or a mask replaced by an array of another
  shape, depth or content (16-bit, float TIFF with NaN, RGB, empty), or its bytes mutated;
* ``checkpoint``: ``torch.save`` bytes mutated, or other objects saved in its place.

    python bench/fuzz_readers.py                          # 100,000 cases per reader
    python bench/fuzz_readers.py --cases 2000 --readers coco yolo
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instseg.errors import InstsegError  # noqa: E402

READERS = ("coco", "via", "yolo", "label-png", "instance-pngs", "checkpoint", "ctc-tracks", "mots")
NASTY: list[Any] = [None, True, False, 0, -1, 1, -(2**31), 2**63, 10**30, 1e308, -1e308, 0.5,
                    math.nan, math.inf, -math.inf, "", "x", "ü😀\u0000\ud7ff", "../../x", "NaN",
                    [], {}, [[]], [1, 2], [[1, 2, 3]], {"a": 1}, {"size": [1, 1], "counts": "0"}]  # fmt: skip


class Hang(BaseException):
    """A case ran past the time limit (BaseException: readers' ``except Exception`` miss it)."""


#: stands for a deeply nested value; :func:`to_json` writes it as ``[[[...1...]]]``
DEEP = "\u2063deep\u2063"


def nasty(rng: random.Random) -> Any:
    """A value that breaks naive readers; now and then deeply nested (:data:`DEEP`)."""
    return DEEP if rng.random() < 0.05 else copy.deepcopy(rng.choice(NASTY))


def to_json(tree: Any, rng: random.Random) -> str:
    """JSON text of a mutated tree (NaN/Infinity as Python writes them; :data:`DEEP` expanded)."""
    text = json.dumps(tree, ensure_ascii=rng.random() < 0.5)
    depth = rng.choice([30, 5000, 200_000])
    deep = (
        "[" * depth + "1" + "]" * depth
        if rng.random() < 0.5
        else '{"k":' * depth + "1" + "}" * depth
    )
    return text.replace(json.dumps(DEEP), deep).replace(json.dumps(DEEP, ensure_ascii=False), deep)


def _slots(obj: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every ``(container, key)`` of a JSON tree."""
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        out.append((obj, key))
        _slots(value, out)
    return out


def mutate_tree(obj: Any, rng: random.Random) -> Any:
    """1-3 random edits of a deep copy of a JSON tree."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        slots = _slots(obj, [])
        if not slots:
            return nasty(rng)
        parent, key = rng.choice(slots)
        value, op = parent[key], rng.randrange(6)
        if op == 0:
            parent[key] = nasty(rng)
        elif op == 1:
            del parent[key]
        elif op == 2 and isinstance(value, list):
            value.append(copy.deepcopy(value[0]) if value else nasty(rng))  # duplicate ids
        elif op == 2 and isinstance(value, dict):
            value[rng.choice(["id", "extra", "bbox", "area", "size", "name", ""])] = nasty(rng)
        elif op == 3 and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[key] = rng.choice([-value, value * 1e9, value + 0.5, math.nan, -(value + 1)])
        elif op == 4:
            parent[key] = dict(enumerate(value)) if isinstance(value, list) else (
                list(value.values()) if isinstance(value, dict) else str(value))  # fmt: skip
        else:
            parent[key] = str(value)[:20] if rng.random() < 0.5 else [value]
    return obj


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Truncate, flip, insert or splice bytes."""
    b = bytearray(data)
    op = rng.randrange(4)
    if op == 0 or not b:
        return bytes(b[: rng.randrange(len(b) + 1)])
    if op == 1:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
        b[i:i] = b[i:j]
    return bytes(b)


# -- seeds: one valid input per reader --------------------------------------------------------
def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rgb(h: int = 20, w: int = 30, v: int = 90) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def coco_seed() -> Any:
    from instseg import masks

    m = np.zeros((20, 30), bool)
    m[3:9, 4:12] = True
    rle = masks.encode(m)[0]
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
                   {"id": 2, "file_name": "b.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]],
             "bbox": [2, 2, 10, 8], "area": 80.0, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "segmentation": {"size": [20, 30], "counts": rle["counts"]},
             "bbox": [4, 3, 8, 6], "area": 48.0, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [20, 30], "counts": [65, 5, 15, 5, 510]}},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog", "supercategory": "animal"}],
    }  # fmt: skip


def via_seed() -> Any:
    return {"_via_settings": {}, "_via_img_metadata": {
        "a.png123": {"filename": "a.png", "size": 123, "regions": [
            {"shape_attributes": {"name": "polygon", "all_points_x": [2, 12, 12], "all_points_y": [2, 2, 10]},
             "region_attributes": {"class": "cat"}},
            {"shape_attributes": {"name": "rect", "x": 3, "y": 4, "width": 5, "height": 6}, "region_attributes": {}},
        ]},
        "b.png9": {"filename": "b.png", "regions": {"0": {
            "shape_attributes": {"name": "ellipse", "cx": 10, "cy": 8, "rx": 4, "ry": 3, "theta": 0.3},
            "region_attributes": {"label": {"dog": True}}}, "1": {
            "shape_attributes": {"name": "circle", "cx": 20, "cy": 10, "r": 3}, "region_attributes": {}}}},
    }}  # fmt: skip


YOLO_TOKENS = ["nan", "inf", "-inf", "-1", "1e999", "", "0x10", "ü", "3", "-0.5", "1.0001", "9" * 400, "1e-320"]  # fmt: skip
YOLO_SEED = "0 0.1 0.1 0.5 0.1 0.5 0.6\n1 0.6 0.6 0.9 0.6 0.9 0.9 0.6 0.9\n"
CTC_SEED = "1 0 4 0\n2 0 2 0\n3 3 4 2\n4 3 4 2\n"  # CTC res_track.txt: id first last parent


def _labels() -> np.ndarray:
    lab = np.zeros((20, 30), np.uint8)
    lab[2:8, 3:10], lab[10:18, 12:25] = 1, 7
    return lab


class Case:
    """One reader's working folder: the seed written once, then a mutated input per case."""

    def __init__(self, reader: str, root: Path) -> None:
        self.reader, self.root = reader, root
        root.mkdir(parents=True, exist_ok=True)
        for module in ("torch", "cv2", "tifffile", "scipy.ndimage", "yaml", "instseg.structures"):
            __import__(module)  # imported before the timed cases: never cut by the time limit
        getattr(self, "_seed_" + reader.replace("-", "_"))()

    def _seed_coco(self) -> None:
        _png(self.root / "a.png", _rgb())
        _png(self.root / "b.png", _rgb(v=30))
        self.tree, self.target = coco_seed(), self.root / "gt.json"

    def _seed_via(self) -> None:
        self._seed_coco()
        self.tree, self.target = via_seed(), self.root / "via.json"

    def _seed_yolo(self) -> None:
        for name in ("a", "b"):
            _png(self.root / "images" / "train" / f"{name}.png", _rgb())
        (self.root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (self.root / "data.yaml").write_text("names: [cat, dog, bird]\n")
        self.target = self.root / "labels" / "train" / "a.txt"

    def _seed_label_png(self) -> None:
        _png(self.root / "images" / "a.png", _rgb())
        self.target = self.root / "masks" / "a.png"

    def _seed_instance_pngs(self) -> None:
        _png(self.root / "s1" / "images" / "s1.png", _rgb())
        lab = _labels()
        _png(self.root / "s1" / "masks" / "m1.png", (lab == 1).astype(np.uint8) * 255)
        self.target = self.root / "s1" / "masks" / "m0.png"

    def _seed_checkpoint(self) -> None:
        import io

        import torch

        self.ckpt = {"model": {"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.int64)},
                     "config": {"name": "tiny", "num_classes": 2}, "step": 3, "class_names": ["a", "b"]}  # fmt: skip
        buf = io.BytesIO()
        torch.save(self.ckpt, buf)
        self.ckpt_bytes, self.target = buf.getvalue(), self.root / "last.pt"

    def _seed_ctc_tracks(self) -> None:
        self.text, self.target = CTC_SEED, self.root / "res_track.txt"

    def _seed_mots(self) -> None:
        from pycocotools import mask as mask_utils

        lab = _labels()
        rles = [mask_utils.encode(np.asfortranarray(lab == v).astype(np.uint8))["counts"].decode() for v in (1, 7)]
        h, w = lab.shape
        self.text = f"0 1 1 {h} {w} {rles[0]}\n0 2 2 {h} {w} {rles[1]}\n1 1 1 {h} {w} {rles[0]}\n"
        self.target = self.root / "mots.txt"

    # -- one mutated input ------------------------------------------------------------------
    def mutate(self, rng: random.Random) -> None:
        """Write a mutated input to ``self.target``."""
        if self.reader in ("coco", "via"):
            if rng.random() < 0.75:
                text = to_json(mutate_tree(self.tree, rng), rng)
                self.target.write_text(text, encoding="utf-8", errors="surrogatepass")
            else:
                self.target.write_bytes(mutate_bytes(json.dumps(self.tree).encode(), rng))
        elif self.reader == "yolo":
            self.target.write_bytes(_mutate_yolo(rng))
        elif self.reader in ("ctc-tracks", "mots"):
            self.target.write_bytes(_mutate_yolo(rng, self.text))
        elif self.reader in ("label-png", "instance-pngs"):
            _write_array_or_bytes(self.target, rng, _labels() if self.reader == "label-png" else
                                  (_labels() == 7).astype(np.uint8) * 255)  # fmt: skip
        else:
            self._mutate_checkpoint(rng)

    def _mutate_checkpoint(self, rng: random.Random) -> None:
        import torch

        if rng.random() < 0.7:
            self.target.write_bytes(mutate_bytes(self.ckpt_bytes, rng))
            return
        obj = mutate_tree(self.ckpt, rng)
        try:
            torch.save(obj, self.target)
        except Exception:  # an object torch cannot save: keep the bytes mutation instead
            self.target.write_bytes(mutate_bytes(self.ckpt_bytes, rng))

    def read(self, rng: random.Random) -> None:
        """Read the input as instseg would, and use what it returns."""
        if self.reader == "checkpoint":
            from instseg.engine.checkpoint import load_checkpoint

            load_checkpoint(self.target)
            return
        if self.reader == "ctc-tracks":
            from instseg.data.ctc import read_tracks

            sum(t.last - t.first for t in read_tracks(self.target).values())
            return
        if self.reader == "mots":
            from instseg.data.mots import read_mots

            sum(int(f.masks.sum()) for f in read_mots(self.target) if f.masks is not None)
            return
        from instseg.data.formats import load_dataset

        src = self.target if self.reader in ("coco", "via") else self.root
        ds = load_dataset(src, format=self.reader, skip_invalid=rng.random() < 0.5,
                          check_images=rng.random() < 0.5)  # fmt: skip
        ds.stats()
        for i in range(len(ds)):
            ds[i]
        json.dumps(ds.to_coco())


def _mutate_yolo(rng: random.Random, seed: str = YOLO_SEED) -> bytes:
    """A text format of whitespace-separated lines (YOLO, CTC tracks, MOTS): bytes flipped,
    a token replaced by a nasty one, a line cut short, or a junk line added."""
    lines = seed.splitlines()
    op = rng.randrange(4)
    if op == 0:
        return mutate_bytes(seed.encode(), rng)
    k = rng.randrange(len(lines))
    tokens = lines[k].split()
    if op == 1:
        tokens[rng.randrange(len(tokens))] = rng.choice(YOLO_TOKENS)
    elif op == 2:
        tokens = tokens[: rng.randrange(len(tokens) + 1)]
    else:
        lines.append(
            " ".join(rng.choice(["0", "0.5", "1", "nan", "2"]) for _ in range(rng.randint(0, 12)))
        )
    lines[k] = " ".join(tokens)
    return ("\n".join(lines) + "\n").encode()


def _write_array_or_bytes(path: Path, rng: random.Random, good: np.ndarray) -> None:
    """A label/mask file of a random shape, depth and content, or the good one's bytes mutated."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(path.stem + ".*"):
        old.unlink()
    if rng.random() < 0.4:
        _png(path, good)
        path.write_bytes(mutate_bytes(path.read_bytes(), rng))
        return
    h, w = rng.choice([(20, 30), (20, 30), (30, 20), (1, 1), (21, 30), (2, 1)])
    dtype = rng.choice([np.uint8, np.uint16, np.int32, np.float32, np.bool_, np.int64])
    arr = np.asarray(np.random.default_rng(rng.randrange(2**32)).integers(-3, 9, (h, w))).astype(
        dtype
    )
    if dtype == np.float32 and arr.size:
        arr.flat[0] = rng.choice([math.nan, 0.5, math.inf])
    if rng.random() < 0.2:
        arr = np.stack([arr] * rng.choice([2, 3, 4]), axis=-1)
    if (
        rng.random() < 0.5
        and dtype in (np.uint8, np.uint16, np.bool_)
        and arr.size
        and arr.ndim == 2
    ):
        Image.fromarray(arr).save(path)
    else:
        rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4)
        tifffile.imwrite(path.with_suffix(".tif"), arr, photometric="rgb" if rgb else "minisblack")


# -- running cases ----------------------------------------------------------------------------
def run_case(case: Case, rng: random.Random, timeout: float = 10.0) -> str:
    """``"ok"``, ``"error"`` (instseg's one-line error) or ``"crash: ..."`` for one case."""
    case.mutate(rng)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.read(rng)
    except InstsegError as err:
        text = str(err)
        return "error" if text and "\n" not in text else f"crash: multi-line message {text[:200]!r}"
    except Hang:
        return f"crash: hang (> {timeout:g} s)"
    except Exception as exc:  # what the fuzzing looks for (RecursionError, MemoryError too)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return f"crash: {type(exc).__name__}: {str(exc)[:150]} at {Path(frame.filename).name}:{frame.lineno}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return "ok"


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang


def case_rng(seed: int, reader: str, k: int) -> random.Random:
    """The random source of case ``k`` (``--replay K`` runs just that case)."""
    return random.Random(f"{seed}-{reader}-{k}")


def fuzz(
    reader: str, cases: range, seed: int, root: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the ``cases`` of one reader -> counts, cases/s and the distinct crashes."""
    case = Case(reader, root / reader)
    counts = {"ok": 0, "error": 0, "crash": 0}
    crashes: dict[str, int] = {}
    t0 = time.perf_counter()
    for k in cases:
        outcome = run_case(case, case_rng(seed, reader, k))
        kind = outcome.split(":")[0]
        counts[kind] += 1
        if kind == "crash" and outcome not in crashes:
            crashes[outcome] = k
            log(f"  {reader} --replay {k}: {outcome}")
    return {"reader": reader, "cases": len(cases), "per_s": len(cases) / (time.perf_counter() - t0),
            **counts, "distinct_crashes": crashes}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=100_000, help="cases per reader (default 100,000)")
    p.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replay", type=int, default=None, metavar="K", help="run only case K")
    p.add_argument("--memory-gb", type=float, default=8.0,
                   help="address-space limit: a runaway allocation is a reported crash (MemoryError), "
                   "not the machine's OOM killer")  # fmt: skip
    args = p.parse_args(argv)
    import resource

    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases = range(args.cases) if args.replay is None else range(args.replay, args.replay + 1)
    rows = []
    saved_stderr = os.dup(2)
    try:  # libpng / OpenCV print every corrupt file on the C stderr: silence them
        with open(os.devnull, "w") as null, tempfile.TemporaryDirectory() as tmp:
            os.dup2(null.fileno(), 2)
            for reader in args.readers:
                rows.append(fuzz(reader, cases, args.seed, Path(tmp)))
    finally:
        os.dup2(saved_stderr, 2)
    print("| reader | cases | cases/s | valid | instseg error | crashes | distinct crashes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['reader']} | {r['cases']} | {r['per_s']:.0f} | {r['ok']} | {r['error']} | "
              f"{r['crash']} | {len(r['distinct_crashes'])} |")  # fmt: skip
    return 1 if any(r["crash"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
