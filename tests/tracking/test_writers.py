"""Each output of ``instseg track`` read back: CTC labels span their frames, MOTS RLEs decode
to the tracked masks (and TrackEval reads the file), COCO track ids are the CTC labels, the
GIF has one frame per frame, a video also gets an MP4; outputs are selectable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from instseg.data.ctc import read_tracks
from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_clips import ClipConfig, make_clip
from instseg.masks import decode
from instseg.structures import Instances
from instseg.tracking.sequence import Frame, predicted_frames, source_fps, track_sequence
from instseg.tracking.writers import parse_outputs

SCENE = SceneConfig(height=112, width=128, num_objects=(2, 3), scale=(18, 40))
CLIP = ClipConfig(scene=SCENE, num_frames=12, occlusions=1, divisions=1, enter_rate=0.0)
CATS = {"cat_ids": [1, 2, 3, 4, 5], "class_names": list(SCENE.classes)}


def clip_frames(seed: int = 0) -> list[Frame]:
    """An oracle detector's frames of a synthetic clip with a disappearance and a division."""
    out = []
    for t, scene in enumerate(make_clip(CLIP, seed).frames):
        gt = scene.instances
        inst = Instances.from_masks(gt.masks, labels=gt.labels, scores=[0.9] * len(gt))  # type: ignore[arg-type]
        out.append(Frame(f"f{t:03d}", inst, scene.image, f"clip/f{t:03d}.png"))
    return out


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tracked")
    report = track_sequence(clip_frames(), out, **CATS)  # type: ignore[arg-type]
    assert report.exit_code == 0 and report.frames == 12
    assert report.written == ["ctc/", "mots.txt", "coco/", "tracks.csv", "overlay.gif"]
    return out


def ctc_labels(out: Path) -> list[np.ndarray]:
    return [tifffile.imread(out / "ctc" / f"mask{t:03d}.tif") for t in range(12)]


def test_ctc_labels_span_their_frames_and_gaps_are_new_labels(result: Path) -> None:
    rows = read_tracks(result / "ctc" / "res_track.txt")
    labels = ctc_labels(result)
    for row in rows.values():  # the challenge's validity rule
        assert all((labels[t] == row.id).any() for t in range(row.first, row.last + 1))
    assert {v for lab in labels for v in np.unique(lab).tolist()} - {0} == set(rows)
    gaps = [r for r in rows.values() if r.parent and rows[r.parent].last < r.first - 1]
    births = [r for r in rows.values() if r.parent and rows[r.parent].last == r.first - 1]
    assert gaps and len(births) >= 2  # the disappearance and the division


def test_mots_rles_decode_to_the_tracked_masks(result: Path) -> None:
    labels = ctc_labels(result)
    lines = [line.split() for line in (result / "mots.txt").read_text().splitlines()]
    coco = json.loads((result / "coco" / "results.json").read_text())
    by_frame: dict[int, list[list[str]]] = {}
    for row in lines:
        by_frame.setdefault(int(row[0]), []).append(row)
    assert set(by_frame) <= set(range(1, 13))  # frames count from 1
    ids = set()
    for t in range(12):
        rows = by_frame.get(t + 1, [])
        masks = decode([{"size": [int(r[3]), int(r[4])], "counts": r[5]} for r in rows], 112, 128)
        np.testing.assert_array_equal(masks.sum(0), labels[t] > 0)  # disjoint, all of them
        for r, m in zip(rows, masks):
            obj, cls = int(r[1]), int(r[2])
            assert obj // 1000 == cls and 1 <= cls <= 5
            assert len(np.unique(labels[t][m])) == 1  # one CTC label's pixels
            ids.add(obj % 1000)
    dets = {(d["image_id"], d["track_id"]) for d in coco}
    assert len(dets) == len(lines)
    assert len(ids) < len({d["track_id"] for d in coco})  # the identity survives the gap


def test_coco_track_ids_are_the_ctc_labels(result: Path) -> None:
    from pycocotools.coco import COCO

    labels = ctc_labels(result)
    dets = json.loads((result / "coco" / "results.json").read_text())
    for d in dets:
        mask = decode(d["segmentation"])[0]
        np.testing.assert_array_equal(mask, labels[d["image_id"]] == d["track_id"])
        ys, xs = np.nonzero(mask)
        assert d["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert d["score"] == 0.9 and 1 <= d["category_id"] <= 5
    images = json.loads((result / "coco" / "images.json").read_text())
    assert [(i["id"], i["file_name"]) for i in images["images"]] == [(t, f"clip/f{t:03d}.png") for t in range(12)]
    coco = COCO(str(result / "coco" / "images.json"))
    assert len(coco.loadRes(str(result / "coco" / "results.json")).anns) == len(dets)


def test_tracks_csv_and_gif(result: Path) -> None:
    with (result / "tracks.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and all(0 <= int(r["first_frame"]) <= int(r["last_frame"]) < 12 for r in rows)
    assert all(float(r["mean_area"]) > 0 for r in rows if int(r["frames_seen"]))
    gif = Image.open(result / "overlay.gif")
    assert (gif.n_frames, gif.size) == (12, (128, 112))
    gif.seek(5)
    assert len(np.unique(np.asarray(gif.convert("RGB")).reshape(-1, 3), axis=0)) > 10


def test_trackeval_reads_the_mots_file(result: Path, tmp_path: Path) -> None:
    """TrackEval's own MOTS Challenge reader (sequence ``seq``, our file as GT and tracker)."""
    datasets = pytest.importorskip("trackeval.datasets")
    seq = tmp_path / "gt" / "MOTS-train" / "seq"
    (seq / "gt").mkdir(parents=True)
    (seq / "gt" / "gt.txt").write_bytes((result / "mots.txt").read_bytes())
    (seq / "seqinfo.ini").write_text("[Sequence]\nname=seq\nseqLength=12\nimWidth=128\nimHeight=112\n")
    (tmp_path / "gt" / "seqmaps").mkdir()
    (tmp_path / "gt" / "seqmaps" / "MOTS-train.txt").write_text("name\nseq\n")
    ours = tmp_path / "trackers" / "MOTS-train" / "ours" / "data"
    ours.mkdir(parents=True)
    (ours / "seq.txt").write_bytes((result / "mots.txt").read_bytes())
    config = {"GT_FOLDER": str(tmp_path / "gt"), "TRACKERS_FOLDER": str(tmp_path / "trackers"), "PRINT_CONFIG": False}
    raw = datasets.MOTSChallenge(config).get_raw_seq_data("ours", "seq")
    labels = ctc_labels(result)
    for t in range(12):
        masks = decode(raw["tracker_dets"][t], 112, 128)
        np.testing.assert_array_equal(masks.sum(0), labels[t] > 0)
    assert np.allclose(np.diag(raw["similarity_scores"][6]), 1.0)


def test_outputs_are_selectable(tmp_path: Path) -> None:
    assert parse_outputs("csv, MOTS") == ("mots", "csv") and len(parse_outputs("all")) == 5
    with pytest.raises(ValueError, match="unknown outputs"):
        parse_outputs("ctc,gif")
    report = track_sequence(clip_frames()[:4], tmp_path, outputs=("mots", "csv"), **CATS)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mots.txt", "tracks.csv"]
    assert report.written == ["mots.txt", "tracks.csv"]


def test_video_gets_an_mp4_and_large_frames_a_small_gif(tmp_path: Path) -> None:
    """A 600x160 video of a disc moving right: overlay.mp4 at full size, the GIF 512 wide."""
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 7, (600, 160))
    yy, xx = np.mgrid[:160, :600]
    for t in range(5):
        disc = (yy - 80) ** 2 + (xx - 100 - 10 * t) ** 2 <= 30**2
        writer.write(np.where(disc[..., None], 220, 20).astype(np.uint8).repeat(3, 2))
    writer.release()

    def threshold(image: np.ndarray) -> Instances:
        return Instances.from_masks((image[..., 0] > 120)[None], scores=[1.0])

    out = tmp_path / "out"
    report = track_sequence(predicted_frames(video, threshold), out, outputs=("overlay", "csv"), fps=source_fps(video))
    assert report.exit_code == 0 and report.written == ["tracks.csv", "overlay.gif", "overlay.mp4"]
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FPS)) == (5, 600, 7)
    cap.release()
    gif = Image.open(out / "overlay.gif")
    assert (gif.n_frames, gif.size) == (5, (512, 137))
    assert "1,0,4,0" in (out / "tracks.csv").read_text()  # one track through all frames
