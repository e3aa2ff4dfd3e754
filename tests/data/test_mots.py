"""The MOTS text reader: a file written with pycocotools' RLEs reads back to the same masks,
ids, classes and ignore regions; the RLE run parser equals pycocotools' encoding; every bad
line is a one-line DataError naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from instseg.data.mots import IGNORE_CLASS, read_mots, read_mots_frames
from instseg.errors import DataError
from instseg.masks import check_rle, rle_runs

H, W = 12, 16


def counts(mask: np.ndarray) -> str:
    """pycocotools' compressed RLE string of a bool mask ``(H, W)``."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def box(y: int, x: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y : y + h, x : x + w] = True
    return m


def write(path: Path, rows: list[tuple[int, int, int, np.ndarray]]) -> Path:
    path.write_text("".join(f"{t} {i} {c} {H} {W} {counts(m)}\n" for t, i, c, m in rows))
    return path


def test_round_trip(tmp_path: Path) -> None:
    rows = [(1, 2001, 2, box(1, 1, 4, 5)), (1, 2002, 2, box(6, 8, 5, 6)),
            (1, 10000, IGNORE_CLASS, box(0, 12, 12, 4)), (3, 2002, 2, box(5, 7, 6, 6)),
            (3, 1005, 1, np.ones((H, W), bool))]  # fmt: skip
    path = write(tmp_path / "seq.txt", rows)
    with path.open("a") as f:
        f.write("\n")  # blank lines are skipped
    frames = read_mots(path)
    assert len(frames) == 4 and [len(f) for f in frames] == [0, 3, 0, 2]
    assert all(f.image_size == (H, W) for f in frames)
    one, three = frames[1], frames[3]
    assert one.track_ids.tolist() == [2001, 2002, 10000]  # type: ignore[union-attr]
    assert one.labels.tolist() == [2, 2, IGNORE_CLASS]
    assert one.iscrowd.tolist() == [False, False, True]  # type: ignore[union-attr]
    got = np.concatenate([one.masks.numpy(), three.masks.numpy()])  # type: ignore[union-attr]
    assert np.array_equal(got, np.stack([m for *_, m in rows]))
    assert one.boxes[0].tolist() == [1, 1, 6, 5]  # xyxy of box(1, 1, 4, 5)
    padded = read_mots_frames(path, frames=6)
    assert len(padded) == 6 and padded[5].ids == [] and padded[5].size == (H, W)
    assert read_mots_frames(write(tmp_path / "empty.txt", []), frames=2)[1].size == (0, 0)


def test_rle_runs_equal_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for k in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random() * (0.05 if k % 2 else 0.6)
        if k % 9 == 0:
            mask[:] = k % 2 == 0
        flat = mask.T.ravel()  # column-major
        edges = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
        want = ([0] if flat[0] else []) + np.diff(edges).tolist()
        assert rle_runs(counts(mask)).tolist() == want
        assert check_rle(counts(mask), h, w) is None
    big = np.zeros((3000, 3000), bool)
    big[-1, -1] = True  # a run past 2**20: a number of five characters
    assert rle_runs(counts(big)).tolist() == [3000 * 3000 - 1, 1]
    big[-1, -1], big[:2999] = False, True  # runs of 2999 and 1 from the third number on: differences of 0
    assert rle_runs(counts(big)).tolist() == [0, *[2999, 1] * 3000]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 2001 2 12 16", r"line 2: expected 'time_frame id class_id img_height img_width rle', got 5 fields"),
        ("1 2001 two 12 16 abc", r"line 2: expected .* \(integers first\), got '1 2001 two 12 16 abc'"),
        ("-1 2001 2 12 16 abc", r"line 2: negative frame, id or class, or an empty image"),
        ("1 2001 2 12 0 abc", r"line 2: negative frame, id or class, or an empty image"),
        ("2 2001 2 10 16 PPYo0", r"line 2: image size 10x16 differs from line 1's 12x16"),
        ("1 2001 2 12 16 {ok}", r"line 2: id 2001 appears twice in frame 1"),
        ("2 2001 2 12 16 5", r"line 2: RLE covers 5 pixels, not 12x16"),
        ("2 2001 2 12 16 0{}", r"line 2: malformed RLE: character outside '0'..'o'"),
        ("2 2001 2 12 16 0P", r"line 2: malformed RLE: the string ends inside a number"),
        ("9 2001 2 12 16 {ok}", r"line 2: time_frame 9 is past the last frame \(4\)"),
    ],
)
def test_bad_lines_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    ok = counts(box(2, 2, 3, 3))
    path = tmp_path / "bad.txt"
    path.write_text(f"1 2001 2 {H} {W} {ok}\n" + line.replace("{ok}", ok) + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_mots(path, frames=5)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.txt: MOTS file not found"):
        read_mots(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"bin.txt: cannot read the MOTS file"):
        read_mots(tmp_path / "bin.txt")
