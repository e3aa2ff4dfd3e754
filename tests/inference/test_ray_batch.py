"""predict_ray against run_batch: the same outputs, resume without work, a killed actor loses
nothing; run_batch --resume; the manifest and the journal."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from instseg.cli.main import main
from instseg.errors import DataError
from instseg.inference import Predictor, iter_sources, predict_ray, run_batch
from instseg.inference.ray_batch import read_entry
from instseg.inference.shards import SHARDS_DIR, Entry, build_manifest, read_records
from tests.conftest import data_path
from tests.inference import BlobModel, blob_image
from tests.inference.test_sources import make_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_GOOD = 20
KILL_SHAPE = (90, 100)  # the one input of this size ends the actor that first meets it


class CountingPredictor(Predictor):
    """The nuclei model; one line per predicted image appended to ``counter`` (any process);
    with ``marker`` given, the process exits the first time it meets a KILL_SHAPE image."""

    def __init__(self, counter: Path, marker: Path | None = None) -> None:
        super().__init__("nuclei", device="cpu", batch_size=2)
        self.counter, self.marker = counter, marker

    def predict_arrays(self, images: Any, apply_cutoff: bool = True) -> Any:
        if self.marker is not None and any(im.shape[:2] == KILL_SHAPE for im in images):
            if not self.marker.exists():
                self.marker.touch()
                os._exit(1)  # the actor dies mid-job
        with open(self.counter, "a") as f:
            f.write("x\n" * len(images))
        return super().predict_arrays(images, apply_cutoff)


def counted(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 small crops of DSB images (one of KILL_SHAPE), a truncated PNG and a text '.png'."""
    dsb = data_path("dsb2018_stage1_subset") / "stage1_train"
    files = sorted(dsb.glob("*/images/*.png"))
    src = tmp_path_factory.mktemp("ray_in")
    k = 0
    for f in files:
        with Image.open(f) as im:
            if im.size != (256, 256):
                continue
            h, w = KILL_SHAPE if k == 7 else (96, 96)
            im.convert("RGB").crop((40, 40, 40 + w, 40 + h)).save(src / f"img{k:02d}.png")
        k += 1
        if k == N_GOOD:
            break
    assert k == N_GOOD, f"fewer than {N_GOOD} 256x256 images in {dsb}"
    (src / "trunc.png").write_bytes((src / "img00.png").read_bytes()[:300])
    (src / "text.png").write_text("not an image\n")
    return src


@pytest.fixture(scope="module")
def local_out(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    report = run_batch(Predictor("nuclei", device="cpu", batch_size=2), inputs, out,
                       progress=False)  # fmt: skip
    assert report.processed == N_GOOD and len(report.failed) == 2
    return out


@pytest.fixture(scope="module")
def ray_run(
    ray_cluster: Any, inputs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path, Any]]:
    """``(out, counter, report)`` of a 2-actor run with the counting predictor."""
    tmp = tmp_path_factory.mktemp("ray")
    out, counter = tmp / "out", tmp / "count.txt"
    report = predict_ray(partial(CountingPredictor, counter), inputs, out, actors=2,
                         batch_size=2, progress=False)  # fmt: skip
    yield out, counter, report


def assert_same_outputs(a: Path, b: Path, n: int = N_GOOD) -> None:
    """Two output folders hold the same predictions (RLE exact, scores/boxes to 1e-5) for
    ``n`` good images."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb):
        assert (x["image_id"], x["category_id"], x["segmentation"]) == (
            y["image_id"], y["category_id"], y["segmentation"])  # fmt: skip
        assert x["score"] == pytest.approx(y["score"], abs=1e-5)
        assert x["bbox"] == pytest.approx(y["bbox"], abs=1e-3)
    assert json.loads((a / "images.json").read_text()) == json.loads(
        (b / "images.json").read_text()
    )
    rows = [list(csv.DictReader(open(d / "instances.csv", newline=""))) for d in (a, b)]
    assert len(rows[0]) == len(rows[1]) > 0
    for x, y in zip(*rows):
        assert {k: v for k, v in x.items() if k != "score"} == {
            k: v for k, v in y.items() if k != "score"
        }
        assert float(x["score"]) == pytest.approx(float(y["score"]), abs=1e-5)
    assert (a / "failed.txt").read_text() == (b / "failed.txt").read_text()
    labels = sorted(p.name for p in (a / "labels").iterdir())
    assert labels == sorted(p.name for p in (b / "labels").iterdir()) and len(labels) == n
    for name in labels:
        la, lb = (np.asarray(Image.open(d / "labels" / name)) for d in (a, b))
        assert np.array_equal(la, lb), name
    assert len(list((b / "overlays").glob("*.jpg"))) == n


def test_ray_matches_run_batch(ray_run: tuple[Path, Path, Any], local_out: Path) -> None:
    out, counter, report = ray_run
    assert report.processed == N_GOOD and report.exit_code == 1 and not report.interrupted
    assert sorted(Path(f).name for f, _ in report.failed) == ["text.png", "trunc.png"]
    assert counted(counter) == N_GOOD  # each image predicted once
    assert_same_outputs(local_out, out)
    assert not list(out.rglob(".*.tmp*"))  # no temp file left behind


def test_ray_rerun_does_no_work(ray_run: tuple[Path, Path, Any], inputs: Path) -> None:
    out, counter, _ = ray_run
    before = {n: (out / n).read_bytes() for n in ("results.json", "images.json", "instances.csv")}
    report = predict_ray(partial(CountingPredictor, counter), inputs, out, actors=2,
                         progress=False)  # fmt: skip
    assert counted(counter) == N_GOOD  # nothing predicted again
    assert report.resumed == report.processed == N_GOOD and len(report.failed) == 2
    assert {n: (out / n).read_bytes() for n in before} == before


@pytest.mark.slow
def test_killed_actor_loses_nothing(
    ray_cluster: Any, inputs: Path, local_out: Path, tmp_path: Path
) -> None:
    counter, marker = tmp_path / "count.txt", tmp_path / "killed"
    factory = partial(CountingPredictor, counter, marker)
    report = predict_ray(factory, inputs, tmp_path / "out", actors=2, batch_size=2,
                         progress=False)  # fmt: skip
    assert marker.exists()  # an actor did die
    assert report.processed == N_GOOD and not report.interrupted
    ids = [im["id"] for im in json.loads((tmp_path / "out/images.json").read_text())["images"]]
    assert len(ids) == len(set(ids)) == N_GOOD  # every image exactly once
    assert_same_outputs(local_out, tmp_path / "out")


def test_ray_missing_gives_one_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(blob_image(32, 32, [(10, 10, 5)])).save(tmp_path / "in" / "a.png")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if not installed
    code = main(["predict", str(tmp_path / "in"), "--model", "nuclei", "--out",
                 str(tmp_path / "out"), "--engine", "ray"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'instseg[ray]'" in err[0]
    assert not (tmp_path / "out").exists()


class Interrupting(Predictor):
    """BlobModel predictor counting images; raises KeyboardInterrupt once ``stop_after`` are done."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(BlobModel(), batch_size=1)
        self.stop_after, self.seen = stop_after, 0

    def predict_arrays(self, images: Any, apply_cutoff: bool = True) -> Any:
        if self.stop_after is not None and self.seen >= self.stop_after:
            raise KeyboardInterrupt
        self.seen += len(images)
        return super().predict_arrays(images, apply_cutoff)


def blob_folder(root: Path, n: int = 6) -> Path:
    src = make_folder(root)  # a.png, b.jpg and three bad files
    for i in range(n):
        Image.fromarray(blob_image(40, 48, [(12, 12, 5), (25, 30, 6)], seed=i)).save(
            src / f"c{i}.png"
        )
    return src


def test_run_batch_resume_finishes_an_interrupted_run(tmp_path: Path) -> None:
    src = blob_folder(tmp_path / "in")
    full = tmp_path / "full"
    run_batch(Interrupting(), src, full, progress=False, write_semantic=True)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(Interrupting(stop_after=3), src, out, progress=False, write_semantic=True)
    assert len(json.loads((out / "images.json").read_text())["images"]) == 3  # merged so far
    with pytest.raises(DataError, match="--resume"):
        run_batch(Interrupting(), src, out, progress=False)
    again = Interrupting()
    report = run_batch(again, src, out, progress=False, write_semantic=True, resume=True)
    assert again.seen == 8 - 3 and report.resumed == 3 and report.processed == 8
    for name in ("results.json", "images.json", "instances.csv", "failed.txt"):
        assert (out / name).read_text() == (full / name).read_text(), name
    for sub in ("labels", "semantic", "overlays"):
        assert sorted(p.name for p in (out / sub).iterdir()) == sorted(
            p.name for p in (full / sub).iterdir())  # fmt: skip
    last = Interrupting()
    assert run_batch(last, src, out, progress=False, resume=True).resumed == 8 and last.seen == 0


def test_journal_skips_a_torn_line_and_resume_checks_the_inputs(tmp_path: Path) -> None:
    src = blob_folder(tmp_path / "in", n=2)
    out = tmp_path / "out"
    run_batch(Interrupting(), src, out, progress=False)
    shard = next((out / SHARDS_DIR).glob("*.jsonl"))
    with open(shard, "a") as f:
        f.write('{"id": 99, "file": "x", "na')  # a write cut short by a crash
    records = read_records(out)
    assert sorted(records) == list(range(1, 8)) and records[3]["error"] is not None
    (src / "a.png").rename(src / "a0.png")  # ids now name other files
    with pytest.raises(DataError, match="same inputs"):
        run_batch(Interrupting(), src, out, progress=False, resume=True)
    run_batch(Interrupting(), src, out, progress=False, overwrite=True)
    assert read_records(out)[1]["file"] == str(src / "a0.png")


def test_manifest_names_ids_and_lists(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "in")
    shutil.copy(src / "a.png", src / "a.jpg")
    (src / "sub").mkdir()
    shutil.copy(src / "a.png", src / "sub" / "a.png")
    manifest = build_manifest(src, recursive=True)
    items = list(iter_sources(src, recursive=True))
    assert [(e.path, e.name) for e in manifest] == [(str(it.path), it.name) for it in items]
    assert [e.id for e in manifest] == list(range(1, len(items) + 1))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{src / 'a.png'}\n\n# comment\ns3://bucket/x/a.png\nin/b.jpg\n")
    assert [(e.id, e.path, e.name) for e in build_manifest(listing)] == [
        (1, str(src / "a.png"), "a"), (2, "s3://bucket/x/a.png", "a_png"),
        (3, str(src / "b.jpg"), "b")]  # fmt: skip
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps({"images": [{"id": 7, "file_name": "in/b.jpg"},
                                           {"id": 3, "file_name": "in/a.png"},
                                           {"id": 4, "file_name": "../up/c.png"}]}))  # fmt: skip
    assert [(e.id, e.path, e.name) for e in build_manifest(coco)] == [
        (7, str(tmp_path / "in/b.jpg"), "in/b"), (3, str(tmp_path / "in/a.png"), "in/a"),
        (4, str(tmp_path / "../up/c.png"), "c")]  # fmt: skip
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}] * 2}))
    with pytest.raises(DataError, match="ids repeat"):
        build_manifest(coco)


def test_cli_engine_ray_and_local_resume(
    ray_cluster: Any, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("img00.png", "img01.png"):
        shutil.copy(inputs / name, src / name)
    base = ["predict", str(src), "--model", "nuclei", "--device", "cpu", "--out"]
    assert main([*base, str(tmp_path / "ray"), "--engine", "ray", "--actors", "1"]) == 0
    assert main([*base, str(tmp_path / "local")]) == 0
    assert main([*base, str(tmp_path / "local")]) == 1  # earlier outputs: refused
    assert "--resume" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "local"), "--resume"]) == 0
    assert "2 images from an earlier run" in capsys.readouterr().err
    for name in ("results.json", "images.json", "instances.csv"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    assert len(json.loads((tmp_path / "local" / "results.json").read_text())) > 0


def test_read_entry_paths_and_uris(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "in")
    expect = next(iter_sources(src / "a.png")).image
    for path in (str(src / "a.png"), (src / "a.png").as_uri()):
        item = read_entry(Entry(5, path, "x"))
        assert item.ok and item.name == "x" and np.array_equal(item.image, expect)
    bad = read_entry(Entry(1, str(src / "broken.png"), "broken"))
    assert bad.error == next(iter_sources(src / "broken.png")).error  # worded as run_batch does
    missing = read_entry(Entry(2, (src / "gone.png").as_uri(), "gone"))
    assert not missing.ok and "cannot read" in (missing.error or "")
