"""Writers and run_batch: outputs readable and consistent, bad inputs reported, no overwrite."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from instseg.errors import DataError
from instseg.inference import Predictor, run_batch
from instseg.inference.writers import semantic_image, to_sparse, write_label_image
from instseg.structures import Instances
from tests.inference import BlobModel, blob_image
from tests.inference.test_sources import make_folder, write_video

BLOBS_A = [(10, 10, 5), (20, 28, 4)]


def run(src: Path | str, out: Path, **kw: object) -> tuple[Predictor, object]:
    pred = Predictor(BlobModel(), batch_size=2, class_names=["green", "red"], cat_ids=[5, 9])
    return pred, run_batch(pred, src, out, progress=False, **kw)  # type: ignore[arg-type]


def test_folder_run_outputs(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "in")
    Image.fromarray(blob_image(32, 40, BLOBS_A)).save(src / "a.png")
    pred, report = run(src, tmp_path / "out", write_semantic=True)
    out = tmp_path / "out"
    assert report.processed == 2 and report.exit_code == 1  # type: ignore[attr-defined]
    failed = dict(report.failed)  # type: ignore[attr-defined]
    assert set(failed) == {str(src / n) for n in ("broken.png", "empty.png", "notes.txt")}
    assert "empty (0 bytes)" in failed[str(src / "empty.png")]
    assert len((out / "failed.txt").read_text().splitlines()) == 3

    expect = {"a": pred(src / "a.png"), "b": pred(src / "b.jpg")}
    images = json.loads((out / "images.json").read_text())
    ids = {im["name"]: im["id"] for im in images["images"]}
    assert set(ids) == {"a", "b"} and images["categories"] == [
        {"id": 5, "name": "green"},
        {"id": 9, "name": "red"},
    ]
    results = json.loads((out / "results.json").read_text())
    assert len(results) == report.num_instances == sum(len(v) for v in expect.values())  # type: ignore[attr-defined]
    for name, inst in expect.items():
        assert inst.masks is not None
        rows = [r for r in results if r["image_id"] == ids[name]]
        got = mask_utils.decode(
            [
                {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
                for r in rows
            ]
        )
        assert np.array_equal(got.transpose(2, 0, 1).astype(bool), inst.masks.numpy())
        assert [r["category_id"] for r in rows] == [[5, 9][k] for k in inst.labels.tolist()]
        x1, y1, x2, y2 = inst.boxes[0].tolist()
        assert rows[0]["bbox"] == [x1, y1, x2 - x1, y2 - y1]

        lab = np.asarray(Image.open(out / "labels" / f"{name}.png"))
        assert lab.dtype == np.uint16 and lab.shape == inst.image_size
        for i, m in enumerate(inst.masks.numpy()):
            assert (lab[m] == i + 1).all()
        assert set(np.unique(lab)) == set(range(len(inst) + 1))
        sem = np.asarray(Image.open(out / "semantic" / f"{name}.png"))
        assert sem.dtype == np.uint8
        for m, label in zip(inst.masks.numpy(), inst.labels.tolist()):
            assert (sem[m] == label + 1).all()
        ov = np.asarray(Image.open(out / "overlays" / f"{name}.jpg"))
        assert ov.shape == (*inst.image_size, 3)

    with open(out / "instances.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    a_rows = [r for r in rows if r["image"] == "a"]
    inst = expect["a"]
    assert inst.masks is not None and inst.scores is not None and len(a_rows) == len(inst) == 2
    for r, m, s, label in zip(
        a_rows, inst.masks.numpy(), inst.scores.tolist(), inst.labels.tolist()
    ):
        ys, xs = np.nonzero(m)
        assert int(r["area"]) == m.sum() and r["class"] == ["green", "red"][label]
        assert abs(float(r["score"]) - s) < 1e-4
        assert (int(r["bbox_x"]), int(r["bbox_y"]), int(r["bbox_w"]), int(r["bbox_h"])) == (
            xs.min(),
            ys.min(),
            xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1,
        )
        assert (
            abs(float(r["centroid_x"]) - (xs.mean() + 0.5)) < 0.01
            and abs(float(r["centroid_y"]) - (ys.mean() + 0.5)) < 0.01
        )
    assert int(a_rows[0]["id"]) == 1 and int(a_rows[1]["id"]) == 2

    # images.json + results.json load as a COCO pair
    gt = COCO(str(out / "images.json"))
    dt = gt.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == len(results)


def test_no_overwrite_without_flag(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(blob_image(32, 40, BLOBS_A)).save(src / "a.png")
    _, report = run(src, tmp_path / "out")
    assert report.exit_code == 0 and report.failed == []  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="results.json.*already exists"):
        run(src, tmp_path / "out")
    (tmp_path / "out2" / "labels").mkdir(parents=True)
    (tmp_path / "out2" / "labels" / "x.png").write_bytes(b"1")
    with pytest.raises(DataError, match="labels.*overwrite"):
        run(src, tmp_path / "out2")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        run(src, tmp_path / "file")
    with pytest.raises(DataError, match="no such file"):
        run(tmp_path / "missing", tmp_path / "out3")
    assert not (tmp_path / "out3").exists()  # nothing created for a SOURCE naming nothing
    (tmp_path / "out" / "failed.txt").write_text("stale: from an earlier run\n")
    _, report = run(src, tmp_path / "out", overwrite=True)
    assert report.processed == 1  # type: ignore[attr-defined]
    assert not (tmp_path / "out" / "failed.txt").exists()


def test_overlay_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from instseg.inference import writers

    img = blob_image(32, 40, BLOBS_A)
    sparse = to_sparse(Predictor(BlobModel())(img))
    monkeypatch.setattr(writers, "OVERLAY_MASK_BYTES", 1)  # one instance per chunk
    p = writers.write_overlay(tmp_path / "o" / "x.png", img, sparse, ["g", "r"])
    drawn = np.asarray(Image.open(p))
    inside = sparse.to_instances().masks
    assert inside is not None and drawn.shape == img.shape
    for m in inside.numpy():
        assert (drawn[m] != img[m]).any(axis=1).mean() > 0.9  # every instance is painted


def test_failing_image_does_not_stop_the_batch(tmp_path: Path) -> None:
    class Picky(BlobModel):
        def predict(self, images: list[torch.Tensor]) -> list[Instances]:
            if any(im.shape[-1] == 33 for im in images):
                raise RuntimeError("cannot handle width 33\nsecond line")
            return super().predict(images)

    src = tmp_path / "in"
    src.mkdir()
    for i, w in enumerate((40, 33, 41)):
        Image.fromarray(blob_image(32, w, BLOBS_A, seed=i)).save(src / f"{i}.png")
    report = run_batch(Predictor(Picky(), batch_size=3), src, tmp_path / "out", progress=False)
    assert report.processed == 2 and report.exit_code == 1
    assert report.failed == [
        (str(src / "1.png"), "RuntimeError: cannot handle width 33 second line")
    ]
    assert {
        im["name"] for im in json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    } == {"0", "2"}


def test_video_and_tiled_run(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", 3)
    _, report = run(tmp_path / "clip.avi", tmp_path / "out", write_overlays=False)
    assert report.processed == 3  # type: ignore[attr-defined]
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == [
        f"clip_{i:06d}.png" for i in range(3)
    ]
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert [im["frame"] for im in images] == [0, 1, 2]

    big = blob_image(150, 170, [(40, 64, 12), (100, 100, 20), (20, 150, 10)])
    Image.fromarray(big).save(tmp_path / "big.png")
    pred = Predictor(BlobModel())
    run_batch(
        pred,
        tmp_path / "big.png",
        tmp_path / "tiled",
        tile_size=64,
        tile_overlap=24,
        progress=False,
    )
    lab = np.asarray(Image.open(tmp_path / "tiled" / "labels" / "big.png"))
    assert np.array_equal(lab, to_sparse(pred(big)).to_label_image())


def test_label_image_order_and_tiff(tmp_path: Path) -> None:
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 4:10, 4:10] = True
    inst = Instances.from_masks(masks, labels=[0, 1], scores=[0.3, 0.9])
    sparse = to_sparse(inst)
    assert sparse.scores.tolist() == pytest.approx([0.9, 0.3])
    lab = sparse.to_label_image()
    assert lab[5, 5] == 1 and lab[3, 3] == 2  # the higher score (id 1) is on top
    assert semantic_image(sparse)[5, 5] == 2
    p = write_label_image(tmp_path / "x", lab)
    assert p.suffix == ".png" and np.array_equal(np.asarray(Image.open(p)), lab)
    many = np.arange(70000, dtype=np.uint32).reshape(280, 250)
    p = write_label_image(tmp_path / "many", many)
    assert p.suffix == ".tif" and np.array_equal(tifffile.imread(p), many)


def test_real_folder_with_non_images(tmp_path: Path) -> None:
    from tests.conftest import data_path

    src = data_path("stardist_nuclei_2d")  # img2d.tif, mask2d.tif, a licence .txt, SOURCE.md
    report = run_batch(
        Predictor(BlobModel(threshold=0.25)),
        src,
        tmp_path / "out",
        write_overlays=False,
        progress=False,
    )
    assert report.processed == 2 and report.exit_code == 1
    assert {Path(f).suffix for f, _ in report.failed} == {".txt", ".md"}
    lab = np.asarray(Image.open(tmp_path / "out" / "labels" / "img2d.png"))
    assert lab.shape == (512, 512) and lab.max() > 50
