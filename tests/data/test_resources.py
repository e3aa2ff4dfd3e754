"""Resources: the readers' pixel limit, the training cache's cap, and predict / train
streaming a dataset (memory that does not grow with the images read)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw

from instseg.data import io
from instseg.data.cache import DEFAULT_CACHE_BYTES, default_cache_bytes
from instseg.data.io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    image_size,
    max_image_pixels,
    read_image,
    read_label_image,
    set_max_image_pixels,
)
from instseg.errors import DataError, InstsegError

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture(autouse=True)
def _no_limit_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the default limit and leaves it there."""
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    monkeypatch.setattr(io, "_max_pixels_set", None)


def _files(tmp_path: Path) -> dict[str, Path]:
    """A 10 x 12 RGB PNG and TIFF, and a label PNG and TIFF of the same size."""
    rgb = np.full((10, 12, 3), 90, np.uint8)
    lab = np.zeros((10, 12), np.uint16)
    lab[2:5, 3:7] = 1
    out = {"png": tmp_path / "a.png", "tif": tmp_path / "a.tif"}
    out |= {"label_png": tmp_path / "l.png", "label_tif": tmp_path / "l.tif"}
    Image.fromarray(rgb).save(out["png"])
    tifffile.imwrite(out["tif"], rgb)
    Image.fromarray(lab).save(out["label_png"])
    tifffile.imwrite(out["label_tif"], lab)
    return out


@pytest.mark.parametrize("kind", ["png", "tif", "label_png", "label_tif"])
@pytest.mark.parametrize("how", ["env", "function"])
def test_pixel_limit_refuses_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, how: str
) -> None:
    path = _files(tmp_path)[kind]
    reader = read_label_image if kind.startswith("label") else read_image
    assert reader(path).shape[:2] == (10, 12) and image_size(path) == (10, 12)
    if how == "env":
        monkeypatch.setenv("INSTSEG_MAX_IMAGE_PIXELS", "119")
    else:
        set_max_image_pixels(119)
    decoded: list[int] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))  # PIL decodes here
    monkeypatch.setattr(tifffile.TiffFile, "asarray", lambda self: decoded.append(1))
    for read in (reader, image_size):
        with pytest.raises(DataError) as err:
            read(path)
        assert str(err.value) == (
            f"{path}: image has 120 pixels, over the limit of 119 (INSTSEG_MAX_IMAGE_PIXELS)"
        )
    assert decoded == []  # refused before any pixel was decoded


def test_pixel_limit_at_the_limit_and_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path)
    set_max_image_pixels(120)
    assert read_image(files["png"]).shape == (10, 12, 3)
    assert read_label_image(files["label_tif"]).shape == (10, 12)
    monkeypatch.setenv("INSTSEG_MAX_IMAGE_PIXELS", "5")
    assert max_image_pixels() == 120  # the function's value wins over the environment
    set_max_image_pixels(None)
    assert max_image_pixels() == 5
    monkeypatch.setenv("INSTSEG_MAX_IMAGE_PIXELS", "0")
    assert max_image_pixels() is None
    assert read_image(files["tif"]).shape == (10, 12, 3)
    monkeypatch.delenv("INSTSEG_MAX_IMAGE_PIXELS")
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 2**28


@pytest.mark.parametrize("text", ["-1", "many", "1e9"])
def test_pixel_limit_bad_settings(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("INSTSEG_MAX_IMAGE_PIXELS", text)
    with pytest.raises(InstsegError, match="INSTSEG_MAX_IMAGE_PIXELS must be an integer >= 0"):
        max_image_pixels()
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError):
            set_max_image_pixels(bad)  # type: ignore[arg-type]


def test_pil_guard_does_not_fire_below_our_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL's own guard (here set to 10 pixels: it would refuse the 120-pixel image) is moved
    to our limit during the read, and put back afterwards."""
    path = _files(tmp_path)["png"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert read_image(path).shape == (10, 12, 3)
    assert image_size(path) == (10, 12)
    assert Image.MAX_IMAGE_PIXELS == 10
    set_max_image_pixels(50)  # far over our limit: PIL's guard (at 50) fires, our message
    with pytest.raises(DataError, match="image has over 100 pixels, over the limit of 50 "):
        read_image(path)
    assert Image.MAX_IMAGE_PIXELS == 10


def test_cache_cap_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from instseg.data.loader import TrainingDataset

    monkeypatch.delenv("INSTSEG_CACHE_MB", raising=False)
    assert default_cache_bytes() == DEFAULT_CACHE_BYTES
    monkeypatch.setenv("INSTSEG_CACHE_MB", "64")
    assert default_cache_bytes() == 64 << 20
    assert TrainingDataset(None).cache_bytes == 64 << 20  # type: ignore[arg-type]
    assert TrainingDataset(None, cache_bytes=5).cache_bytes == 5  # type: ignore[arg-type]
    monkeypatch.setenv("INSTSEG_CACHE_MB", "0")
    assert TrainingDataset(None).cache_bytes == 0  # type: ignore[arg-type]
    monkeypatch.setenv("INSTSEG_CACHE_MB", "lots")
    with pytest.raises(InstsegError, match="INSTSEG_CACHE_MB must be a number of MiB >= 0"):
        default_cache_bytes()


# --- streaming -------------------------------------------------------------------------

SIDE = 1500  # pixels; one decoded image is SIDE * SIDE * 3 bytes (6.75 MB)
DECODED = SIDE * SIDE * 3
MIB = 1 << 20


def _dataset(root: Path, n: int) -> Path:
    """``n`` copies of one dark PNG with 4 bright discs (7 KB on disk, 6.75 MB decoded; the
    same content keeps every item's working set equal) and a COCO file with their polygons."""
    img = Image.new("RGB", (SIDE, SIDE), (12, 10, 14))
    draw = ImageDraw.Draw(img)
    polygons = []
    for cx, cy, r in ((300, 300, 60), (900, 400, 90), (500, 1100, 70), (1150, 1150, 110)):
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in t]
        draw.polygon(pts, fill=(200, 190, 220))
        polygons.append([c for p in pts for c in p])
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        img.save(root / "images" / f"im{i:03d}.png", compress_level=1)
        images.append({"id": i + 1, "file_name": f"im{i:03d}.png", "height": SIDE, "width": SIDE})
        for poly in polygons:
            xs, ys = poly[0::2], poly[1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "segmentation": [poly], "bbox": box, "iscrowd": 0})  # fmt: skip
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}
    (root / "train.json").write_text(json.dumps(coco))
    return root


def _rss(pid: int) -> int:
    """Resident memory of a running process in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_trace(args: list[str], log: Path, progress: Callable[[], int]) -> list[tuple[int, int]]:
    """Run ``instseg ARGS`` (training cache 0) to exit 0 -> ``(progress(), RSS bytes)``
    sampled every 20 ms while it runs."""
    env = {**os.environ, "INSTSEG_CACHE_MB": "0"}
    trace: list[tuple[int, int]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "instseg.cli.main", *args], stdout=out, stderr=out, env=env
        )
        while proc.poll() is None:
            done, rss = progress(), _rss(proc.pid)
            if rss:
                trace.append((done, rss))
            time.sleep(0.02)
    assert proc.returncode == 0, log.read_text()[-2000:]
    return trace


def _median(trace: list[tuple[int, int]], lo: int, hi: int) -> float:
    """Median RSS of the samples taken while ``lo <= progress <= hi``."""
    values = [rss for done, rss in trace if lo <= done <= hi]
    assert len(values) >= 3, f"too few samples with progress in [{lo}, {hi}]"
    return float(np.median(values))


def _assert_flat(early: float, late: float, later_items: int, what: str) -> None:
    """Resident memory late in the run exceeds that early in it by less than half of what
    the ``later_items`` read in between decode to (keeping each decoded image, or its
    full-size masks, would add all of that)."""
    later = later_items * DECODED
    print(f"{what}: RSS {early / MIB:.0f} MiB, then {late / MIB:.0f} MiB; "
          f"{later_items} items in between decode to {later / MIB:.0f} MiB")  # fmt: skip
    assert late - early < later / 2, f"{what}: RSS grew {(late - early) / MIB:.0f} MiB"


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


@pytest.mark.slow
def test_predict_and_train_stream(tmp_path: Path) -> None:
    """Memory cap: a fixed one does not fit a test on 2 cores. RLIMIT_AS / RLIMIT_DATA work
    with torch (4 GiB of address space suffices to import it), but one process already
    takes ~1 GiB at its peak (torch, the model, one 1500 px image: Mask R-CNN normalizes it
    and pastes masks in float32 at full size), and a dataset decoding to more than that
    takes minutes to predict. Peak RSS is no measure either: it differs by ~50 MiB from run
    to run (one image's transient buffers). So the test measures what a cap would catch,
    memory kept as the dataset is read: the child's resident memory (/proc VmRSS, every
    20 ms) early in the run against late in it, while the same image is read again and
    again; the 11 images in between (6.75 MB each decoded) may add less than half of their
    decoded size. Training (whose memory grows over its first steps, whatever the data)
    runs the same 20 steps on 4 and on 14 images: late in the run, the 10 more images may
    add less than half of their decoded size. It runs with ``INSTSEG_CACHE_MB=0``: the
    default 2 GiB cache keeps every decoded image, by design (this test then fails)."""
    n = 14
    data = _dataset(tmp_path / "data", n)
    out = tmp_path / "pred"
    trace = _rss_trace(
        ["predict", str(data / "images"), "--model", "nuclei", "--out", str(out),
         "--object-size", "400"],
        tmp_path / "predict.log",
        lambda: _count(out / "labels", "*.png"),
    )  # fmt: skip
    assert len(json.loads((out / "images.json").read_text())["images"]) == n
    assert _count(out / "labels", "*.png") == _count(out / "overlays", "*") == n
    early, late = _median(trace, 1, 2), _median(trace, n - 2, n - 1)  # between images
    _assert_flat(early, late, n - 3, "predict")

    late_rss = [_train_late_rss(tmp_path, data, k) for k in (4, n)]
    _assert_flat(late_rss[0], late_rss[1], n - 4, "train (4 vs 14 images, same steps)")


def _train_late_rss(tmp_path: Path, data: Path, images: int) -> float:
    """Train 20 steps on the first ``images`` images -> median RSS over the last quarter of
    the steps (from step 1 logged to the checkpoint's save)."""
    coco = json.loads((data / "train.json").read_text())
    coco["images"] = coco["images"][:images]
    keep = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    (data / f"train{images}.json").write_text(json.dumps(coco))
    run = tmp_path / f"run{images}"

    def progress() -> int:  # 1 from step 1 (logged) to the first checkpoint save
        logged = (run / "metrics.jsonl").is_file()
        return 2 if _count(run, "*.pt*") else int(logged)

    trace = _rss_trace(
        ["train", "--data", str(data / f"train{images}.json"), "--images", str(data / "images"),
         "--model", "solov2_light_mnv3", "--steps", "20", "--batch-size", "1",
         "--out", str(run), "--no-progress"],
        tmp_path / f"train{images}.log",
        progress,
    )  # fmt: skip
    assert (run / "last.pt").is_file()
    during = [t for t in trace if t[0] == 1]
    return _median(during[-len(during) // 4 :], 1, 1)
