"""SIGKILL ``instseg predict`` mid-run, then ``--resume``: nothing half-written is ever an
output, and the finished folder equals an uninterrupted run's.

The run predicts 14 small DSB crops with the shipped model in a subprocess. It is killed once
a few images are journalled, resumed and killed again at a random moment, then resumed to
the end. After each kill every label image and overlay present decodes whole (files are
written to hidden temp names and renamed); the resumed run removes the killed run's temp
files and predicts only the images not done.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from instseg.inference import Predictor, run_batch
from instseg.inference.shards import SHARDS_DIR, read_records
from tests.conftest import REPO, data_path
from tests.inference.test_ray_batch import assert_same_outputs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
N = 14


def _inputs(root: Path) -> Path:
    """``N`` 96x96 crops of 256x256 DSB images."""
    files = sorted((data_path("dsb2018_stage1_subset") / "stage1_train").glob("*/images/*.png"))
    root.mkdir(parents=True)
    k = 0
    for f in files:
        with Image.open(f) as im:
            if im.size == (256, 256):
                im.convert("RGB").crop((30, 30, 126, 126)).save(root / f"c{k:02d}.png")
                k += 1
        if k == N:
            (root / "notes.png").write_text("not an image")  # reported the same way after resume
            return root
    raise AssertionError(f"fewer than {N} 256x256 DSB images")


def _start(src: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "instseg", "predict", str(src), "--model", "nuclei", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], out: Path, done: int, timeout: float = 120) -> None:
    """SIGKILL ``proc`` once ``done`` images are journalled (it must still be running)."""
    deadline = time.monotonic() + timeout
    while len(read_records(out)) < done if (out / SHARDS_DIR).is_dir() else True:
        assert proc.poll() is None, f"predict ended before the kill: {proc.stderr.read() if proc.stderr else ''!r}"
        assert time.monotonic() < deadline, "predict made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _outputs_whole(out: Path) -> None:
    """Every output present decodes whole; anything else is a hidden temp file."""
    for sub, suffix in (("labels", ".png"), ("overlays", ".jpg")):
        for f in (out / sub).iterdir() if (out / sub).is_dir() else ():
            if f.name.startswith("."):
                assert ".tmp" in f.name, f
                continue
            assert f.suffix == suffix, f
            with Image.open(f) as im:
                im.load()  # a truncated file raises here


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in")
    full = tmp_path / "full"
    run_batch(Predictor("nuclei", device="cpu"), src, full, progress=False)
    out = tmp_path / "out"

    _kill_when(_start(src, out), out, done=3)
    _outputs_whole(out)
    first = len(read_records(out))
    assert 3 <= first < N
    (out / "labels" / ".c13.99999.tmp.png").write_bytes(b"\x89PNG half")  # as a kill mid-write leaves

    again = _start(src, out, "--resume")
    time.sleep(random.uniform(0.5, 4.0))  # a random moment: model loading or predicting
    again.send_signal(signal.SIGKILL)
    again.wait(30)
    _outputs_whole(out)

    last = _start(src, out, "--resume")
    _, err = last.communicate(timeout=300)
    assert last.returncode == 1, err.decode()  # 1: the bad file, reported at the end
    assert f"{N} images" in err.decode() and "notes.png" in err.decode()
    assert not list((out / "labels").glob(".*")), "the killed run's temp file was left"
    assert_same_outputs(full, out, n=N)  # results, images, csv, failed.txt, label arrays
