"""Sources: folders with bad files, recursion, globs, videos, name collisions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from instseg.errors import DataError
from instseg.inference import iter_sources
from instseg.inference.sources import count_items
from tests.inference import blob_image


def make_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blob_image(32, 40, [(10, 10, 5)])).save(root / "a.png")
    Image.fromarray(blob_image(30, 36, [(15, 15, 6)], seed=1)).save(root / "b.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def write_video(path: Path, n: int = 4, fourcc: str = "MJPG") -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 5, (64, 48))
    for i in range(n):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 0] = 255  # BGR blue
        frame[10:20, 10 + 5 * i : 20 + 5 * i] = 255
        w.write(frame)
    w.release()


def test_folder_with_bad_files(tmp_path: Path) -> None:
    items = list(iter_sources(make_folder(tmp_path / "in")))
    assert [it.name for it in items] == ["a", "b", "broken", "empty", "notes"]
    ok = {it.name: it for it in items if it.ok}
    assert set(ok) == {"a", "b"}
    assert (
        ok["a"].image is not None
        and ok["a"].image.shape == (32, 40, 3)
        and ok["a"].image.dtype == np.uint8
    )
    bad = {it.name: it.error for it in items if not it.ok}
    assert "cannot read image" in str(bad["broken"])
    assert "empty (0 bytes)" in str(bad["empty"])
    assert "not an image or video" in str(bad["notes"])
    assert all(e is not None and "\n" not in e for e in bad.values())
    assert count_items(tmp_path / "in") == 5


def test_recursive_and_hidden(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(blob_image(20, 20, [])).save(root / "top.png")
    Image.fromarray(blob_image(20, 20, [])).save(root / "sub" / "deep.png")
    (root / ".hidden.png").write_bytes(b"")
    assert [it.name for it in iter_sources(root)] == ["top"]
    assert [it.name for it in iter_sources(root, recursive=True)] == ["sub/deep", "top"]


def test_single_file_glob_and_collisions(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "in")
    Image.fromarray(blob_image(20, 20, [])).save(root / "a.jpg")
    assert [it.name for it in iter_sources(root / "a.png")] == ["a"]
    got = list(iter_sources(str(root / "*.png")))
    assert [it.name for it in got] == ["a", "broken", "empty"]
    assert [it.name for it in iter_sources(root)][:2] == ["a", "a_png"]  # a.jpg sorts first
    assert [it.name for it in iter_sources(str(tmp_path / "**" / "*.jpg"))] == ["in/a", "in/b"]


def test_missing_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        list(iter_sources(tmp_path / "nope"))
    with pytest.raises(DataError, match="matched no files"):
        list(iter_sources(str(tmp_path / "*.png")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder has no files"):
        list(iter_sources(tmp_path / "empty"))


@pytest.mark.parametrize("suffix,fourcc", [(".avi", "MJPG"), (".mp4", "mp4v")])
def test_video_frames(tmp_path: Path, suffix: str, fourcc: str) -> None:
    path = tmp_path / f"clip{suffix}"
    write_video(path, 4, fourcc)
    items = list(iter_sources(path))
    assert [it.name for it in items] == [f"clip_{i:06d}" for i in range(4)]
    assert [it.frame for it in items] == [0, 1, 2, 3]
    img = items[0].image
    assert img is not None and img.shape == (48, 64, 3)
    assert img[40, 50, 2] > 200 and img[40, 50, 0] < 60  # BGR blue arrives as RGB blue
    assert items[1].file_name.endswith(f"clip{suffix}#frame=1")
    assert [it.frame for it in iter_sources(path, video_stride=2)] == [0, 2]
    assert count_items(path) == 4


def test_bad_video_is_a_failed_item(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 100)
    (tmp_path / "zero.avi").write_bytes(b"")
    items = list(iter_sources(tmp_path))
    assert [it.ok for it in items] == [False, False]
    assert all(it.error for it in items)


def test_list_of_sources(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "in")
    (tmp_path / "other").mkdir()
    Image.fromarray(blob_image(20, 20, [])).save(tmp_path / "other" / "a.png")
    Image.fromarray(blob_image(20, 20, [])).save(tmp_path / "other" / "a_png.png")
    (tmp_path / "third").mkdir()
    Image.fromarray(blob_image(20, 20, [])).save(tmp_path / "third" / "a.png")
    srcs: list[str | Path] = [
        root / "a.png",
        tmp_path / "other",
        str(root / "b.*"),
        tmp_path / "third" / "a.png",
    ]
    items = list(iter_sources(srcs))
    names = [it.name for it in items]
    assert names == ["a", "a_png", "a_png_png", "b", "a_png_1"]  # names never collide
    assert [it.path for it in items][:2] == [root / "a.png", tmp_path / "other" / "a.png"]
    with pytest.raises(DataError, match="no inputs"):
        list(iter_sources([]))
