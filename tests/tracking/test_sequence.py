"""``instseg track``: CTC result folders and tracks.csv from label images or a model; bad
frames are reported and skipped, the others all written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.cli.main import main
from instseg.data.ctc import read_tracks
from instseg.data.io import read_label_image
from instseg.data.synthetic_nuclei import make_nuclei_sample
from instseg.structures import Instances
from tests.conftest import data_path


def sim_masks(tmp_path: Path, n: int) -> Path:
    """The first ``n`` SEG label images of Fluo-N2DH-SIM+ in a folder of their own."""
    src = data_path("ctc_tracking") / "Fluo-N2DH-SIM+" / "01_GT" / "SEG"
    folder = tmp_path / "masks"
    folder.mkdir()
    for t in range(n):
        shutil.copy(src / f"man_seg{t:03d}.tif", folder / f"man_seg{t:03d}.tif")
    (folder / "notes.txt").write_text("not a frame")  # other files are not frames
    return folder


def test_track_masks_writes_a_consistent_ctc_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["track", "--masks", str(sim_masks(tmp_path, 8)), "--out", str(out)]) == 0
    tracks = read_tracks(out / "ctc" / "res_track.txt")
    for t in range(8):
        label = read_label_image(out / "ctc" / f"mask{t:03d}.tif")
        for tid in set(np.unique(label).tolist()) - {0}:
            assert tracks[tid].first <= t <= tracks[tid].last  # every labelled track is listed
    with (out / "tracks.csv").open() as f:
        rows = list(csv.DictReader(f))
    again = ["track", "--masks", str(tmp_path / "masks"), "--out", str(out), "--outputs", "ctc,csv"]
    assert main(again) == 1  # an earlier result is never mixed with a new one
    assert main([*again, "--overwrite"]) == 0
    assert not (out / "overlay.gif").exists() and not (out / "mots.txt").exists()  # all replaced
    assert {int(r["track_id"]) for r in rows} == set(tracks)
    assert all(int(r["frames_seen"]) >= 1 and float(r["mean_area"]) > 0 for r in rows)


def test_a_bad_frame_is_reported_and_the_others_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = sim_masks(tmp_path, 4)
    (masks / "man_seg002.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    assert main(["track", "--masks", str(masks), "--out", str(out)]) == 1
    assert "skipped man_seg002.tif" in capsys.readouterr().err
    written = sorted(p.name for p in (out / "ctc").glob("mask*.tif"))
    assert written == [f"mask{t:03d}.tif" for t in range(4)]
    assert read_label_image(out / "ctc" / "mask002.tif").max() == 0  # empty, right size
    assert read_label_image(out / "ctc" / "mask003.tif").shape == (690, 628)


def test_track_frames_with_the_shipped_model(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    image = make_nuclei_sample(seed=0, size=(160, 160)).image
    for t in range(3):  # the same nuclei drifting 2 px a frame
        Image.fromarray(np.roll(image, 2 * t, axis=1)).save(frames / f"t{t:03d}.png")
    out = tmp_path / "out"
    args = ["track", str(frames), "--model", "nuclei", "--out", str(out), "--score-threshold", "0.5"]
    assert main(args) == 0
    tracks = read_tracks(out / "ctc" / "res_track.txt")
    assert len(tracks) > 5 and sum(t.first == 0 and t.last == 2 for t in tracks.values()) > 5


def test_usage_errors(tmp_path: Path) -> None:
    assert main(["track", "--out", str(tmp_path)]) == 2
    assert main(["track", str(tmp_path), "--out", str(tmp_path)]) == 2  # SOURCE without --model


def test_ctc_segments_split_gaps_as_the_challenge_wants() -> None:
    """Track 5 missing at frame 2 continues under a new label whose parent is 5; its daughter
    7 (born at frame 4) points to the last segment; every label then spans its frames."""
    from instseg.data.ctc import Track
    from instseg.tracking.sequence import ctc_segments

    labels = [np.zeros((4, 4), np.uint16) for _ in range(5)]
    for t in (0, 1, 3):
        labels[t][0, 0] = 5
    labels[4][1, 1] = 7
    rows = ctc_segments(labels, [Track(5, 0, 3, 0), Track(7, 4, 4, 5)])
    assert rows == [Track(5, 0, 1, 0), Track(8, 3, 3, 5), Track(7, 4, 4, 8)]
    assert labels[3][0, 0] == 8 and labels[0][0, 0] == 5
    for row in rows:  # the challenge's validity rule
        assert all(row.id in labels[t] for t in range(row.first, row.last + 1))


# -- sources: TIFF stacks, bad and odd frames ---------------------------------------------------
def clip_labels(n: int = 6) -> np.ndarray:
    """``(n, 96, 96)`` uint16 label images of a small synthetic clip (values are not ids)."""
    from instseg.data.synthetic import SceneConfig
    from instseg.data.synthetic_clips import ClipConfig, make_clip

    cfg = ClipConfig(SceneConfig(height=96, width=96, num_objects=(3, 4), scale=(16, 30)), num_frames=n, enter_rate=0)
    return np.stack([s.instances.to_label_image() for s in make_clip(cfg, 2).frames]).astype(np.uint16)


def threshold(image: np.ndarray) -> Instances:
    """A detector of bright objects: one instance per connected component."""
    from scipy import ndimage

    comps, n = ndimage.label(image[..., 0] > 120)
    return Instances.from_masks(comps[None] == np.arange(1, n + 1)[:, None, None], scores=[1.0] * n)


def bright(labels: np.ndarray) -> np.ndarray:
    return np.where(labels > 0, 200, 10).astype(np.uint8)


def test_a_label_stack_tracks_like_the_label_folder(tmp_path: Path) -> None:
    import tifffile

    labels = clip_labels()
    folder = tmp_path / "labels"
    folder.mkdir()
    for t, label in enumerate(labels):
        tifffile.imwrite(folder / f"l{t:02d}.tif", label)
    tifffile.imwrite(tmp_path / "stack.tif", labels, compression="zlib")
    for name, masks in (("a", folder), ("b", tmp_path / "stack.tif")):
        assert main(["track", "--masks", str(masks), "--out", str(tmp_path / name), "--outputs", "ctc,coco"]) == 0
    assert (tmp_path / "a/ctc/res_track.txt").read_text() == (tmp_path / "b/ctc/res_track.txt").read_text()
    for t in range(len(labels)):
        a, b = (read_label_image(tmp_path / n / "ctc" / f"mask{t:03d}.tif") for n in "ab")
        np.testing.assert_array_equal(a, b)
    images = json.loads((tmp_path / "b/coco/images.json").read_text())["images"]
    assert [(i["name"], i["frame"]) for i in images] == [(f"stack_{t:06d}", t) for t in range(len(labels))]


@pytest.mark.parametrize("rgb", [False, True])
def test_a_frame_stack_source(tmp_path: Path, rgb: bool) -> None:
    """(T, H, W) and (T, H, W, 3) stacks stream page by page into the predictor."""
    import tifffile

    from instseg.tracking.sequence import count_frames, predicted_frames, track_sequence

    frames = bright(clip_labels())
    stack = tmp_path / "frames.tif"
    tifffile.imwrite(stack, np.repeat(frames[..., None], 3, axis=3) if rgb else frames.astype(np.uint16) * 100)
    assert count_frames(stack) == 6
    report = track_sequence(predicted_frames(stack, threshold), tmp_path / "out", outputs=("ctc", "overlay"))
    assert report.exit_code == 0 and report.frames == 6 and report.tracks >= 3
    assert Image.open(tmp_path / "out" / "overlay.gif").n_frames == 6


def test_a_bad_page_in_a_stack_is_reported_and_the_others_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tifffile

    labels = clip_labels()
    stack = tmp_path / "labels.tif"
    tifffile.imwrite(stack, labels, compression="zlib")
    with tifffile.TiffFile(stack) as tf:
        page = tf.series[0].pages[3]
        offset, size = page.dataoffsets[0], page.databytecounts[0]  # type: ignore[union-attr]
    with stack.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    out = tmp_path / "out"
    assert main(["track", "--masks", str(stack), "--out", str(out)]) == 1
    assert "skipped labels_000003: cannot read this page" in capsys.readouterr().err
    assert read_label_image(out / "ctc" / "mask003.tif").max() == 0
    assert read_label_image(out / "ctc" / "mask004.tif").max() > 0
    assert Image.open(out / "overlay.gif").n_frames == 6
    assert len(json.loads((out / "coco" / "images.json").read_text())["images"]) == 6


def test_bad_first_and_odd_sized_frames(tmp_path: Path) -> None:
    """An unreadable first frame and a frame of another size are reported and written empty;
    frame numbers stay those of the files (tracks start at frame 1)."""
    from instseg.tracking.sequence import predicted_frames, track_sequence

    frames = tmp_path / "frames"
    frames.mkdir()
    for t, image in enumerate(bright(clip_labels())):
        Image.fromarray(image).save(frames / f"t{t:03d}.png")
    (frames / "t000.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(frames / "t004.png")
    (frames / "readme.txt").write_text("not a frame")
    report = track_sequence(predicted_frames(frames, threshold), tmp_path / "out", outputs=("ctc", "csv"))
    assert [name for name, _ in report.failed] == ["t000", "t004"] and report.frames == 6
    assert "differs from the sequence's (96, 96)" in report.failed[1][1]
    assert read_label_image(tmp_path / "out/ctc/mask000.tif").shape == (96, 96)
    with (tmp_path / "out/tracks.csv").open() as f:
        assert min(int(r["first_frame"]) for r in csv.DictReader(f)) == 1


def test_masks_with_frames_under_the_overlay(tmp_path: Path) -> None:
    import tifffile

    labels = clip_labels(3)  # as tifffile.imwrite writes a (3, H, W) array by default today
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "frames.tif", np.full((3, 96, 96), 255, np.uint8), photometric="minisblack")
    out = tmp_path / "out"
    args = ["track", str(tmp_path / "frames.tif"), "--masks", str(tmp_path / "labels.tif"), "--out", str(out)]
    assert main([*args, "--outputs", "overlay"]) == 0
    gif = np.asarray(Image.open(out / "overlay.gif").convert("RGB"))
    assert gif[labels[0] == 0].mean() > 200  # the white frames, not black
    assert main([*args, "--outputs", "ctc,gif"]) == 2
    tifffile.imwrite(tmp_path / "tc.tif", np.zeros((3, 2, 8, 8), np.uint8), imagej=True, metadata={"axes": "TCYX"})
    assert main(["track", "--masks", str(tmp_path / "tc.tif"), "--out", str(out), "--overwrite"]) == 1


def test_a_thousand_frames_get_four_digit_names(tmp_path: Path) -> None:
    from instseg.tracking.sequence import track_sequence

    mask = np.zeros((1, 8, 8), bool)
    mask[0, 2:5, 2:5] = True
    report = track_sequence(((f"f{t}", Instances.from_masks(mask)) for t in range(1000)), tmp_path, outputs=("ctc",))
    assert report.frames == 1000 and (tmp_path / "ctc" / "mask0999.tif").is_file()
    assert not (tmp_path / "ctc" / "mask000.tif").exists()
    assert (tmp_path / "ctc" / "res_track.txt").read_text() == "1 0 999 0\n"


def test_no_divisions_keeps_the_mother_going(tmp_path: Path) -> None:
    """A disc that splits in two: a division by default, one continued track and one new
    track with --no-divisions."""
    import tifffile

    yy, xx = np.mgrid[:64, :64]
    disc = lambda cy, cx, r: (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r  # noqa: E731
    frames = [disc(32, 32, 12).astype(np.uint16)] * 2
    split = np.zeros((64, 64), np.uint16)
    split[disc(32, 24, 7)], split[disc(32, 41, 7)] = 1, 2
    stack = tmp_path / "labels.tif"
    tifffile.imwrite(stack, np.stack([*frames, split, split]), photometric="minisblack")
    tables = {}
    for flag in ([], ["--no-divisions"]):
        out = tmp_path / ("plain" if flag else "div")
        assert main(["track", "--masks", str(stack), "--out", str(out), "--outputs", "ctc", *flag]) == 0
        tables[bool(flag)] = sorted((out / "ctc" / "res_track.txt").read_text().split("\n"))
    assert [r for r in tables[False] if r] == ["1 0 1 0", "2 2 3 1", "3 2 3 1"]
    assert sorted(r.split()[3] for r in tables[True] if r) == ["0", "0"]
